"""The one interface every frozen encoder offers to the extraction loop.

The loop (``extract.run``) knows nothing about transformers, CTranslate2 or EfficientNet: it hands a batch of
waveforms or images to ``encode`` and writes what comes back. Everything the store's provenance must record
about *how* the features were made (weights, layer, preprocessing) is exposed here as plain attributes, so
that two stores made by different encoders, layers or preprocessing can never be mistaken for each other.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

Modality = Literal["audio", "image"]
SAMPLE_RATE = 16_000


class EncoderUnavailable(ValueError):
    """The encoder asked for cannot be loaded here (unknown name, weights not downloaded, wrong layer...).

    A ``ValueError`` so that the CLI turns it into a one-line user error; the message says how to fix it.
    """


@runtime_checkable
class Encoder(Protocol):
    """A loaded, frozen encoder.

    Attributes:
        name: the id written into provenance and store names (``whisper-base``, ``microsoft/wavlm-base-plus``,
            or the local folder's path).
        modality: ``"audio"`` or ``"image"``.
        dim: the feature size D of every frame / position.
        fingerprint: sha256 of the weights (files or state dict), computed once at load time.
        layer: the hidden state taken (``None`` = the model's final output).
        preprocessing: everything done to the input before the forward pass (sample rate, frame rate, image
            size, normalisation, positions, layer, numeric precision), recorded in the store's provenance.
        min_samples: audio only: the shortest waveform (in 16 kHz samples) that yields one frame;
            0 for images.
    """

    name: str
    modality: Modality
    dim: int
    fingerprint: str
    layer: int | None
    preprocessing: dict[str, Any]
    min_samples: int

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        """Encode one batch.

        Audio: a list of float32 mono 16 kHz waveforms → a list of float32 ``(T_i, D)`` arrays with
        ``T_i = frames(len(waveform_i))``. Images: a list of RGB PIL images or ``(H, W, 3)`` uint8 arrays → a
        list of float32 ``(P, D)`` arrays (P positions of the final map). Output order = input order.
        """
        ...


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu``/``cuda`` as asked (``cuda`` without a GPU is a user error)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise EncoderUnavailable(f"unknown device {device!r}: use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderUnavailable(f"device {device!r} asked for but torch sees no CUDA GPU: use --device cpu or auto")
    return torch.device(device)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Half-precision autocast on CUDA only (bf16 where the GPU supports it, else fp16); CPU stays fp32.

    CPU autocast would be slower on most CPUs and change the numbers; the stores are float16 anyway, so
    half-precision compute on a GPU costs no precision the store keeps.
    """
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def sha256_files(paths: Iterable[Path]) -> str:
    """sha256 over the bytes of the given files, in the order given (the file names are not hashed)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def sha256_state_dict(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict: names, dtypes, shapes and bytes, sorted by name.

    Used where the weights do not come from one file we can hash (a hub checkpoint resolved by transformers,
    sharded or converted on load): the state dict is what actually runs.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def image_to_array(image: Any) -> np.ndarray:
    """A PIL image or an array → ``(H, W, 3)`` uint8 RGB (what the image encoders resize and normalise)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an RGB image or an (H, W, 3) uint8 array, got {array.dtype} {array.shape}")
    return array


def resize_normalise(images: Sequence[Any], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Resize each image to ``size × size`` (bilinear, no crop: the whole picture is kept, aspect ratio is
    not) and normalise per channel; ``mean``/``std`` are on the 0–1 scale. Returns ``(B, 3, size, size)`` fp32.
    """
    from PIL import Image

    mean_arr = np.asarray(mean, dtype=np.float32)
    std_arr = np.asarray(std, dtype=np.float32)
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        pil = Image.fromarray(image_to_array(image))
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BILINEAR)
        pixels = np.asarray(pil, dtype=np.float32) / 255.0
        out[i] = ((pixels - mean_arr) / std_arr).transpose(2, 0, 1)
    return torch.from_numpy(out)
