"""Table 1 statistics and the paired comparisons on constructed data."""
import numpy as np
import pandas as pd
import pytest

from analyse.compare import CompareOptions, compare_models, holm
from analyse.table import TABLE_COLUMNS, table1, to_latex, to_markdown


def accuracies():
    rows = []
    for langs, lang, fam, me in (("en", "en", [99, 98, 100], [66, 68, 64]), ("en+fr", "en", [99, 99, 99], [60, 62, 58]),
                                 ("en+fr", "fr", [97, 98, 99], [70, 70, 70]), ("fr", "fr", [90, 91, 92], [67, 69, 71])):
        for seed, (f, m) in enumerate(zip(fam, me)):
            rows += [dict(run=f"{langs}-w64-s{seed}", train_langs=langs, width=64, seed=seed, test="familiar", lang=lang, n=650, accuracy=f),
                     dict(run=f"{langs}-w64-s{seed}", train_langs=langs, width=64, seed=seed, test="me", lang=lang, n=950, accuracy=m)]
    return pd.DataFrame(rows)


def test_table1_mean_and_standard_error():
    t = table1(accuracies())
    assert list(t.columns) == TABLE_COLUMNS
    assert list(zip(t["train_langs"], t["test_lang"])) == [("en", "en"), ("en+fr", "en"), ("fr", "fr"), ("en+fr", "fr")]
    row = t.iloc[0]
    assert row["me_mean"] == pytest.approx(66.0)
    assert row["me_se"] == pytest.approx(2.0 / np.sqrt(3))  # std(66, 68, 64; ddof=1) = 2
    assert row["familiar_se"] == pytest.approx(1.0 / np.sqrt(3))
    assert t.iloc[3]["me_se"] == 0.0 and row["n_seeds"] == 3
    md = to_markdown(t)
    assert "| Bilingual: FR, EN | FR | 64 | 98.0 ± 0.6 | 70.0 ± 0.0 | 3 |" in md
    assert r"66.0$\pm$1.2" in to_latex(t)


def test_table1_single_seed_has_empty_se_and_duplicate_seed_is_refused():
    acc = accuracies()
    t = table1(acc[acc["seed"] == 0])
    assert t["me_se"].isna().all() and (t["n_seeds"] == 1).all()
    with pytest.raises(ValueError, match="share a seed"):
        table1(pd.concat([acc, acc[acc["seed"] == 0]]))


def predictions(mono_correct: np.ndarray, bi_correct: np.ndarray, width=64) -> pd.DataFrame:
    """Per-trial predictions of an en model and an en+fr model (rows = seeds) on the same trials."""
    rows = []
    for langs, correct in (("en", mono_correct), ("en+fr", bi_correct)):
        for seed, c in enumerate(correct):
            rows.append(pd.DataFrame(dict(train_langs=langs, width=width, seed=seed, test="me", lang="en", episode=np.arange(len(c)),
                                          query_id=[f"q{i}" for i in range(len(c))], pos_id="p", neg_id="n", correct=c)))
    return pd.concat(rows, ignore_index=True)


def test_compare_detects_a_known_drop():
    rng = np.random.default_rng(0)
    base = (rng.random(950) < 0.7).astype(int)
    mono = np.vstack([base, base])
    bi = mono.copy()
    flipped = rng.choice(np.flatnonzero(base), size=95, replace=False)  # 10 % of trials lost by both seeds
    bi[:, flipped] = 0
    out = compare_models(predictions(mono, bi), options=CompareOptions(n_resamples=2000, n_bootstrap=500))
    row = out.iloc[0]
    assert row["diff_pp"] == pytest.approx(-10.0)
    assert row["ci_low_pp"] < -10 < row["ci_high_pp"] < 0
    assert row["direction"] == "bilingual lower" and row["expected_direction"]
    assert row["p_value"] < 0.001 and row["significant"]
    assert row["n_trials"] == 950 and row["n_seeds_bilingual"] == 2


def test_compare_identical_models_is_not_significant_and_mismatch_is_refused():
    rng = np.random.default_rng(1)
    c = (rng.random((2, 300)) < 0.6).astype(int)
    out = compare_models(predictions(c, c), options=CompareOptions(n_resamples=500, n_bootstrap=200))
    assert out.iloc[0]["diff_pp"] == 0 and out.iloc[0]["p_value"] == 1.0 and not out.iloc[0]["significant"]
    bad = predictions(c, c)
    bad.loc[(bad["train_langs"] == "en+fr") & (bad["episode"] == 3), "query_id"] = "other"
    with pytest.raises(ValueError, match="answered other episodes|different episodes"):
        compare_models(bad, options=CompareOptions(n_resamples=100, n_bootstrap=100))


def test_holm_matches_hand_computation():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 → ×4, ×3, ×2, ×1 = 0.04, 0.09, 0.08→0.09 (monotone), 0.5
    assert np.allclose(holm(p), [0.04, 0.09, 0.09, np.nan, 0.5], equal_nan=True)


def test_sign_flip_test_agrees_with_scipy_exact_permutation():
    from scipy import stats

    from analyse.compare import sign_flip_test

    diff = np.array([1, 1, 0.5, 1, -0.5, 1, 0, 1, 0.5, -1, 1, 0.5])
    exact = stats.permutation_test((diff,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                   alternative="two-sided").pvalue  # all 2^12 sign patterns
    ours = sign_flip_test(diff, 40_000, np.random.default_rng(0))
    assert 0.005 < exact < 0.2
    assert ours == pytest.approx(exact, abs=0.005)


def test_headline_decision_counts_seeds_and_keeps_the_trial_level_test_beside_it():
    # Monolingual seeds at 70 % and 62 %, bilingual seeds at 64 % and 60 %: a 4-point drop on the trials, but the
    # monolingual seeds alone are 8 points apart, so another pair of training runs could well reverse it.
    # One uniform per trial for every seed: the easiest trials are right for every model (a strong pairing).
    u = np.random.default_rng(5).random(950)

    def seed(acc):
        return (u < acc).astype(int)

    out = compare_models(predictions(np.vstack([seed(0.70), seed(0.62)]), np.vstack([seed(0.64), seed(0.60)])),
                         options=CompareOptions(n_resamples=2000, n_bootstrap=500))
    row = out.iloc[0]
    assert list(out.columns[:20]) == ["test", "test_lang", "width", "bilingual", "monolingual", "n_trials",
                                      "n_seeds_bilingual", "n_seeds_monolingual", "bilingual_acc", "monolingual_acc",
                                      "diff_pp", "ci_low_pp", "ci_high_pp", "direction", "expected_direction", "p_value",
                                      "p_holm", "q_bh", "significant", "p_seed_level"]
    assert row["p_value"] < 0.01  # the trial-level test treats the four trained models as fixed
    assert row["p_hier"] > 0.05 and not row["significant"] and row["decision"] == "lower, not significant"
    assert row["ci_low_hier"] < 0 < row["ci_high_hier"]
    assert row["ci_high_hier"] - row["ci_low_hier"] > row["ci_high_pp"] - row["ci_low_pp"]
    assert row["p_holm"] == pytest.approx(row["p_hier"]) and row["q_bh"] == pytest.approx(row["p_hier"])  # family of one


def test_holm_over_the_headline_test_decides_and_a_single_seed_is_not_tested():
    rng = np.random.default_rng(6)
    base = (rng.random((2, 950)) < 0.7).astype(int)
    drop = base.copy()
    drop[:, rng.choice(950, size=120, replace=False)] = 0
    clear = predictions(base, drop, width=64)
    single = predictions(base[:1], drop[:1], width=128)
    out = compare_models(pd.concat([clear, single]), options=CompareOptions(n_resamples=2000, n_bootstrap=200))
    wide, narrow = out.set_index("width").loc[128], out.set_index("width").loc[64]
    assert narrow["p_hier"] < 0.01 and narrow["significant"] and narrow["decision"] == "lower, significant"
    assert narrow["ci_high_hier"] < 0
    assert np.isnan(wide["p_hier"]) and np.isnan(wide["p_holm"]) and np.isnan(wide["ci_low_hier"])
    assert not wide["significant"] and wide["decision"] == "not tested (a model has 1 seed)"
    assert wide["p_value"] < 0.001  # the trial-level column is still there for these trained models
    assert narrow["p_holm"] == pytest.approx(narrow["p_hier"])  # the untested row is outside the family


def test_condition_runs_are_labelled_after_their_languages():
    """An exposure or equal-steps run is its own row, named by its languages and then its condition."""
    from analyse.table import display_rows

    table = pd.DataFrame([
        {"train_langs": tl, "test_lang": "fr", "width": 128, "familiar_mean": 90.0, "familiar_se": 1.0,
         "me_mean": 55.0, "me_se": 1.0, "n_seeds": 2} for tl in ("fr", "fr-eq", "en+fr", "en+fr-r75")])
    labels = [row[0] for row in display_rows(table)]
    assert labels == ["Monolingual: FR", "Monolingual: FR (eq)", "Bilingual: FR, EN", "Bilingual: FR, EN (r75)"]
