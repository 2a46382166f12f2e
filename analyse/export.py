"""Every test item's embedding under one run: the arrays all other analyses start from.

`Embedded` is a plain table of items (id, modality, concept, kind, lang, source, split) with one
L2-normalised float32 vector per item. It is written as `<run>/analysis/embeddings.npz` (arrays `ids`,
`modality`, `embeddings`, and the checkpoint's sha256 so that a retrained run is re-embedded) plus
`<run>/analysis/items.csv`, so anyone can check the numbers without loading a model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ITEM_CSV_COLUMNS = ["id", "modality", "concept", "kind", "lang", "source", "split"]


class EmbeddingLookupError(ValueError):
    """An analysis asked for an item that the run's embeddings do not contain."""


@dataclass
class Embedded:
    """Items (a DataFrame with ITEM_CSV_COLUMNS) and their L2-normalised vectors, row for row."""

    items: pd.DataFrame
    vectors: np.ndarray

    def __post_init__(self) -> None:
        if len(self.items) != len(self.vectors):
            raise ValueError(f"{len(self.items)} items but {len(self.vectors)} vectors")
        self.items = self.items.reset_index(drop=True)
        keys = list(zip(self.items["modality"], self.items["id"]))
        self._row = {key: i for i, key in enumerate(keys)}
        if len(self._row) != len(keys):
            raise ValueError("duplicate (modality, id) pairs in the embedded items")

    def rows(self, modality: str, ids) -> np.ndarray:
        """Row numbers of `ids` of one modality; names the first missing id."""
        try:
            return np.fromiter((self._row[(modality, i)] for i in ids), dtype=np.int64)
        except KeyError as err:
            raise EmbeddingLookupError(
                f"{modality} item {err.args[0][1]!r} has no embedding in this run; the run's stores do not "
                "contain it (episodes drawn from another corpus?) — fix: rerun `analyse export --force`"
            ) from None

    def select(self, mask: np.ndarray) -> "Embedded":
        """The subset of rows where `mask` is true."""
        mask = np.asarray(mask)
        return Embedded(self.items[mask].reset_index(drop=True), self.vectors[mask])

    @staticmethod
    def concat(parts: list["Embedded"]) -> "Embedded":
        return Embedded(pd.concat([p.items for p in parts], ignore_index=True), np.concatenate([p.vectors for p in parts]))


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm == 0, 1, norm)


def save_embedded(embedded: Embedded, analysis_dir: Path, checkpoint_sha256: str) -> tuple[Path, Path]:
    """Write embeddings.npz and items.csv atomically; returns both paths."""
    analysis_dir.mkdir(parents=True, exist_ok=True)
    npz_path, csv_path = analysis_dir / "embeddings.npz", analysis_dir / "items.csv"
    tmp_npz = analysis_dir / f".embeddings.{os.getpid()}.tmp.npz"
    np.savez(
        tmp_npz,
        ids=embedded.items["id"].to_numpy(dtype=str),
        modality=embedded.items["modality"].to_numpy(dtype=str),
        embeddings=embedded.vectors.astype(np.float32),
        checkpoint_sha256=np.array(checkpoint_sha256),
    )
    tmp_csv = analysis_dir / f".items.{os.getpid()}.tmp.csv"
    embedded.items[ITEM_CSV_COLUMNS].to_csv(tmp_csv, index=False)
    os.replace(tmp_csv, csv_path)
    os.replace(tmp_npz, npz_path)  # last: the npz is what marks the export complete
    return npz_path, csv_path


def load_embedded(analysis_dir: Path) -> tuple[Embedded, str] | None:
    """The saved embeddings and the checkpoint hash they were made with, or None if absent."""
    npz_path, csv_path = analysis_dir / "embeddings.npz", analysis_dir / "items.csv"
    if not (npz_path.exists() and csv_path.exists()):
        return None
    with np.load(npz_path) as npz:
        ids, modality, vectors, sha = npz["ids"], npz["modality"], npz["embeddings"], str(npz["checkpoint_sha256"])
    items = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if len(items) != len(ids) or not (np.array_equal(items["id"].to_numpy(dtype=str), ids)
                                      and np.array_equal(items["modality"].to_numpy(dtype=str), modality)):
        return None  # the pair is from two different exports (interrupted run): recompute
    return Embedded(items, vectors), sha


# ------------------------------------------------------------------------------------------ binding to runs
def checkpoint_sha256(path: Path) -> str:
    """sha256 of a checkpoint file: saved with the embeddings so a retrained run is re-embedded."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embed_run(run, device: str = "cpu", precision: str = "fp32") -> Embedded:
    """Embed every test item of the run's stores (its languages' audio, the images) with its best checkpoint."""
    from analyse.study import items_frame, open_store
    from train.embed import embed_store
    from train.model import TwoTower

    model = TwoTower.from_run(run.path, "best").to(device)
    parts = []
    for modality, paths in [("audio", p) for p in run.audio_stores.values()] + [("image", run.image_store)]:
        store = open_store(paths)
        items = items_frame(store, modality)
        test = np.flatnonzero(items["split"].to_numpy() == "test")
        if len(test) == 0:
            raise ValueError(f"store {paths[0]} has no test items; the analyses need a test split")
        vectors = embed_store(model, store, test, device=device, precision=precision)
        parts.append(Embedded(items.iloc[test], l2_normalise(vectors)))
    return Embedded.concat(parts)


def run_embeddings(run, device: str = "cpu", force: bool = False, precision: str = "fp32") -> Embedded:
    """The run's test embeddings: from `analysis/embeddings.npz` when made with the current checkpoint,
    else computed (once) and saved there."""
    sha = checkpoint_sha256(run.checkpoint)
    saved = None if force else load_embedded(run.analysis_dir)
    if saved is not None and saved[1] == sha:
        return saved[0]
    embedded = embed_run(run, device, precision)
    save_embedded(embedded, run.analysis_dir, sha)
    return embedded
