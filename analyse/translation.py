"""Can a bilingual model translate? A nearest-centroid probe between its two languages' audio.

For a direction A → B, each concept's centroid is the mean of language B's audio embeddings of it,
L2-normalised; every audio item of language A is assigned to the centroid with the highest cosine.
Familiar items are classified among the familiar centroids and novel items among the novel ones, so
chance is 1/13 and 1/19 in the paper's setup. The same probe on time-averaged raw encoder features
tells how much of the translation the frozen encoder already gives (words that sound alike: bus, piano).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analyse.export import l2_normalise

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
            for kind in ("familiar", "novel"):
                q = ((items["lang"] == query_lang) & (items["kind"] == kind)).to_numpy()
                c = ((items["lang"] == centroid_lang) & (items["kind"] == kind)).to_numpy()
                if not q.any() or not c.any():
                    continue
                acc, n_concepts = nearest_centroid_accuracy(
                    vectors[c], items["concept"].to_numpy()[c], vectors[q], items["concept"].to_numpy()[q]
                )
                rows.append((representation, query_lang, centroid_lang, kind, int(q.sum()), n_concepts, acc, 100.0 / n_concepts))
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)
