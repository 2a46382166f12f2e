"""Every test item's embedding under one run: the arrays all other analyses start from.

`Embedded` is a plain table of items (id, modality, concept, kind, lang, source, split) with one
L2-normalised float32 vector per item. It is written as `<run>/analysis/embeddings.npz` (arrays `ids`,
`modality`, `embeddings`, and `cache_key`: the JSON of what they were computed from) plus
`<run>/analysis/items.csv`, so anyone can check the numbers without loading a model.

Everything cached under `<run>/analysis/` is keyed by what it was computed from: the run's best weights
(sha256), its stores' content fingerprints as they are NOW, and, for predictions, the episode files'
sha256. A retrained run, a rebuilt store or redrawn episodes change the key, and the cache is recomputed
(or, where it is only read, refused) instead of silently reused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cache import atomic
from cache.hashing import sha256_files

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


def save_embedded(embedded: Embedded, analysis_dir: Path, key: dict) -> tuple[Path, Path]:
    """Write embeddings.npz (with its cache `key`) and items.csv atomically; returns both paths."""
    npz_path, csv_path = analysis_dir / "embeddings.npz", analysis_dir / "items.csv"

    def write_npz(tmp: Path) -> None:
        with tmp.open("wb") as handle:  # a handle: np.savez would append .npz to a path
            np.savez(handle, ids=embedded.items["id"].to_numpy(dtype=str),
                     modality=embedded.items["modality"].to_numpy(dtype=str),
                     embeddings=embedded.vectors.astype(np.float32),
                     cache_key=np.array(json.dumps(key, sort_keys=True)))

    atomic.write_csv(csv_path, embedded.items[ITEM_CSV_COLUMNS])
    atomic.atomic_write(npz_path, write_npz)  # last: the npz is what marks the export complete
    return npz_path, csv_path


def load_embedded(analysis_dir: Path) -> tuple[Embedded, dict | None] | None:
    """The saved embeddings and the cache key they were made with (None for an export that recorded
    none), or None if absent."""
    npz_path, csv_path = analysis_dir / "embeddings.npz", analysis_dir / "items.csv"
    if not (npz_path.exists() and csv_path.exists()):
        return None
    with np.load(npz_path) as npz:
        ids, modality, vectors = npz["ids"], npz["modality"], npz["embeddings"]
        key = json.loads(str(npz["cache_key"])) if "cache_key" in npz.files else None
    items = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if len(items) != len(ids) or not (np.array_equal(items["id"].to_numpy(dtype=str), ids)
                                      and np.array_equal(items["modality"].to_numpy(dtype=str), modality)):
        return None  # the pair is from two different exports (interrupted run): recompute
    return Embedded(items, vectors), key


# ------------------------------------------------------------------------------------------ binding to runs
def embeddings_key(run, precision: str) -> dict:
    """What a run's test embeddings depend on: its best weights, its stores' content as they are now, and
    the precision they were computed in."""
    from analyse.study import open_store

    return {"weights": run.weights_fingerprint("best"), "stores": run.current_store_fingerprints(open_store),
            "precision": precision}


@dataclass(frozen=True)
class TestFeatures:
    """One store's test items (the items.csv rows) and their features in memory."""

    items: pd.DataFrame
    features: object  # cache.memory.InMemoryFeatures


def read_test_features(run, batch: int = 1024) -> list[TestFeatures]:
    """The test items of every store of the run (its languages' audio, then the images), read from disk once
    (checksums checked), so that several checkpoints of the run (a trajectory) embed them without rereading."""
    from analyse.study import items_frame, open_store
    from cache.memory import InMemoryFeatures

    out = []
    for modality, paths in [("audio", p) for p in run.audio_stores.values()] + [("image", run.image_store)]:
        store = open_store(paths)
        items = items_frame(store, modality)
        test = np.flatnonzero(items["split"].to_numpy() == "test")
        if len(test) == 0:
            raise ValueError(f"store {paths[0]} has no test items; the analyses need a test split")
        chunks, lengths = [], []
        layer = run.audio_read_layer if modality == "audio" else None  # what the run trained on
        for start in range(0, len(test), batch):
            x, lens = store.read(test[start: start + batch], layer=layer)
            chunks += [x[i, :n] for i, n in enumerate(lens)] if modality == "audio" else [x]
            lengths.append(lens)
        lengths = np.concatenate(lengths).astype(np.int64)
        if modality == "audio":
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            mem = InMemoryFeatures.from_numpy("audio", np.concatenate(chunks), lengths, offsets)
        else:
            mem = InMemoryFeatures.from_numpy("image", np.concatenate(chunks))
        out.append(TestFeatures(items.iloc[test], mem))
    return out


def embed_run(run, device: str = "cpu", precision: str = "fp32", checkpoint: str | int = "best",
              features: list[TestFeatures] | None = None) -> Embedded:
    """Embed every test item of the run's stores with its best checkpoint (or another one: `last`, or a
    saved epoch's number, as `RunFolder.load_model` takes); `features` from `read_test_features` saves
    rereading the stores when several checkpoints are embedded."""
    from train.embed import embed_store

    model = run.load_model(checkpoint, device)
    parts = []
    for part in features if features is not None else read_test_features(run):
        vectors = embed_store(model, part.features, np.arange(len(part.items)), device=device, precision=precision)
        parts.append(Embedded(part.items, l2_normalise(vectors)))
    return Embedded.concat(parts)

def run_embeddings(run, device: str = "cpu", force: bool = False, precision: str = "fp32") -> Embedded:
    """The run's test embeddings: from `analysis/embeddings.npz` when made from the current weights and
    stores at the same precision, else computed (once) and saved there."""
    key = embeddings_key(run, precision)
    saved = None if force else load_embedded(run.analysis_dir)
    if saved is not None and saved[1] == key:
        return saved[0]
    embedded = embed_run(run, device, precision)
    save_embedded(embedded, run.analysis_dir, key)
    return embedded


# ------------------------------------------------------------------------------------------ predictions' keys
class StaleAnalysisError(ValueError):
    """A per-run result was computed from other weights, stores or episodes than the run's current ones."""


def predictions_keys(run, tests, precision: str | None) -> dict[str, dict]:
    """The cache key of each (test, language) of the run's predictions, now: `embeddings_key` plus the
    sha256 of the episode files (None when they are not drawn). `precision=None` leaves the precision
    out (for checks that accept whichever precision the predictions were scored in)."""
    from analyse.episodes import episode_paths
    from analyse.study import episodes_dir

    base = embeddings_key(run, precision)
    if precision is None:
        del base["precision"]
    keys = {}
    for test in tests:
        for lang in run.langs:
            files = episode_paths(episodes_dir(run), lang, test)
            drawn = all(f.exists() for f in files)
            keys[f"{test}/{lang}"] = {**base, "episodes": sha256_files(files) if drawn else None}
    return keys


def _keys_path(run) -> Path:
    return run.analysis_dir / "predictions.json"


def recorded_predictions_keys(run) -> dict[str, dict]:
    """The keys saved beside predictions.csv ({} when none were)."""
    path = _keys_path(run)
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        return {}  # unreadable: treated as stale


def record_predictions_keys(run, tests, precision: str) -> Path:
    """Save the current keys of `tests` (call after predictions.csv and accuracy.csv are written)."""
    return atomic.write_json(_keys_path(run), predictions_keys(run, tests, precision))


def stale_tests(run, tests, precision: str | None) -> list[str]:
    """Those of `tests` whose saved predictions were scored with other weights, stores or episodes (or,
    unless `precision` is None, in another precision)."""
    recorded, current = recorded_predictions_keys(run), predictions_keys(run, tests, precision)
    if precision is None:
        recorded = {k: {f: v for f, v in value.items() if f != "precision"} for k, value in recorded.items()}
    return sorted({key.split("/")[0] for key, value in current.items() if recorded.get(key) != value})


def check_predictions_current(run, tests) -> None:
    """Refuse predictions (and the accuracy derived from them) scored on other weights, stores or episodes."""
    stale = stale_tests(run, tests, None)
    if stale:
        raise StaleAnalysisError(
            f"the {', '.join(stale)} predictions of run {run.path} were scored with other weights, stores or "
            f"episodes than the current ones; rescore it: `analyse {' / '.join(stale)} {run.path}` (or `analyse all`)")
