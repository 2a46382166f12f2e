"""A paired test of two trained models that counts both training seeds and test trials as random.

Two models (say bilingual and monolingual) answered the same trials, each with several training seeds:
outcome matrices `a` (seeds_a × trials) and `b` (seeds_b × trials), column t being the same trial in both.
The question a reader asks is whether *another set of training runs, tested on other trials like these*,
would differ, so the uncertainty of the mean difference must include the seed-to-seed variation of each
model as well as the trial-to-trial variation. `hierarchical_bootstrap` resamples both levels: in every
bootstrap draw, the trials are drawn with replacement (the same draw for both models, which keeps the
pairing and lets item difficulty cancel), and each model's seeds are drawn with replacement,
independently (seed k of one model has nothing to do with seed k of the other).

Two details make it honest with few seeds (docs/analyses.md has the derivation and a power study):
- Resampling n seeds with replacement has a variance of the seed mean that is (n − 1)/n of the usual
  unbiased estimate (one half with 2 seeds). Each seed's row is therefore moved away from the seed mean
  by √(n/(n − 1)) before resampling (the "modified residuals" of Davison & Hinkley, 1997, ch. 3), so that
  the bootstrap variance of the seed part is unbiased at any number of seeds. The observed effect is
  unchanged: only deviations from the seed mean are scaled.
- The two-sided p-value is the percentile one, p = min(1, 2 · (1 + min(#{θ* ≤ 0}, #{θ* ≥ 0})) / (B + 1))
  over the B draws θ*, ties at 0 counted on both sides: p < α exactly when 0 lies outside the (1 − α) percentile interval
  reported beside it, so the decision and the interval never disagree.

A model with a single seed carries no information about seed-to-seed variation, so the test refuses
it (`StatsError`) rather than quietly reducing to a trial-level bootstrap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CELLS_PER_BATCH = 4_000_000  # resamples × trials held at once: ~32 MB of counts, whatever the trial count


class StatsError(ValueError):
    """The outcome matrices cannot be tested as given (shape, missing values, a single seed)."""


@dataclass(frozen=True)
class PairedBootstrap:
    """Mean difference a − b (in the outcomes' unit), its bootstrap interval, standard error and p-value."""

    effect: float
    ci_low: float
    ci_high: float
    se: float
    p_value: float
    n_resamples: int


def _outcomes(name: str, values) -> np.ndarray:
    """A (seeds, trials) float matrix with at least 2 seeds and no missing value, or a StatsError naming it."""
    matrix = np.asarray(values, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise StatsError(f"{name}: expected a (seeds, trials) matrix with at least one trial, got shape {matrix.shape}")
    if matrix.shape[0] < 2:
        raise StatsError(f"{name}: {matrix.shape[0]} seed; seed-to-seed variation needs at least 2 seeds per model "
                         "(train more seeds, or use the trial-level test for claims about these trained models only)")
    if not np.all(np.isfinite(matrix)):
        raise StatsError(f"{name}: missing or infinite outcomes; every seed must answer every trial")
    return matrix


def spread_seeds(matrix: np.ndarray) -> np.ndarray:
    """Rows moved away from the seed mean by √(n/(n−1)): makes the bootstrap variance of the seed mean unbiased."""
    n = matrix.shape[0]
    centre = matrix.mean(axis=0)
    return centre + np.sqrt(n / (n - 1)) * (matrix - centre)


def hierarchical_bootstrap(a, b, rng: np.random.Generator, n_resamples: int = 9999,
                           confidence: float = 0.95) -> PairedBootstrap:
    """Two-level (seeds, then trials) paired bootstrap of mean(a) − mean(b); see the module docstring.

    `a` and `b` are (seeds, trials) outcome matrices on the same trials (0/1 correctness, or any score);
    the effect is the difference of the two grand means. Vectorised: each batch draws trial counts for
    many resamples at once and reduces them with one matrix product per model.
    """
    a, b = _outcomes("a", a), _outcomes("b", b)
    if a.shape[1] != b.shape[1]:
        raise StatsError(f"a and b answered {a.shape[1]} and {b.shape[1]} trials; both must answer the same trials")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise StatsError(f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples} and {confidence}")
    n_trials = a.shape[1]
    a_mod, b_mod = spread_seeds(a), spread_seeds(b)
    batch = max(1, min(n_resamples, _CELLS_PER_BATCH // n_trials))
    draws = []
    for start in range(0, n_resamples, batch):
        size = min(batch, n_resamples - start)
        picks = rng.integers(0, n_trials, size=(size, n_trials), dtype=np.int32)  # < 2^31 cells per batch
        picks += (n_trials * np.arange(size, dtype=np.int32))[:, None]
        counts = np.bincount(picks.ravel(), minlength=size * n_trials).reshape(size, n_trials).astype(float)
        draws.append(_seed_means(counts @ a_mod.T, rng) - _seed_means(counts @ b_mod.T, rng))
    stat = np.concatenate(draws) / n_trials
    tail = (1 - confidence) / 2
    low, high = np.quantile(stat, [tail, 1 - tail])
    tolerance = 1e-12 * max(1.0, float(np.abs(stat).max()))  # a draw that is 0 up to rounding counts as a tie
    below, above = np.sum(stat <= tolerance), np.sum(stat >= -tolerance)
    p_value = min(1.0, 2 * (1 + min(below, above)) / (1 + n_resamples))
    return PairedBootstrap(effect=float(a.mean() - b.mean()), ci_low=float(low), ci_high=float(high),
                           se=float(stat.std(ddof=1)) if n_resamples > 1 else float("nan"),
                           p_value=float(p_value), n_resamples=n_resamples)


def _seed_means(per_seed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mean over a with-replacement draw of the seeds (columns), one draw per resample (row)."""
    n_seeds = per_seed.shape[1]
    picks = rng.integers(0, n_seeds, size=per_seed.shape)
    return np.take_along_axis(per_seed, picks, axis=1).mean(axis=1)
