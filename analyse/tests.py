"""The familiar and ME tests: score saved episodes with a run's embeddings and record every decision.

A model picks, for each episode, the image whose embedding has the higher dot product with the query's
(the cosine, since embeddings are unit vectors; the logit scale multiplies both scores and cannot change
the choice). A tie counts as wrong, so a model that collapses everything to one point scores 0, not 50.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analyse.export import Embedded

PREDICTION_COLUMNS = ["test", "lang", "episode", "concept", "query_id", "pos_id", "neg_id", "score_pos", "score_neg", "correct"]
ACCURACY_COLUMNS = ["test", "lang", "n", "accuracy"]


def score_episodes(episodes: pd.DataFrame, embedded: Embedded) -> pd.DataFrame:
    """One prediction row per episode: both scores and whether the positive won."""
    q = embedded.vectors[embedded.rows("audio", episodes["query_id"])]
    p = embedded.vectors[embedded.rows("image", episodes["pos_id"])]
    n = embedded.vectors[embedded.rows("image", episodes["neg_id"])]
    score_pos = np.einsum("ij,ij->i", q, p)
    score_neg = np.einsum("ij,ij->i", q, n)
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
