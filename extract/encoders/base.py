"""The one interface every frozen encoder offers to the extraction loop.

The loop (``extract.run``) knows nothing about transformers, CTranslate2 or EfficientNet: it hands a batch of
waveforms or images to ``encode`` and writes what comes back. Everything the store's provenance must record
about *how* the features were made (weights, layer, preprocessing) is exposed here as plain attributes, so
that two stores made by different encoders, layers or preprocessing can never be mistaken for each other.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from cache.hardware import Precision, resolve_device, resolve_precision

log = logging.getLogger(__name__)

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
        layer: the hidden state taken (``None`` = the model's final output, or several layers: ``layers``).
        layers: ``None``, or the hidden-state indices stored together along a layer axis (0 = the input
            embeddings, increasing; ``layer`` is then ``None`` and audio ``encode`` returns ``(T, L, D)``
            arrays, L = ``len(layers)``): what s3prl-style learned weighted sums of layers train on.
        preprocessing: everything done to the input before the forward pass (sample rate, frame rate, image
            size, normalisation, positions, layer), recorded in the store's provenance.
        precision: the resolved precision of the forward pass (bf16|fp16|fp32), recorded in the store's
            provenance: features computed in bf16 are not those of fp32.
        min_samples: audio only: the shortest waveform (in 16 kHz samples) that yields one frame;
            0 for images.
    """

    name: str
    modality: Modality
    dim: int
    fingerprint: str
    layer: int | None
    layers: tuple[int, ...] | None
    preprocessing: dict[str, Any]
    precision: str
    min_samples: int

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        """Encode one batch.

        Audio: a list of float32 mono 16 kHz waveforms → a list of float32 ``(T_i, D)`` arrays (``(T_i, L, D)``
        when ``layers`` is set) with ``T_i = frames(len(waveform_i))``. Images: a list of RGB PIL images or ``(H, W, 3)`` uint8 arrays → a
        list of float32 ``(P, D)`` arrays (P positions of the final map). Output order = input order.
        """
        ...


# Measured with bench/extract_speed.py on an AMX CPU (docs/extraction.md, "Precision"): bf16 autocast ran
# EfficientNet-Lite0 about 2x faster but moved its features by 20 % (relative L2), a thousand times what the
# float16 store's own rounding costs. Features are extracted once and reused by every run, so on a CPU `auto`
# keeps fp32; --precision bf16 still asks for the fast path explicitly. CUDA follows the project's rule.
CPU_AUTO_PRECISION = "fp32"


@dataclasses.dataclass(frozen=True)
class Compute:
    """Where a torch encoder runs and in which precision, resolved once by ``cache.hardware``'s rules."""

    device: torch.device
    precision: Precision

    def autocast(self) -> AbstractContextManager:
        """The forward pass's autocast (a no-op in fp32)."""
        if not self.precision.autocast:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.dtype)


def resolve_compute(device: str, precision: str) -> Compute:
    """``device``: auto|cpu|cuda[:N]; ``precision``: auto|bf16|fp16|fp32 (``auto`` = fp32 on a CPU, see
    :data:`CPU_AUTO_PRECISION`). Impossible requests raise ``cache.hardware.HardwareError`` (a ValueError)."""
    name = resolve_device(device)
    resolved = resolve_precision(precision, name, auto_on_cpu=CPU_AUTO_PRECISION)
    log.info("encoder on %s, precision %s", name, resolved.reason)
    return Compute(torch.device(name), resolved)


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
