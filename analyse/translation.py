"""Can a bilingual model translate? A nearest-centroid probe between its two languages' audio.

For a direction A → B, each concept's centroid is the mean of language B's audio embeddings of it,
L2-normalised; every audio item of language A is assigned to the centroid with the highest cosine.
Familiar items are classified among the familiar centroids and novel items among the novel ones, so
chance is 1/13 and 1/19 in the paper's setup. The same probe on time-averaged raw encoder features
tells how much of the translation the frozen encoder already gives (words that sound alike: bus, piano).
Concepts the runs were trained without (`exclude_concepts`) are neither queries nor centroids, in both.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analyse.export import l2_normalise
from cache.atomic import write_csv
from cache.vocab import KINDS

PROBE_COLUMNS = ["representation", "query_lang", "centroid_lang", "kind", "n_items", "n_concepts", "accuracy", "chance"]


def nearest_centroid_accuracy(
    centroid_x: np.ndarray, centroid_y: np.ndarray, query_x: np.ndarray, query_y: np.ndarray
) -> tuple[float, int]:
    """Share (percent) of queries whose nearest L2-normalised centroid (cosine) is their own concept.

    Queries of a concept that has no centroid count as wrong: the probe cannot name them. Returns the
    accuracy and the number of centroids.
    """
    concepts = np.array(sorted(set(centroid_y)))
    centroids = l2_normalise(np.stack([centroid_x[centroid_y == c].mean(axis=0) for c in concepts]))
    predicted = concepts[np.argmax(l2_normalise(query_x) @ centroids.T, axis=1)]
    return 100.0 * float(np.mean(predicted == query_y)), len(concepts)


def translation_probe(
    vectors: np.ndarray, items: pd.DataFrame, langs: list[str], representation: str
) -> pd.DataFrame:
    """Both directions between every pair of `langs`, familiar and novel, for one representation.

    `items` (columns concept, kind, lang) describes the audio rows of `vectors`.
    """
    rows = []
    for query_lang in langs:
        for centroid_lang in langs:
            if query_lang == centroid_lang:
                continue
            for kind in KINDS:
                q = ((items["lang"] == query_lang) & (items["kind"] == kind)).to_numpy()
                c = ((items["lang"] == centroid_lang) & (items["kind"] == kind)).to_numpy()
                if not q.any() or not c.any():
                    continue
                acc, n_concepts = nearest_centroid_accuracy(
                    vectors[c], items["concept"].to_numpy()[c], vectors[q], items["concept"].to_numpy()[q]
                )
                rows.append((representation, query_lang, centroid_lang, kind, int(q.sum()), n_concepts, acc, 100.0 / n_concepts))
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


# ------------------------------------------------------------------------------------------ binding to runs
def time_averaged_features(store, indices: np.ndarray, batch: int = 256, layer: int | None = None) -> np.ndarray:
    """Mean over each item's frames of its raw encoder features (float32), read in batches. `layer`: the
    hidden state of a store with a layer axis; None there averages every stored layer uniformly (the
    starting point of a learned weighted sum, and independent of any model)."""
    out = np.empty((len(indices), store.dim), np.float32)
    for start in range(0, len(indices), batch):
        x, lengths = store.read(indices[start:start + batch], layer=layer)
        x = x.astype(np.float32)
        if x.ndim == 4:  # (B, T, L, D): every layer
            x = x.mean(axis=2)
        sums = x.sum(axis=1)  # padding is zero, so the sum is over real frames
        out[start:start + len(lengths)] = sums / np.maximum(lengths, 1)[:, None]
    return out


def raw_probe(run) -> pd.DataFrame:
    """The probe on time-averaged encoder features of the run's audio stores' test items (less its
    excluded concepts)."""
    from analyse.exclusion import run_exclusion
    from analyse.study import items_frame, open_store

    excluded = list(run_exclusion(run))
    vectors, items = [], []
    for paths in run.audio_stores.values():
        store = open_store(paths)
        frame = items_frame(store, "audio")
        test = np.flatnonzero((frame["split"].to_numpy() == "test") & ~frame["concept"].isin(excluded).to_numpy())
        vectors.append(time_averaged_features(store, test, layer=run.audio_read_layer))
        items.append(frame.iloc[test])
    return translation_probe(np.concatenate(vectors), pd.concat(items, ignore_index=True), list(run.langs), "raw features")


def study_translation(runs, out_dir: Path, device: str = "cpu", precision: str = "fp32",
                      progress: bool = False) -> dict[str, Path]:
    """The probe for every run with two or more languages, on its embeddings and on raw features;
    {} when no run has two languages."""
    from analyse.exclusion import run_test_embeddings, study_exclusion
    from cache.clitools import progress_iter

    study_exclusion(runs)
    frames, raw_cache = [], {}
    for run in progress_iter([r for r in runs if len(r.langs) > 1], progress, desc="translation", unit="run"):
        embedded = run_test_embeddings(run, device, precision)
        audio = embedded.select((embedded.items["modality"] == "audio").to_numpy())
        model = translation_probe(audio.vectors, audio.items, list(run.langs), "model")
        key = (tuple(run.audio_stores.values()), run.audio_read_layer)
        if key not in raw_cache:  # the baseline depends only on the stores (and layer), not on the model
            raw_cache[key] = raw_probe(run)
        rows = pd.concat([model, raw_cache[key]], ignore_index=True)
        write_csv(run.analysis_dir / "translation.csv", rows)
        for k, value in reversed(list(run.labels().items())):
            rows.insert(0, k, value)
        frames.append(rows)
    if not frames:
        return {}
    per_run = pd.concat(frames, ignore_index=True)
    keys = ["train_langs", "width", "representation", "query_lang", "centroid_lang", "kind"]
    summary = (per_run.groupby(keys, sort=False)
               .agg(accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"), chance=("chance", "first"),
                    n_items=("n_items", "first"), n_seeds=("seed", "nunique"))
               .reset_index())
    return {"translation_per_run": write_csv(out_dir / "translation_per_run.csv", per_run),
            "translation": write_csv(out_dir / "translation.csv", summary)}
