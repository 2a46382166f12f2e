"""Tiny feature stores for tests: real stores written through the real writer, from random or given features.

    from tests.synthetic import write_synthetic_store, synthetic_items
    path = write_synthetic_store(tmp_path / "audio-en.test.h5", "audio", synthetic_items(40, lang="en"), seed=0)
    store = cache.open_store(path)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cache.provenance import Provenance
from cache.store import ItemTable, open_writer

FAMILIAR = ("dog", "boat", "cow", "bear", "horse", "scissors", "umbrella", "car", "bird", "clock", "elephant",
            "cat", "sheep")
NOVEL = ("ball", "cake", "trumpet", "lamp", "bench", "cannon", "piano", "barrel", "camera", "fan", "revolver",
         "buck", "toilet", "butterfly", "cup", "guitar", "fork", "bus", "chair")


def synthetic_items(n: int, modality: str = "audio", lang: str = "en", concepts: Sequence[str] | None = None,
                    splits: Sequence[str] = ("train", "valid", "test"), sources: Sequence[str] = ("src",),
                    speakers: int = 3, prefix: str | None = None) -> ItemTable:
    """`n` items cycling through `concepts` (default: the 13 familiar then the 19 novel concepts), splits,
    sources and speakers; ids like `en-0007` (audio) or `img-0007` (images); kind follows the concept."""
    concepts = list(concepts or FAMILIAR + NOVEL)
    prefix = prefix or (lang if modality == "audio" else "img")
    recs = []
    for i in range(n):
        c = concepts[i % len(concepts)]
        recs.append({"id": f"{prefix}-{i:04d}", "concept": c, "kind": "novel" if c in NOVEL else "familiar",
                     "lang": lang if modality == "audio" else "",
                     "speaker": f"{lang}-spk{i % speakers}" if modality == "audio" else "",
                     "source": sources[i % len(sources)], "split": splits[(i // len(concepts)) % len(splits)]})
    return ItemTable.from_records(recs)


def synthetic_provenance(modality: str, dim: int, lang: str | None = "en", encoder: str = "synthetic",
                         layer: int | None = None, positions: int | None = None, corpus: str = "synthetic",
                         shard: tuple[int, int] | None = None, **preprocessing: Any) -> Provenance:
    pre = {"positions": positions} if modality == "image" else {"sample_rate": 16000, "frame_rate": 50}
    pre.update(preprocessing)
    return Provenance(encoder=encoder, encoder_fingerprint="sha256:synthetic", layer=layer, dim=dim,
                      modality=modality, lang=lang if modality == "audio" else None, preprocessing=pre,
                      corpus=corpus, corpus_hash="synthetic", shard=shard)


def synthetic_features(items: int, modality: str, dim: int, rng: np.random.Generator, positions: int = 4,
                       min_len: int = 2, max_len: int = 9) -> list[np.ndarray]:
    """Random float32 features: audio items of `min_len..max_len` frames, images of `positions` rows."""
    if modality == "audio":
        return [rng.standard_normal((int(rng.integers(min_len, max_len + 1)), dim)).astype(np.float32)
                for _ in range(items)]
    return [rng.standard_normal((positions, dim)).astype(np.float32) for _ in range(items)]


def write_synthetic_store(path: str | Path, modality: str, items: ItemTable | Sequence[Mapping[str, Any]] | int,
                          features: Sequence[np.ndarray] | np.random.Generator | None = None, dim: int = 8,
                          positions: int = 4, lang: str = "en", seed: int = 0, batch: int = 7,
                          provenance: Provenance | None = None, **provenance_kw: Any) -> Path:
    """Write a complete store at `path` (.h5 or .zarr) and return the path.

    `items`: an ItemTable, a list of record dicts, or a count (then `synthetic_items`). `features`: a list of
    per-item arrays (audio (T, dim), images (positions, dim)), a Generator to draw them from, or None (drawn
    from `seed`). Features are stored as float16, so compare against `np.float16(features)`.
    """
    if isinstance(items, int):
        items = synthetic_items(items, modality, lang=lang)
    elif not isinstance(items, ItemTable):
        items = ItemTable.from_records(items)
    if features is None or isinstance(features, np.random.Generator):
        rng = features if features is not None else np.random.default_rng(seed)
        features = synthetic_features(len(items), modality, dim, rng, positions)
    if len(features) != len(items):
        raise ValueError(f"{len(features)} feature arrays for {len(items)} items")
    dim = int(np.asarray(features[0]).shape[-1]) if len(features) else dim
    positions = int(np.asarray(features[0]).shape[0]) if modality == "image" and len(features) else positions
    prov = provenance or synthetic_provenance(modality, dim, lang=lang,
                                              positions=positions if modality == "image" else None, **provenance_kw)
    writer = open_writer(path, prov, items, dim, positions=positions if modality == "image" else None)
    for a in range(0, len(features), batch):
        writer.append(list(features[a:a + batch]))
    writer.finish()
    return Path(path)
