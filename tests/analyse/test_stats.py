"""The hierarchical (seeds, then trials) paired bootstrap: known answers, calibration, refusals."""
import numpy as np
import pytest

from analyse.compare import sign_flip_test
from analyse.stats import StatsError, hierarchical_bootstrap


def test_seed_part_is_known_exactly_when_trials_do_not_vary():
    # Every trial of a seed has the same value, so only the seeds' draw matters. Model a's seeds, 0.6 and 0.8,
    # are moved to 0.7 ± 0.1·√2 (unbiased seed variance with 2 seeds); their resampled mean is 0.7 − 0.1·√2,
    # 0.7 or 0.7 + 0.1·√2 with chances 1/4, 1/2, 1/4; b is 0.5 on every seed.
    a = np.repeat([[0.6], [0.8]], 40, axis=1)
    b = np.full((2, 40), 0.5)
    result = hierarchical_bootstrap(a, b, np.random.default_rng(0), n_resamples=4000)
    assert result.effect == pytest.approx(0.2)
    assert result.ci_low == pytest.approx(0.2 - 0.1 * np.sqrt(2))
    assert result.ci_high == pytest.approx(0.2 + 0.1 * np.sqrt(2))
    assert result.se == pytest.approx(0.1, rel=0.05)  # var = 2 · (1/4) · (0.1·√2)² = 0.01
    assert result.p_value == pytest.approx(2 / 4001)  # no draw reaches 0


def test_seed_variance_is_unbiased_at_five_seeds():
    acc = np.array([0.62, 0.70, 0.66, 0.58, 0.69])
    a = np.repeat(acc[:, None], 30, axis=1)
    b = np.full((3, 30), 0.6)
    result = hierarchical_bootstrap(a, b, np.random.default_rng(1), n_resamples=40_000)
    assert result.se == pytest.approx(np.std(acc, ddof=1) / np.sqrt(5), rel=0.03)


def test_without_seed_variation_it_is_the_paired_trial_bootstrap():
    rng = np.random.default_rng(2)
    a_trials = (rng.random(500) < 0.6).astype(float)
    b_trials = (rng.random(500) < 0.7).astype(float)
    a, b = np.vstack([a_trials] * 3), np.vstack([b_trials] * 2)  # identical seeds
    result = hierarchical_bootstrap(a, b, rng, n_resamples=20_000)
    d = a_trials - b_trials
    assert result.effect == pytest.approx(d.mean())
    assert result.se == pytest.approx(d.std() / np.sqrt(len(d)), rel=0.03)
    assert result.ci_low < d.mean() < result.ci_high


def simulated_null(rng: np.random.Generator, seeds: int, seed_sd: float, trials: int = 300):
    """Two models with the same expected accuracy whose seeds differ by seed_sd (fraction) around it."""
    difficulty = rng.uniform(0.3, 0.95, trials)
    pair = []
    for _ in range(2):
        offsets = rng.normal(0.0, seed_sd, seeds)[:, None]
        pair.append((rng.random((seeds, trials)) < np.clip(difficulty + offsets, 0, 1)).astype(float))
    return pair


def test_type_one_error_counts_seed_variation_where_the_trial_level_test_does_not():
    rng = np.random.default_rng(3)
    p_hier, p_trial = [], []
    for _ in range(80):
        a, b = simulated_null(rng, seeds=5, seed_sd=0.04)
        p_hier.append(hierarchical_bootstrap(a, b, rng, n_resamples=999).p_value)
        p_trial.append(sign_flip_test(a.mean(axis=0) - b.mean(axis=0), 999, rng))
    assert np.mean(np.array(p_trial) < 0.05) > 0.3  # the seeds' spread read as an effect
    assert np.mean(np.array(p_hier) < 0.05) <= 0.1


def test_identical_models_give_p_one_and_a_seeded_answer_repeats():
    c = (np.random.default_rng(4).random((2, 100)) < 0.5).astype(float)
    same = hierarchical_bootstrap(c, c[::-1], np.random.default_rng(0), n_resamples=500)
    assert same.effect == 0 and same.p_value > 0.5
    constant = hierarchical_bootstrap(np.ones((2, 10)), np.ones((3, 10)), np.random.default_rng(0), n_resamples=200)
    assert constant.p_value == 1.0 and constant.ci_low == constant.ci_high == 0
    first = hierarchical_bootstrap(c, 1 - c, np.random.default_rng(7), n_resamples=300)
    assert first == hierarchical_bootstrap(c, 1 - c, np.random.default_rng(7), n_resamples=300)


def test_many_trials_are_resampled_in_batches_with_the_same_distribution():
    rng = np.random.default_rng(5)
    a = (rng.random((2, 30_000)) < 0.6).astype(float)  # > one batch of resamples × trials
    b = (rng.random((2, 30_000)) < 0.5).astype(float)
    result = hierarchical_bootstrap(a, b, rng, n_resamples=400)
    assert result.n_resamples == 400 and result.ci_low < result.effect < result.ci_high


@pytest.mark.parametrize("a, b, message", [
    (np.ones((1, 5)), np.ones((2, 5)), "a: 1 seed.*at least 2 seeds"),
    (np.ones((2, 5)), np.ones((2, 4)), "5 and 4 trials"),
    (np.ones(5), np.ones((2, 5)), r"a: expected a \(seeds, trials\) matrix"),
    (np.ones((2, 5)), np.array([[1, 0, np.nan, 1, 1], [1, 1, 1, 1, 1]]), "b: missing"),
])
def test_unusable_outcomes_are_refused_with_the_reason(a, b, message):
    with pytest.raises(StatsError, match=message):
        hierarchical_bootstrap(a, b, np.random.default_rng(0), n_resamples=10)
