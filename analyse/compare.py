"""Bilingual versus monolingual models on identical test trials: paired permutation tests.

For a test language L and width W, the monolingual model (L) and a bilingual model (L + P) answered the
same episodes (drawn once per language). Per trial t we average correctness over each model's seeds and
take the difference d_t = bilingual - monolingual. The primary test is a sign-flip permutation test on
the mean of d_t (as scipy.stats.permutation_test with permutation_type="samples"): under the null hypothesis
that the two models are exchangeable on every trial, each d_t is as likely to have either sign. It
uses the pairing (each trial is its own control, so item difficulty cancels), needs no distributional
assumption for 0/1 outcomes, and is exact up to Monte-Carlo error. Its inference is about these trained
models on the population of trials; training-seed variation enters only through the seed averaging.
So each comparison also reports a seed-level exact permutation test on the per-seed accuracies
(training runs as the unit), which generalises over seeds but has little power with few seeds.
p-values are two-sided; the family of comparisons in one call is corrected with Holm's method
(family-wise error) and with Benjamini-Hochberg (false discovery rate). The paper's expected direction
is a weaker ME bias in bilingual models: d < 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

COMPARE_COLUMNS = [
    "test", "test_lang", "width", "bilingual", "monolingual", "n_trials", "n_seeds_bilingual", "n_seeds_monolingual",
    "bilingual_acc", "monolingual_acc", "diff_pp", "ci_low_pp", "ci_high_pp", "direction", "expected_direction",
    "p_value", "p_holm", "q_bh", "significant", "p_seed_level",
]


class CompareError(ValueError):
    """The runs cannot be compared (different episodes, a missing monolingual model)."""


@dataclass(frozen=True)
class CompareOptions:
    """Resampling sizes and the seed that makes p-values and intervals reproducible."""

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


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaNs stay NaN and do not count in the family)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    values = p[ok]
    m = len(values)
    if m == 0:
        return out
    order = np.argsort(values)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * values[order]))
    back = np.empty(m)
    back[order] = adjusted
    out[ok] = back
    return out


def compare_pair(bi: pd.DataFrame, mono: pd.DataFrame, options: CompareOptions, rng: np.random.Generator) -> dict:
    """One comparison: effect (percentage points, 95 % paired bootstrap CI over trials), p-values."""
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
    return {
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
    out = pd.DataFrame(rows, columns=[c for c in COMPARE_COLUMNS if c not in ("p_holm", "q_bh", "significant")] )
    if out.empty:
        return pd.DataFrame(columns=COMPARE_COLUMNS)
    out["p_holm"] = holm(out["p_value"].to_numpy())
    out["q_bh"] = stats.false_discovery_control(out["p_value"].to_numpy(), method="bh")
    out["significant"] = out["p_holm"] < options.alpha
    return out[COMPARE_COLUMNS]


# ------------------------------------------------------------------------------------------ binding to runs
def study_compare(runs, out_dir, test: str = "me", options: CompareOptions = CompareOptions()) -> dict:
    """comparisons.csv (or comparisons-familiar.csv) from the runs' predictions.csv files."""
    from analyse.study import write_csv
    from analyse.tests import collect

    table = compare_models(collect(runs, "predictions.csv"), test=test, options=options)
    name = "comparisons.csv" if test == "me" else f"comparisons-{test}.csv"
    return {"comparisons": write_csv(table, out_dir / name)}
