"""The Zarr v3 backend: uncompressed chunks of many items.

Why many items per chunk: zarr 3.1 spends ~0.7 ms of CPU per chunk, so one item per chunk made random
batches slower than the per-item HDF5 reference (docs/cache.md). Training loads whole stores into memory,
which reads whole chunks in order; chunks of ~8 MiB make that stream at disk speed. Random reads of a few
items then read whole chunks, which is the price of this backend: prefer HDF5 or `load()` for them.
Compression is off: it slowed every measured read and saved little on audio features.

Every chunk is written, even one equal to the fill value (`write_empty_chunks`): zarr would otherwise
leave it out and read it back as fill values, so a deleted chunk could not be told from a zero one. The
reader therefore requires every chunk file of every array, at its full size.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec
from zarr.codecs.bytes import Endian
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding

from .backend import Backend, register
from .errors import StoreError
from .layout import SUFFIX_FORMAT
from .rawio import RawRows

NAME = "zarr"
CHUNK_BYTES = 8 << 20
_CONFIG = {"write_empty_chunks": True}


def rows_per_chunk(row_shape: tuple[int, ...], chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows (frames or images) per chunk so that a chunk holds about `chunk_bytes` of float16."""
    return max(1, chunk_bytes // (int(np.prod(row_shape)) * 2))


class ZarrWriter:
    """Writes the features of one store row block by row block, buffering so every write covers whole chunks."""

    def __init__(self, path: Path, shape: tuple[int, ...], columns: dict[str, np.ndarray], attrs: dict[str, Any]):
        self._group = zarr.open_group(str(path), mode="w", zarr_format=3)
        self._rows = rows_per_chunk(shape[1:], CHUNK_BYTES)
        self._arr = self._group.create_array("features", shape=shape, dtype="float16",
                                             chunks=(self._rows,) + tuple(shape[1:]), compressors=None, fill_value=0,
                                             config=_CONFIG)
        for name, values in columns.items():
            parent, _, leaf = name.rpartition("/")
            g = self._group.require_group(parent) if parent else self._group
            g.create_array(leaf, data=values, compressors=None, chunks=tuple(max(1, d) for d in values.shape),
                           config=_CONFIG)
        self._attrs = dict(attrs)
        self._group.attrs.update(self._attrs)
        self._buf: list[np.ndarray] = []
        self._buf_start = 0
        self._buf_rows = 0

    def write_features(self, start: int, block: np.ndarray) -> None:
        if start != self._buf_start + self._buf_rows:
            raise ValueError(f"zarr writer got rows at {start}, expected {self._buf_start + self._buf_rows}")
        self._buf.append(np.asarray(block, np.float16))
        self._buf_rows += len(block)
        if self._buf_rows >= self._rows:
            self._flush(whole_chunks_only=True)

    def _flush(self, whole_chunks_only: bool) -> None:
        if not self._buf_rows:
            return
        data = np.concatenate(self._buf) if len(self._buf) > 1 else self._buf[0]
        n = (len(data) // self._rows) * self._rows if whole_chunks_only else len(data)
        if n:
            self._arr[self._buf_start:self._buf_start + n] = data[:n]
        rest = data[n:]
        self._buf = [rest] if len(rest) else []
        self._buf_start += n
        self._buf_rows = len(rest)

    def finish(self) -> None:
        self._flush(whole_chunks_only=False)
        self._attrs["complete"] = True
        self._group.attrs.update(self._attrs)


def create(path: Path, shape: tuple[int, ...], columns: dict[str, np.ndarray], attrs: dict[str, Any]) -> ZarrWriter:
    return ZarrWriter(Path(path), shape, columns, attrs)


class ZarrReader:
    """One finished .zarr store opened for reading."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._group = zarr.open_group(str(self.path), mode="r")
            self._arr = self._group["features"]
        except Exception as e:  # zarr raises several types for a folder that is not a group
            raise StoreError(f"{self.path} is not a readable Zarr store ({e}); delete it and extract again") from None
        self.attrs: dict[str, Any] = dict(self._group.attrs)
        if "provenance" not in self.attrs or not isinstance(self._arr, zarr.Array):
            raise StoreError(f"{self.path} is a Zarr group but not a vgsme store (no provenance/features)")
        if self.attrs.get("format", NAME) != NAME:
            raise StoreError(f"{self.path}: a Zarr group whose format attribute says {self.attrs['format']!r}")
        self.attrs["complete"] = bool(self.attrs.get("complete", False))
        self.features_shape = tuple(int(s) for s in self._arr.shape)
        self.features_dtype = np.dtype(self._arr.dtype)
        self._raw = _raw_rows(self.path, self._arr)

    def has_column(self, name: str) -> bool:
        try:
            return isinstance(self._group[name], zarr.Array)
        except KeyError:
            return False

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self._group[name][...])

    def damage(self) -> list[str]:
        """Every chunk file of every array must exist, at its full size when the chunks are plain bytes."""
        out = []
        for name, arr in [("features", self._arr)] + list(_columns(self._group)):
            missing, short = _chunk_damage(self.path / name, arr)
            if missing:
                out.append(f"{name}: {len(missing)} chunk file(s) missing ({', '.join(missing[:5])}"
                           + (" ..." if len(missing) > 5 else "") + ")")
            if short:
                out.append(f"{name}: {len(short)} chunk file(s) truncated ({', '.join(short[:5])}"
                           + (" ..." if len(short) > 5 else "") + ")")
        return out

    def read_rows_into(self, start: int, stop: int, out: np.ndarray) -> None:
        if stop <= start:
            return
        if self._raw is not None:
            self._raw.read_runs(np.array([start]), np.array([stop - start]), [out[:stop - start]])
        else:
            out[:stop - start] = self._arr[start:stop]

    def read_items_into(self, idx: np.ndarray, out: np.ndarray) -> None:
        if not len(idx):
            return
        if self._raw is not None:
            self._raw.read_runs(idx, np.ones(len(idx), np.int64), [out[j:j + 1] for j in range(len(idx))])
        else:
            out[:len(idx)] = self._arr.oindex[idx]

    def read_audio_into(self, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
        if not len(starts) or not lengths.sum():
            return
        if self._raw is not None:
            self._raw.read_runs(starts, lengths, [out[j] for j in range(len(starts))])
            return
        # one orthogonal selection over all wanted frames: zarr then reads each touched chunk once
        frames = np.concatenate([np.arange(s, s + n) for s, n in zip(starts.tolist(), lengths.tolist())])
        rows = self._arr.oindex[frames]
        valid = np.arange(out.shape[1])[None, :] < lengths[:, None]
        out[valid] = rows

    def nbytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def close(self) -> None:
        pass


def _columns(group: zarr.Group, prefix: str = ""):
    """(name, array) of every array in the group but `features`, recursively."""
    for key, member in group.members():
        name = f"{prefix}{key}"
        if isinstance(member, zarr.Group):
            yield from _columns(member, name + "/")
        elif name != "features":
            yield name, member


def _chunk_damage(folder: Path, arr: zarr.Array) -> tuple[list[str], list[str]]:
    """Chunk keys (under the default `c/...` encoding) whose file is missing, and those shorter than a chunk."""
    key = getattr(arr.metadata, "chunk_key_encoding", None)
    if not isinstance(key, DefaultChunkKeyEncoding):
        return [], []
    grid = [math.ceil(s / c) for s, c in zip(arr.shape, arr.chunks)]
    full = int(np.prod(arr.chunks)) * np.dtype(arr.dtype).itemsize if _plain_bytes(arr) else None
    missing, short = [], []
    for index in np.ndindex(*grid):
        rel = key.separator.join(("c",) + tuple(str(i) for i in index))
        p = folder / rel
        if not p.is_file():
            missing.append(rel)
        elif full is not None and p.stat().st_size < full:
            short.append(rel)
    return missing, short


def _plain_bytes(arr: zarr.Array) -> bool:
    codecs = getattr(arr.metadata, "codecs", ())
    return len(codecs) == 1 and isinstance(codecs[0], BytesCodec)


def _raw_rows(path: Path, arr: zarr.Array) -> RawRows | None:
    """Positioned reads inside the chunk files when chunks are plain little-endian float16 bytes, split
    along the first axis only, under the default `c/i/0/...` chunk keys; None otherwise (zarr reads then)."""
    meta = arr.metadata
    codecs = getattr(meta, "codecs", ())
    key = getattr(meta, "chunk_key_encoding", None)
    plain = (_plain_bytes(arr) and codecs[0].endian in (Endian.little, None)
             and isinstance(key, DefaultChunkKeyEncoding) and key.separator == "/"
             and tuple(arr.chunks[1:]) == tuple(arr.shape[1:]) and np.dtype(arr.dtype) == np.dtype("<f2")
             and (path / "features" / "zarr.json").exists())
    if not plain:
        return None
    tail = "/0" * (len(arr.shape) - 1)
    folder = path / "features" / "c"
    return RawRows(lambda k: folder / f"{k}{tail}", 0, arr.chunks[0], arr.shape[1:], arr.shape[0], store=path)


def recognises(path: Path) -> bool:
    """A Zarr v3 group: a folder with a `zarr.json` that says so."""
    meta = Path(path) / "zarr.json"
    try:
        doc = json.loads(meta.read_text()) if meta.is_file() else None
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("zarr_format") == 3 and doc.get("node_type") == "group"


def open_reader(path: Path) -> ZarrReader:
    return ZarrReader(path)


BACKEND = register(Backend(NAME, "Zarr", tuple(s for s, f in SUFFIX_FORMAT.items() if f == NAME), recognises,
                           create, open_reader))
