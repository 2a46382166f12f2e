"""A whole store resident in RAM (optionally pinned) or on a GPU, and the batch gather that training and
the analyses call: the one gather path of the project.

Storage dtype, chosen at load: float16 as stored; bfloat16, converted once in place chunk by chunk; or
float32. Why bf16 in memory: under bf16 autocast every gathered float16 batch would be cast fp16 → bf16
before the input projection, and that cast measured 4× the cost of the bf16 matmul itself on this CPU
(65 vs 16 ms for 256 images). Converting once gives the projection the very values autocast would have
given it, at no extra memory.

The hot path has no Python loop per item. Audio: one (B, T_max) matrix of frame numbers is built from the
offsets and lengths, padding positions point at an extra all-zero row kept after the last frame, and the
rows are gathered in one call. On CPU that call is `np.take(..., out=, mode="clip")` on numpy views of the
tensors (int16 views for the 2-byte dtypes: numpy has no bf16): measured on this project's machine,
`torch.index_select` on a large float16 tensor with two threads took anywhere from 20 ms to 4.9 s for the
same batch, and numpy's default `mode="raise"` buffers the output (99 ms instead of 26 ms). Indices are
bounds-checked before, so "clip" never hides an error. The gather is single-threaded: a copy split over
a thread pool made repeated demo trainings drift in the 4th decimal, and training must be bit-for-bit
repeatable per seed. On CUDA `index_select` is used.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .reader import FeatureStore

log = logging.getLogger(__name__)

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
CONVERT_ELEMENTS = 1 << 22  # values converted per step of the in-place float16 → bfloat16 conversion


@dataclass(eq=False)
class InMemoryFeatures:
    """Features as torch tensors of one dtype on one device.

    Audio: `frames_padded` (F + 1, D) (or (F + 1, L, D): every layer of a layer axis), the last row all zeros
    (the target of padding positions),
    `offsets` and `lengths` (N,) int64. Images: `frames_padded` is (N, P, D) and `offsets` is None.
    `offsets`/`lengths` live on `device`; numpy copies on the CPU serve the index arithmetic.
    """

    modality: str
    frames_padded: torch.Tensor
    lengths: torch.Tensor
    offsets: torch.Tensor | None

    def __post_init__(self) -> None:
        self._lengths_np = self.lengths.cpu().numpy().astype(np.int64)
        self._offsets_np = None if self.offsets is None else self.offsets.cpu().numpy().astype(np.int64)

    # -- construction
    @classmethod
    def from_numpy(cls, modality: str, features: np.ndarray, lengths: np.ndarray | None = None,
                   offsets: np.ndarray | None = None, device: str | torch.device = "cpu", pin: bool = False,
                   dtype: torch.dtype | None = None) -> "InMemoryFeatures":
        """From a concatenated audio frames array (F, D) or (F, L, D) with offsets and lengths, or an (N, P, D)
        image array."""
        if modality == "audio":
            if lengths is None or offsets is None:
                raise ValueError("audio features need lengths and offsets")
            host = _empty((features.shape[0] + 1,) + tuple(features.shape[1:]), pin)  # (F + 1, D) or (F + 1, L, D)
            host_np = host.numpy()
            host_np[:-1] = features
            host_np[-1] = 0
        else:
            host = _empty(features.shape, pin)
            host.numpy()[...] = features
            lengths = np.full(features.shape[0], features.shape[1], np.int64) if lengths is None else lengths
        return cls._finish(modality, _convert(host, _dtype(dtype)), lengths, offsets, device)

    @classmethod
    def from_store(cls, store: "FeatureStore", device: str | torch.device = "cpu", pin: bool = False,
                   dtype: torch.dtype | None = None, layer: int | None = None) -> "InMemoryFeatures":
        """Read a whole store in big slices of whole items, each checked against its checksums, straight into
        the tensor's memory (float16 and bfloat16) or through a slice buffer (float32, CUDA, one layer).

        `layer`: for a store with a layer axis, keep only that hidden state: each slice is read whole (the
        checksums cover all of an item's layers) and its layer copied out, so memory holds one layer plus
        one slice. None keeps every stored layer: frames of (L, D)."""
        device, dtype = torch.device(device), _dtype(dtype)
        position = store.layer_position(layer)
        rows = store.total_frames
        row_shape = store.row_shape if position is None else (store.dim,)
        shape = ((rows + 1,) if store.modality == "audio" else (rows,)) + row_shape
        if position is not None:
            host = _empty(shape, pin) if device.type == "cpu" else torch.empty(shape, dtype=torch.float16,
                                                                               device=device)
            for start, block in store.iter_rows():
                host[start:start + len(block)].copy_(torch.from_numpy(block[:, position]))
            host[rows] = 0
            return cls._finish(store.modality, _convert(host, dtype), store.lengths, store.offsets, device)
        if device.type == "cpu" and dtype != torch.float32:
            host = _empty(shape, pin)
            store.read_all_into(host.numpy()[:rows])
            if store.modality == "audio":
                host[rows] = 0
            return cls._finish(store.modality, _convert(host, dtype), store.lengths, store.offsets, device)
        # float32, or an accelerator: slices pass through host memory rather than the whole store twice
        frames = _empty(shape, pin, dtype) if device.type == "cpu" else torch.empty(shape, dtype=dtype, device=device)
        for start, block in store.iter_rows():
            frames[start:start + len(block)].copy_(torch.from_numpy(block))
        if store.modality == "audio":
            frames[rows] = 0
        return cls._finish(store.modality, frames, store.lengths, store.offsets, device)

    @classmethod
    def _finish(cls, modality: str, frames: torch.Tensor, lengths: np.ndarray, offsets: np.ndarray | None,
                device: torch.device | str) -> "InMemoryFeatures":
        device = torch.device(device)
        frames = frames.to(device)
        lengths_t = torch.as_tensor(np.asarray(lengths, np.int64), device=device)
        offsets_t = None if offsets is None else torch.as_tensor(np.asarray(offsets, np.int64), device=device)
        return cls(modality, frames, lengths_t, offsets_t)

    # -- shape
    def __len__(self) -> int:
        return len(self._lengths_np)

    @property
    def dim(self) -> int:
        return int(self.frames_padded.shape[-1])

    @property
    def dtype(self) -> torch.dtype:
        return self.frames_padded.dtype

    @property
    def device(self) -> torch.device:
        return self.frames_padded.device

    @property
    def frames(self) -> torch.Tensor:
        """Audio: (F, D) all frames; images: (N, P, D)."""
        return self.frames_padded[:-1] if self.modality == "audio" else self.frames_padded

    @property
    def max_length(self) -> int:
        return int(self._lengths_np.max(initial=0))

    @property
    def nbytes(self) -> int:
        return self.frames_padded.numel() * self.frames_padded.element_size()

    # -- gather
    def _index(self, index: torch.Tensor | np.ndarray | list[int]) -> np.ndarray:
        idx = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"item indices must lie in [0, {len(self)}); got {idx.min()}..{idx.max()}")
        return idx

    def _take(self, rows: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        """frames_padded[rows] reshaped to `shape`, in one single-threaded call."""
        src = self.frames_padded
        if src.device.type != "cpu":
            return src.index_select(0, torch.as_tensor(rows, device=src.device)).view(shape)
        x = torch.empty(shape, dtype=src.dtype)
        view = (lambda t: t.view(torch.int16).numpy()) if src.element_size() == 2 else (lambda t: t.numpy())
        np.take(view(src), rows, axis=0, out=view(x).reshape((len(rows),) + tuple(src.shape[1:])), mode="clip")
        return x

    def gather(self, index: torch.Tensor | np.ndarray | list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features of the items `index`, in that order: x (B, T_max, D) in the storage dtype and pad
        (B, T_max) bool, True at padding, where x is all zeros (pad is None for images). With every layer
        of a layer axis in memory, x is (B, T_max, L, D)."""
        idx = self._index(index)
        if self.modality == "image":
            return self._take(idx, (len(idx),) + tuple(self.frames_padded.shape[1:])), None
        lens = self._lengths_np[idx]
        steps = np.arange(int(lens.max(initial=0)))
        pad = steps[None, :] >= lens[:, None]
        rows = np.where(pad, len(self.frames_padded) - 1, self._offsets_np[idx][:, None] + steps[None, :])
        x = self._take(rows.reshape(-1), (len(idx), len(steps)) + tuple(self.frames_padded.shape[1:]))
        return x, torch.from_numpy(pad).to(self.device)


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    dtype = torch.float16 if dtype is None else dtype
    if dtype not in DTYPES:
        raise ValueError(f"features can be held as {', '.join(map(str, DTYPES))}, not {dtype}")
    return dtype


def _convert(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float16 tensor as `dtype`: bfloat16 in place (same memory, a few rows at a time), float32 by copy."""
    if dtype == torch.float16:
        return frames
    if dtype == torch.float32:
        return frames.float()
    flat = frames.view(-1)
    out = flat.view(torch.bfloat16)
    for start in range(0, len(flat), CONVERT_ELEMENTS):
        out[start:start + CONVERT_ELEMENTS] = flat[start:start + CONVERT_ELEMENTS].to(torch.bfloat16)
    return out.view(frames.shape)


def _empty(shape: tuple[int, ...], pin: bool, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    if pin and not torch.cuda.is_available():
        log.warning("pin=True ignored: pinned memory needs CUDA, which this torch build or machine lacks")
        pin = False
    return torch.empty(shape, dtype=dtype, pin_memory=pin)
