"""Embeddings of store items under a trained model: what the analyses score, compare and draw."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from cache.hardware import resolve_precision
from train.model import TwoTower


@torch.no_grad()
def embed_store(model: TwoTower, store_or_mem, indices, device: str = "cpu", batch_size: int = 256,
                precision: str = "auto", layer: int | None = None) -> np.ndarray:
    """(N, E) float32 L2-normalised embeddings of items `indices` of a store, in the order given.

    `store_or_mem` is a `cache.FeatureStore` (read from disk batch by batch; nothing else is loaded) or an
    `InMemoryFeatures` from `store.load()`. The model runs in eval mode (no dropout) under `precision`
    (`auto`: the device's fastest native precision, `cache.hardware.resolve_precision`; pass `fp32` for
    embeddings that do not depend on the machine's low-precision kernels). Audio is batched in length order
    to cut padding; the output keeps the order of `indices`. `layer`: the hidden state read from a store
    with a layer axis (the run's `RunFolder.audio_read_layer`: what it trained on; None reads every layer,
    for a model with layer weights). An `InMemoryFeatures` already holds what was loaded.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    from_disk = hasattr(store_or_mem, "read")
    modality = store_or_mem.modality if from_disk else getattr(store_or_mem, "modality", None)
    lengths = np.asarray(store_or_mem.lengths if from_disk else store_or_mem.lengths.cpu())[idx]
    order = np.argsort(lengths, kind="stable")
    was_training = model.training
    model.eval().to(device)
    chosen = resolve_precision(precision, str(device))
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    autocast = torch.autocast(device_type, dtype=chosen.dtype) if chosen.autocast else contextlib.nullcontext()
    parts = []
    with autocast:
        for start in range(0, len(idx), batch_size):
            batch = idx[order[start: start + batch_size]]
            if from_disk:
                x, lens = store_or_mem.read(batch, layer=layer) if modality == "audio" else store_or_mem.read(batch)
                x = torch.from_numpy(x).to(device)
                pad = (None if modality == "image" else
                       torch.arange(x.shape[1], device=device)[None, :] >= torch.from_numpy(lens).to(device)[:, None])
            else:
                x, pad = store_or_mem.gather(torch.from_numpy(batch))
                x = x.to(device)
                pad = None if pad is None else pad.to(device)
            parts.append(model.embed_image(x) if pad is None else model.embed_audio(x, pad))
    model.train(was_training)
    if not parts:
        return np.zeros((0, model.audio.out.out_features), np.float32)
    embeddings = torch.cat(parts).float().cpu().numpy()
    return embeddings[np.argsort(order)]
