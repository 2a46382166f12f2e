"""A whole store resident in RAM (optionally pinned) or on a GPU, and the batch gather that training calls.

The hot path has no Python loop per item. Audio: one (B, T_max) matrix of frame numbers is built from the
offsets and lengths, padding positions point at an extra all-zero row kept after the last frame, and the
rows are gathered in one call. On CPU that call is `np.take(..., out=, mode="clip")` on numpy views of the
tensors: measured on this project's machine, `torch.index_select` on a large float16 tensor with two
threads took anywhere from 20 ms to 4.9 s for the same batch, and numpy's default `mode="raise"` buffers
the output (99 ms instead of 26 ms). Indices are bounds-checked before, so "clip" never hides an error.
One `np.take` copies at a single core's memory bandwidth; `np.take` releases the GIL, so a large gather is
split into one slice per core on a small thread pool (720 images: 28.7 → 15.8 ms here).
On CUDA plain tensor indexing is used.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .store import FeatureStore

log = logging.getLogger(__name__)

PARALLEL_TAKE_BYTES = 8 << 20  # below this a single np.take is as fast as a split one


@cache
def _take_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="vgsme-take")


def take_rows(src: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
    """out[:] = src[idx] along axis 0, split over the cores when the copy is large."""
    workers = os.cpu_count() or 1
    if workers == 1 or out.nbytes < PARALLEL_TAKE_BYTES or len(idx) < 2 * workers:
        np.take(src, idx, axis=0, out=out, mode="clip")
        return
    bounds = np.linspace(0, len(idx), workers + 1).astype(int)
    parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    list(_take_pool().map(lambda part: np.take(src, idx[part], axis=0, out=out[part], mode="clip"), parts))


@dataclass(eq=False)
class InMemoryFeatures:
    """Features as torch float16 tensors on one device.

    Audio: `frames_padded` (F + 1, D), the last row all zeros (the target of padding positions),
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
        self._max_len = int(self._lengths_np.max(initial=0))

    # -- construction
    @classmethod
    def from_numpy(cls, modality: str, features: np.ndarray, lengths: np.ndarray | None = None,
                   offsets: np.ndarray | None = None, device: str | torch.device = "cpu",
                   pin: bool = False) -> "InMemoryFeatures":
        """From a concatenated audio frames array (F, D) with offsets and lengths, or an (N, P, D) image array."""
        if modality == "audio":
            if lengths is None or offsets is None:
                raise ValueError("audio features need lengths and offsets")
            host = _empty((features.shape[0] + 1, features.shape[1]), pin)
            host_np = host.numpy()
            host_np[:-1] = features
            host_np[-1] = 0
        else:
            host = _empty(features.shape, pin)
            host.numpy()[...] = features
            lengths = np.full(features.shape[0], features.shape[1], np.int64) if lengths is None else lengths
        return cls._finish(modality, host, lengths, offsets, device)

    @classmethod
    def from_store(cls, store: "FeatureStore", device: str | torch.device = "cpu", pin: bool = False) -> "InMemoryFeatures":
        """Read a whole store in big contiguous slices straight into the tensor's memory."""
        device = torch.device(device)
        rows = store.total_frames
        shape = (rows + 1, store.dim) if store.modality == "audio" else (rows, store.positions, store.dim)
        if device.type == "cpu":
            host = _empty(shape, pin)
            store.read_all_into(host.numpy()[:rows])
            if store.modality == "audio":
                host[rows] = 0
            return cls._finish(store.modality, host, store.lengths, store.offsets, device)
        # an accelerator: stream slices through host memory rather than holding the whole store there too
        dev = torch.zeros(shape, dtype=torch.float16, device=device)
        for start, block in store.iter_rows():
            dev[start:start + len(block)].copy_(torch.from_numpy(block))
        return cls._finish(store.modality, dev, store.lengths, store.offsets, device)

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
    def device(self) -> torch.device:
        return self.frames_padded.device

    @property
    def frames(self) -> torch.Tensor:
        """Audio: (F, D) all frames; images: (N, P, D)."""
        return self.frames_padded[:-1] if self.modality == "audio" else self.frames_padded

    @property
    def max_length(self) -> int:
        return self._max_len

    @property
    def nbytes(self) -> int:
        return self.frames_padded.numel() * 2

    def new_buffer(self, max_items: int) -> torch.Tensor:
        """A reusable output buffer for `gather(..., out=)` big enough for `max_items` items of any length.

        Reusing one (or two, alternating) saves allocating and first-touching ~190 MB per training batch,
        which measured 17-56 ms here.
        """
        per_item = self._max_len * self.dim if self.modality == "audio" else self.frames_padded[0].numel()
        return torch.empty(max_items * per_item, dtype=torch.float16, device=self.device)

    # -- gather
    def _index(self, index: torch.Tensor | np.ndarray | list[int]) -> np.ndarray:
        idx = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"item indices must lie in [0, {len(self)}); got {idx.min()}..{idx.max()}")
        return idx

    def _output(self, shape: tuple[int, ...], out: torch.Tensor | None) -> torch.Tensor:
        n = int(np.prod(shape))
        if out is None:
            return torch.empty(shape, dtype=torch.float16, device=self.device)
        if out.dtype != torch.float16 or out.device != self.device or out.numel() < n or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous float16 tensor on {self.device} with >= {n} elements "
                             f"(use new_buffer); got {out.dtype}, {out.device}, {out.numel()}")
        return out.view(-1)[:n].view(shape)

    def gather(self, index: torch.Tensor | np.ndarray | list[int], out: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features of the items `index`, in that order: x (B, T_max, D) float16 and pad (B, T_max) bool,
        True at padding (pad is None for images). With `out` (from `new_buffer`) x is a view of it."""
        idx = self._index(index)
        if self.modality == "image":
            x = self._output((len(idx),) + tuple(self.frames_padded.shape[1:]), out)
            if self.device.type == "cpu":
                take_rows(self.frames_padded.numpy(), idx, x.numpy())
            else:
                torch.index_select(self.frames_padded, 0, torch.as_tensor(idx, device=self.device), out=x)
            return x, None
        lens = self._lengths_np[idx]
        t_max = int(lens.max(initial=0))
        steps = np.arange(t_max)
        pad = steps[None, :] >= lens[:, None]
        frame_idx = np.where(pad, len(self.frames_padded) - 1, self._offsets_np[idx][:, None] + steps[None, :])
        x = self._output((len(idx), t_max, self.dim), out)
        if self.device.type == "cpu":
            take_rows(self.frames_padded.numpy(), frame_idx.reshape(-1), x.numpy().reshape(-1, self.dim))
            return x, torch.from_numpy(pad)
        fi = torch.as_tensor(frame_idx.reshape(-1), device=self.device)
        torch.index_select(self.frames_padded, 0, fi, out=x.view(-1, self.dim))
        return x, torch.as_tensor(pad, device=self.device)

    def gather_mean(self, index: torch.Tensor | np.ndarray | list[int], batch: int = 256) -> torch.Tensor:
        """Time- (or position-) averaged features of the items, (B, D) float32: the raw-feature baseline."""
        idx = self._index(index)
        parts = []
        for a in range(0, len(idx), batch):
            sub = idx[a:a + batch]
            x, _ = self.gather(sub)
            # padding rows are zeros, so a plain sum over time divided by the true length is the mean
            n = torch.as_tensor(self._lengths_np[sub], dtype=torch.float32, device=self.device)
            parts.append(x.float().sum(1) / n[:, None])
        return torch.cat(parts) if parts else torch.zeros((0, self.dim), device=self.device)


def _empty(shape: tuple[int, ...], pin: bool) -> torch.Tensor:
    if pin and not torch.cuda.is_available():
        log.warning("pin=True ignored: pinned memory needs CUDA, which this torch build or machine lacks")
        pin = False
    return torch.empty(shape, dtype=torch.float16, pin_memory=pin)
