"""Bilingual versus monolingual models on identical test trials: a test that counts seeds, and paired permutation tests.

For a test language L and width W, the monolingual model (L) and a bilingual model (L + P) answered the
same episodes (drawn once per language), each with several training seeds. The headline test is the
hierarchical bootstrap of analyse.stats (seeds of each model and the shared trials resampled with
replacement): its p-value (`p_hier`) and interval describe training runs like these on trials like
these, which is the claim about bilingualism; Holm's correction over the family of comparisons in one
call (`p_holm`, family-wise error) decides `significant`, and Benjamini-Hochberg gives `q_bh` (false
discovery rate), both on `p_hier`.

Two secondary tests stay beside it. The trial-level test (`p_value`): per trial t, average correctness
over each model's seeds and take d_t = bilingual - monolingual; a sign-flip permutation test on the mean
of d_t (as scipy.stats.permutation_test with permutation_type="samples"). It uses the pairing and needs
no distributional assumption for 0/1 outcomes, but treats the trained models as fixed: training-seed
variation enters only through the seed averaging, so it answers "do these trained models differ?".
The seed-level test (`p_seed_level`): an exact permutation test on the per-seed accuracies (training
runs as the unit), which has little power with few seeds. p-values are two-sided. The paper's expected
direction is a weaker ME bias in bilingual models: d < 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analyse.stats import hierarchical_bootstrap

COMPARE_COLUMNS = [
    "test", "test_lang", "width", "bilingual", "monolingual", "n_trials", "n_seeds_bilingual", "n_seeds_monolingual",
    "bilingual_acc", "monolingual_acc", "diff_pp", "ci_low_pp", "ci_high_pp", "direction", "expected_direction",
    "p_value", "p_holm", "q_bh", "significant", "p_seed_level", "p_hier", "ci_low_hier", "ci_high_hier", "decision",
]
_FAMILY_COLUMNS = ("p_holm", "q_bh", "significant", "decision")  # need every comparison of the call


class CompareError(ValueError):
    """The runs cannot be compared (different episodes, a missing monolingual model)."""


@dataclass(frozen=True)
class CompareOptions:
    """Resampling sizes and the seed that makes p-values and intervals reproducible.

    `n_resamples` is the size of both the trial-level permutation test and the hierarchical bootstrap;
    `n_bootstrap` that of the trial-level interval (`ci_low_pp`, `ci_high_pp`).
    """

    n_resamples: int = 9999
    n_bootstrap: int = 2000
    alpha: float = 0.05
    seed: int = 0


def trial_matrix(predictions: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Correctness as (seeds, trials) for one model on one test language, with the trials' identity.

    Raises when the seeds answered different trials: pairing would then be meaningless.
    """
    key = ["episode", "query_id", "pos_id", "neg_id"]
    seeds = sorted(predictions["seed"].unique())
    first = None
    rows = []
    for seed in seeds:
        one = predictions[predictions["seed"] == seed].sort_values("episode")
        if first is None:
            first = one[key].reset_index(drop=True)
        elif not one[key].reset_index(drop=True).equals(first):
            raise CompareError(f"seed {seed} answered other episodes than seed {seeds[0]}; rescore all runs on the same episode files")
        rows.append(one["correct"].to_numpy(dtype=float))
    return np.vstack(rows), first


def sign_flip_test(diff: np.ndarray, n_resamples: int, rng: np.random.Generator, batch: int = 2000) -> float:
    """Two-sided Monte-Carlo p-value of mean(diff) under independent random sign flips of every element.

    The same test as scipy.stats.permutation_test(permutation_type="samples") on one sample, with its
    p = (1 + #{|null| >= |observed|}) / (1 + n_resamples), written as a matrix product because scipy's
    generic resampler is ~15 times slower here and a study runs dozens of these.
    """
    diff = np.asarray(diff, dtype=float)
    if np.all(diff == 0):
        return 1.0
    observed = abs(diff.mean())
    tolerance = 1e-12 * max(1.0, observed)  # flips that reproduce the observed value exactly count as extreme
    extreme, done = 0, 0
    while done < n_resamples:
        size = min(batch, n_resamples - done)
        signs = rng.integers(0, 2, size=(size, len(diff)), dtype=np.int8) * 2 - 1
        extreme += int(np.sum(np.abs(signs @ diff) / len(diff) >= observed - tolerance))
        done += size
    return (1 + extreme) / (1 + n_resamples)


def seed_level_test(acc_a: np.ndarray, acc_b: np.ndarray, rng: np.random.Generator) -> float:
    """Two-sided exact permutation test of the difference in mean per-seed accuracy (NaN under 2 seeds each)."""
    if len(acc_a) < 2 or len(acc_b) < 2:
        return float("nan")
    if np.allclose(np.concatenate([acc_a, acc_b]), acc_a[0]):
        return 1.0
    result = stats.permutation_test(
        (acc_a, acc_b), lambda a, b, axis: np.mean(a, axis=axis) - np.mean(b, axis=axis),
        permutation_type="independent", n_resamples=100_000, alternative="two-sided", vectorized=True, random_state=rng,
    )
    return float(result.pvalue)


def _over_family(p: np.ndarray, adjust) -> np.ndarray:
    """`adjust` applied to the non-NaN p-values only: a comparison that was not tested is not in the family."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = adjust(p[ok])
    return out


def _holm_values(values: np.ndarray) -> np.ndarray:
    m = len(values)
    order = np.argsort(values)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * values[order]))
    back = np.empty(m)
    back[order] = adjusted
    return back


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaNs stay NaN and do not count in the family)."""
    return _over_family(p, _holm_values)


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (scipy's; NaNs stay NaN and do not count in the family)."""
    return _over_family(p, lambda values: stats.false_discovery_control(values, method="bh"))


def compare_pair(bi: pd.DataFrame, mono: pd.DataFrame, options: CompareOptions, rng: np.random.Generator) -> dict:
    """One comparison: effect (percentage points, 95 % paired bootstrap CI over trials), p-values.

    The hierarchical columns are NaN when a model has a single seed: nothing then says how much another
    training run would differ, and such a comparison is reported as not tested instead of guessed.
    """
    c_bi, trials_bi = trial_matrix(bi)
    c_mono, trials_mono = trial_matrix(mono)
    if not trials_bi.equals(trials_mono):
        raise CompareError("the bilingual and monolingual runs answered different episodes; score both on the same episode files")
    diff = c_bi.mean(axis=0) - c_mono.mean(axis=0)
    effect = 100.0 * diff.mean()
    if np.all(diff == diff[0]):
        ci = (effect, effect)
    else:
        boot = stats.bootstrap((diff,), np.mean, n_resamples=options.n_bootstrap, method="percentile",
                               vectorized=True, random_state=rng)
        ci = (100.0 * boot.confidence_interval.low, 100.0 * boot.confidence_interval.high)
    result = {
        "n_trials": len(diff),
        "n_seeds_bilingual": len(c_bi),
        "n_seeds_monolingual": len(c_mono),
        "bilingual_acc": 100.0 * c_bi.mean(),
        "monolingual_acc": 100.0 * c_mono.mean(),
        "diff_pp": effect,
        "ci_low_pp": ci[0],
        "ci_high_pp": ci[1],
        "direction": "bilingual lower" if effect < 0 else ("bilingual higher" if effect > 0 else "equal"),
        "expected_direction": bool(effect < 0),
        "p_value": sign_flip_test(diff, options.n_resamples, rng),
        "p_seed_level": seed_level_test(100 * c_bi.mean(axis=1), 100 * c_mono.mean(axis=1), rng),
    }
    if min(len(c_bi), len(c_mono)) >= 2:
        hier = hierarchical_bootstrap(c_bi, c_mono, rng, n_resamples=options.n_resamples, confidence=1 - options.alpha)
        return {**result, "p_hier": hier.p_value, "ci_low_hier": 100.0 * hier.ci_low, "ci_high_hier": 100.0 * hier.ci_high}
    return {**result, "p_hier": float("nan"), "ci_low_hier": float("nan"), "ci_high_hier": float("nan")}


def decision(diff_pp: float, p_hier: float, significant: bool) -> str:
    """The row's verdict in words, on the headline test: direction, and whether Holm's correction keeps it."""
    if np.isnan(p_hier):
        return "not tested (a model has 1 seed)"
    if diff_pp == 0:
        return "equal"
    word = "lower" if diff_pp < 0 else "higher"
    return f"{word}, significant" if significant else f"{word}, not significant"


def compare_models(predictions: pd.DataFrame, test: str = "me", options: CompareOptions = CompareOptions()) -> pd.DataFrame:
    """Every bilingual model against the monolingual model of each of its languages, per width.

    `predictions` stacks the runs' predictions with the columns train_langs, width, seed, test, lang,
    episode, query_id, pos_id, neg_id, correct. Comparisons whose monolingual model is absent are
    skipped (a study may hold only bilingual runs); an empty frame comes back when none is possible.
    """
    data = predictions[predictions["test"] == test]
    rng = np.random.default_rng(options.seed)
    rows = []
    for (lang, width), group in data.groupby(["lang", "width"], sort=True):
        mono = group[group["train_langs"] == lang]
        if mono.empty:
            continue
        bilinguals = [t for t in set(group["train_langs"]) if not t.endswith("-eq") and len(t.split("+")) == 2]
        for train_langs in sorted(bilinguals):
            result = compare_pair(group[group["train_langs"] == train_langs], mono, options, rng)
            rows.append({"test": test, "test_lang": lang, "width": int(width), "bilingual": train_langs, "monolingual": lang, **result})
    out = pd.DataFrame(rows, columns=[c for c in COMPARE_COLUMNS if c not in _FAMILY_COLUMNS])
    if out.empty:
        return pd.DataFrame(columns=COMPARE_COLUMNS)
    p_hier = out["p_hier"].to_numpy(dtype=float)
    out["p_holm"] = holm(p_hier)
    out["q_bh"] = bh(p_hier)
    out["significant"] = out["p_holm"] < options.alpha  # NaN (not tested) compares False
    out["decision"] = [decision(d, p, s) for d, p, s in zip(out["diff_pp"], p_hier, out["significant"])]
    return out[COMPARE_COLUMNS]


# ------------------------------------------------------------------------------------------ binding to runs
def study_compare(runs, out_dir, test: str = "me", options: CompareOptions = CompareOptions()) -> dict:
    """comparisons.csv (or comparisons-familiar.csv) from the runs' predictions.csv files."""
    from analyse.tests import collect
    from cache.atomic import write_csv

    table = compare_models(collect(runs, "predictions.csv"), test=test, options=options)
    name = "comparisons.csv" if test == "me" else f"comparisons-{test}.csv"
    return {"comparisons": write_csv(out_dir / name, table)}
