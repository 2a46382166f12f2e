"""The familiar and ME tests: score saved episodes with a run's embeddings and record every decision.

A model picks, for each episode, the image whose embedding has the higher dot product with the query's
(the cosine, since embeddings are unit vectors; the logit scale multiplies both scores and cannot change
the choice). A tie counts as wrong, so a model that collapses everything to one point scores 0, not 50.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analyse.export import Embedded
from cache.atomic import write_csv

PREDICTION_COLUMNS = ["test", "lang", "episode", "concept", "query_id", "pos_id", "neg_id", "score_pos", "score_neg", "correct"]
ACCURACY_COLUMNS = ["test", "lang", "n", "accuracy"]


def score_episodes(episodes: pd.DataFrame, embedded: Embedded) -> pd.DataFrame:
    """One prediction row per episode: both scores and whether the positive won."""
    q = embedded.vectors[embedded.rows("audio", episodes["query_id"])]
    p = embedded.vectors[embedded.rows("image", episodes["pos_id"])]
    n = embedded.vectors[embedded.rows("image", episodes["neg_id"])]
    # float64 so that a CSV written now and one rewritten after reading it back print the same digits
    score_pos = np.einsum("ij,ij->i", q, p).astype(np.float64)
    score_neg = np.einsum("ij,ij->i", q, n).astype(np.float64)
    out = episodes[["test", "lang", "episode", "concept", "query_id", "pos_id", "neg_id"]].copy()
    out["score_pos"] = score_pos
    out["score_neg"] = score_neg
    out["correct"] = (score_pos > score_neg).astype(int)
    return out.reset_index(drop=True)[PREDICTION_COLUMNS]


def accuracy_summary(predictions: pd.DataFrame) -> pd.DataFrame:
    """Accuracy in percent per (test, language), with the number of episodes."""
    grouped = predictions.groupby(["test", "lang"], sort=True)["correct"]
    out = grouped.agg(n="size", accuracy="mean").reset_index()
    out["accuracy"] = 100.0 * out["accuracy"]
    return out[ACCURACY_COLUMNS]


# ------------------------------------------------------------------------------------------ binding to runs
def score_run(run, tests: tuple[str, ...] = ("familiar", "me"), device: str = "cpu", seed: int = 0,
              per_concept: int = 50, precision: str = "fp32") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score `tests` on each of the run's languages; update `analysis/predictions.csv` and `accuracy.csv`.

    Rows of other tests already in predictions.csv are kept when they were scored with the current
    weights, stores and episodes (else they are rescored too), so `analyse familiar` and `analyse me` can
    run in either order. Returns the full predictions and accuracy tables of the run.
    """
    from analyse.episodes import episodes_for_run
    from analyse.export import record_predictions_keys, run_embeddings, stale_tests

    embedded = run_embeddings(run, device, precision=precision)
    path = run.analysis_dir / "predictions.csv"
    old = None
    if path.exists():
        old = pd.read_csv(path, dtype={"query_id": str, "pos_id": str, "neg_id": str, "lang": str, "concept": str})
        tests = tuple(tests) + tuple(stale_tests(run, sorted(set(old["test"]) - set(tests)), precision))
    fresh = [score_episodes(episodes_for_run(run, lang, test, seed, per_concept), embedded)
             for lang in run.langs for test in tests]
    parts = fresh if old is None else [old[~old["test"].isin(tests)]] + fresh
    predictions = pd.concat(parts, ignore_index=True).sort_values(["test", "lang", "episode"], kind="stable")
    accuracy = accuracy_summary(predictions)
    write_csv(path, predictions)
    write_csv(run.analysis_dir / "accuracy.csv", accuracy)
    record_predictions_keys(run, sorted(set(predictions["test"])), precision)
    return predictions, accuracy


def collect(runs, name: str) -> pd.DataFrame:
    """Stack one per-run CSV (e.g. accuracy.csv) over runs, with run, train_langs, width, seed columns."""
    frames = []
    for run in runs:
        path = run.analysis_dir / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `analyse familiar` and `analyse me` on {run.path} first")
        if name in ("predictions.csv", "accuracy.csv"):
            from analyse.export import check_predictions_current

            check_predictions_current(run, sorted(set(pd.read_csv(path, usecols=["test"])["test"])))
        frame = pd.read_csv(path, dtype={"query_id": str, "pos_id": str, "neg_id": str, "lang": str, "concept": str})
        for key, value in reversed(list(run.labels().items())):
            frame.insert(0, key, value)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
