"""Synthetic embeddings whose test accuracies, variances and translation accuracies are known exactly."""
import numpy as np
import pandas as pd
import pytest

from analyse.episodes import draw_episodes
from analyse.export import Embedded, l2_normalise
from analyse.tests import accuracy_summary, score_episodes
from analyse.translation import translation_probe
from analyse.variance import subsample, trace_covariance, variance_rows

FAMILIAR = [f"fam{i:02d}" for i in range(13)]
NOVEL = [f"nov{i:02d}" for i in range(19)]
DIM = 64


def unit(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i] = 1
    return v


def item_table(n_audio: int = 6, n_image: int = 4, langs=("en",)) -> pd.DataFrame:
    rows = []
    for kind, concepts in (("familiar", FAMILIAR), ("novel", NOVEL)):
        for c in concepts:
            for lang in langs:
                rows += [dict(id=f"{lang}-{c}-{k}", modality="audio", concept=c, kind=kind, lang=lang, source="tts", split="test") for k in range(n_audio)]
            rows += [dict(id=f"img-{c}-{k}", modality="image", concept=c, kind=kind, lang="", source=f"s{k % 2}", split="test") for k in range(n_image)]
    return pd.DataFrame(rows)


def embed(items: pd.DataFrame, place) -> Embedded:
    return Embedded(items, l2_normalise(np.stack([place(r) for r in items.itertuples()])))


def episodes(items: pd.DataFrame, test: str) -> pd.DataFrame:
    audio = items[items["modality"] == "audio"]
    images = items[items["modality"] == "image"]
    return draw_episodes(audio, images, "en", test, per_concept=50, seed=0)


BETWEEN = l2_normalise(sum(unit(i) for i in range(13))[None])[0]  # equidistant from all familiar clusters


def test_novel_between_familiar_clusters_gives_full_me():
    items = item_table()
    emb = embed(items, lambda r: unit(FAMILIAR.index(r.concept)) if r.kind == "familiar" else BETWEEN)
    preds = pd.concat([score_episodes(episodes(items, t), emb) for t in ("familiar", "me")])
    acc = accuracy_summary(preds).set_index("test")
    assert acc.loc["familiar", "accuracy"] == 100.0 and acc.loc["familiar", "n"] == 650
    assert acc.loc["me", "accuracy"] == 100.0 and acc.loc["me", "n"] == 950
    me = preds[preds["test"] == "me"]
    assert np.allclose(me["score_pos"], 1.0) and np.allclose(me["score_neg"], 1 / np.sqrt(13))


def test_novel_words_mapped_onto_familiar_concepts():
    """Novel audio sits on familiar concept f(k): the choice is right unless the negative is of f(k)."""
    items = item_table()
    f = {c: FAMILIAR[i % 13] for i, c in enumerate(NOVEL)}

    def place(r):
        if r.kind == "familiar":
            return unit(FAMILIAR.index(r.concept))
        return unit(FAMILIAR.index(f[r.concept])) if r.modality == "audio" else BETWEEN

    emb = embed(items, place)
    eps = episodes(items, "me")
    neg_concept = eps["neg_id"].str.split("-").str[1]
    expected = 100.0 * np.mean(neg_concept.to_numpy() != eps["concept"].map(f).to_numpy())
    got = accuracy_summary(score_episodes(eps, emb))["accuracy"].item()
    assert got == pytest.approx(expected)
    assert 85 < got < 99  # about 12/13: a negative of f(k) comes up 1 time in 13


def test_collapsed_model_scores_zero_not_chance():
    items = item_table()
    emb = embed(items, lambda r: unit(0))
    assert accuracy_summary(score_episodes(episodes(items, "me"), emb))["accuracy"].item() == 0.0


def cluster_point(direction: int, spread: float, k: int) -> np.ndarray:
    """Point k of a cluster around e_direction: cos·e_d ± sin·e_j, with ± pairs so the centroid is cos·e_d."""
    j = 40 + (k // 2) % 20
    sign = 1 if k % 2 == 0 else -1
    return np.cos(spread) * unit(direction) + sign * np.sin(spread) * unit(j)


def test_variance_tight_familiar_spread_novel():
    n = 6
    items = item_table(n_audio=n, n_image=n)
    tight, wide = 0.1, 0.6

    def place(r):
        k = int(r.id.rsplit("-", 1)[1])
        if r.kind == "familiar":
            return cluster_point(FAMILIAR.index(r.concept), tight, k)
        return cluster_point(13 + NOVEL.index(r.concept), wide, k)

    got = variance_rows(embed(items, place)).set_index(["modality", "kind", "scope"])["variance"]
    for kind, angle, k in (("familiar", tight, 13), ("novel", wide, 19)):
        within = n * np.sin(angle) ** 2 / (n - 1)
        overall = (k * n * np.sin(angle) ** 2 + k * n * np.cos(angle) ** 2 * (1 - 1 / k)) / (k * n - 1)
        for modality in ("audio", "image"):
            assert got[(modality, kind, "within_concept")] == pytest.approx(within, rel=1e-5)
            assert got[(modality, kind, "all")] == pytest.approx(overall, rel=1e-5)


def test_trace_covariance_matches_numpy_and_subsample_caps():
    x = np.random.default_rng(0).normal(size=(50, 7))
    assert trace_covariance(x) == pytest.approx(np.trace(np.cov(x, rowvar=False, ddof=1)))
    items = item_table(n_audio=40, n_image=35, langs=("en", "fr"))
    rows = subsample(items, 30, seed=0)
    picked = items.loc[rows]
    assert picked.groupby(["modality", "concept", "lang"]).size().max() == 30
    assert picked.groupby(["modality", "concept", "lang"]).size().min() == 30
    # the choice for one language does not depend on which other languages are present
    en_only = items[items["lang"].isin(["en", ""])]
    assert set(items.loc[rows].query("lang == 'en'")["id"]) == set(en_only.loc[subsample(en_only, 30, seed=0)].query("lang == 'en'")["id"])


def test_translation_probe_known_accuracy():
    """Familiar words share a place across languages; novel fr words sit on en's concept π(k)."""
    items = item_table(n_audio=4, n_image=0, langs=("en", "fr"))
    items = items[items["modality"] == "audio"].reset_index(drop=True)
    fixed = 5
    perm = {c: NOVEL[i] if i < fixed else NOVEL[fixed + (i - fixed + 1) % (19 - fixed)] for i, c in enumerate(NOVEL)}
    rng = np.random.default_rng(0)

    def place(r):
        if r.kind == "familiar":
            base = unit(FAMILIAR.index(r.concept))
        else:
            base = unit(13 + NOVEL.index(perm[r.concept] if r.lang == "fr" else r.concept))
        return base + 0.05 * rng.normal(size=DIM)

    vectors = l2_normalise(np.stack([place(r) for r in items.itertuples()]))
    out = translation_probe(vectors, items, ["en", "fr"], "model").set_index(["query_lang", "kind"])
    for lang in ("en", "fr"):
        assert out.loc[(lang, "familiar"), "accuracy"] == 100.0
        assert out.loc[(lang, "novel"), "accuracy"] == pytest.approx(100 * fixed / 19)
        assert out.loc[(lang, "novel"), "chance"] == pytest.approx(100 / 19)
        assert out.loc[(lang, "familiar"), "chance"] == pytest.approx(100 / 13)


def test_modality_gap_and_pca_separate_the_modalities():
    from analyse.embeddings import modality_gap, pca_projection

    items = item_table(n_audio=3, n_image=3)
    rng = np.random.default_rng(0)
    # audio around e_60, images around e_61: the centroids are sqrt(2) apart (up to the noise)
    emb = embed(items, lambda r: unit(60 if r.modality == "audio" else 61) + 0.01 * rng.normal(size=DIM))
    gap = modality_gap(emb).set_index("kind")
    assert gap.loc["all", "modality_gap"] == pytest.approx(np.sqrt(2), abs=0.01)
    assert gap.loc["novel", "n_audio"] == 19 * 3 and gap.loc["familiar", "n_image"] == 13 * 3
    frame, ratio = pca_projection(emb)
    audio_x, image_x = frame.loc[frame["modality"] == "audio", "x"], frame.loc[frame["modality"] == "image", "x"]
    assert ratio[0] > 0.9 and (np.sign(audio_x).nunique(), np.sign(image_x).nunique()) == (1, 1)
    assert np.sign(audio_x.iloc[0]) != np.sign(image_x.iloc[0])


def test_variance_summary_over_seeds():
    from analyse.variance import bootstrap_mean_ci, summarise

    assert bootstrap_mean_ci(np.array([0.3])) == (0.3, 0.3)
    low, high = bootstrap_mean_ci(np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert 0.1 <= low < 0.3 < high <= 0.5
    per_run = pd.DataFrame([dict(train_langs="en", width=64, seed=s, modality="audio", kind="novel", scope="all", variance=v)
                            for s, v in enumerate([0.2, 0.4])])
    row = summarise(per_run).iloc[0]
    assert row["mean"] == pytest.approx(0.3) and row["n_seeds"] == 2 and 0.2 <= row["ci_low"] <= row["ci_high"] <= 0.4


def test_exported_embeddings_round_trip(tmp_path):
    from analyse.export import load_embedded, save_embedded

    items = item_table(n_audio=2, n_image=2)
    emb = embed(items, lambda r: np.random.default_rng(len(r.id)).normal(size=DIM))
    save_embedded(emb, tmp_path, "abc")
    loaded, sha = load_embedded(tmp_path)
    assert sha == "abc" and np.array_equal(loaded.vectors, emb.vectors)
    pd.testing.assert_frame_equal(loaded.items, emb.items[loaded.items.columns])
    # an items.csv from another export does not pass for this one
    emb.items.iloc[::-1].to_csv(tmp_path / "items.csv", index=False)
    assert load_embedded(tmp_path) is None
