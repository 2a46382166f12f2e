"""Type-I error and power of the bilingual-vs-monolingual tests on simulated predictions with a known effect.

    OMP_NUM_THREADS=1 .venv/bin/python bench/stats_power.py                 # the table in docs/analyses.md
    OMP_NUM_THREADS=1 .venv/bin/python bench/stats_power.py --seed-sd 0 6 --effects 0 --sims 400

Each simulated study is one comparison as `analyse compare` sees it: a monolingual and a bilingual model,
each trained with `--seeds` seeds, answer the same `--trials` ME trials. The truth is known:
- every trial has a difficulty (logit, SD `--item-sd`) shared by both models, plus a model-specific
  preference (logit, SD `--interaction-sd`) shared by that model's seeds: items are random, and the
  pairing helps without removing all item variation;
- every training seed has its own expected ME accuracy: the model's mean (monolingual `--base`, bilingual
  `--base` − d) plus a seed deviation with SD s points (`--seed-sd`; the paper's Table 1 SEs over 5 seeds,
  1.1 to 2.1 points, mean s ≈ 2.5 to 4.7);
- each (seed, trial) answer is a Bernoulli draw from the seed's probability on that trial.
At d = 0 the rejection rate is the type-I error (a well-calibrated test at α = 0.05 rejects 5 % of the
time), at d > 0 the power. The three tests are those of analyse.compare: the hierarchical bootstrap (the
headline `p_hier`), the trial-level sign-flip test (`p_value`) and the seed-level permutation test
(`p_seed_level`), without multiple-comparison correction (one comparison per study).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy.special import expit

from analyse.compare import seed_level_test, sign_flip_test
from analyse.stats import hierarchical_bootstrap

TESTS = ("hierarchical", "trial-level", "seed-level")


def seed_logits(targets: np.ndarray, trial_logits: np.ndarray, steps: int = 40) -> np.ndarray:
    """Per-seed offsets g (bisection) with mean over trials of expit(g + trial_logits) = each target accuracy."""
    low, high = np.full(len(targets), -12.0), np.full(len(targets), 12.0)
    for _ in range(steps):
        mid = (low + high) / 2
        below = expit(mid[:, None] + trial_logits[None, :]).mean(axis=1) < targets
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    return (low + high) / 2


def simulate(rng: np.random.Generator, args, seeds: int, effect_pp: float, seed_sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Correctness (seeds × trials) of a bilingual and a monolingual model on shared trials."""
    difficulty = rng.normal(0.0, args.item_sd, args.trials)
    models = []
    for mean in (args.base - effect_pp, args.base):  # bilingual first
        targets = np.clip((mean + rng.normal(0.0, seed_sd, seeds)) / 100.0, 0.01, 0.99)
        trial_logits = difficulty + rng.normal(0.0, args.interaction_sd, args.trials)
        probability = expit(seed_logits(targets, trial_logits)[:, None] + trial_logits[None, :])
        models.append((rng.random(probability.shape) < probability).astype(float))
    return models[0], models[1]


def rejections(rng: np.random.Generator, args, seeds: int, effect_pp: float, seed_sd: float) -> dict[str, float]:
    """Fraction of `args.sims` simulated studies in which each test rejects at `args.alpha`."""
    hits = dict.fromkeys(TESTS, 0)
    for _ in range(args.sims):
        bi, mono = simulate(rng, args, seeds, effect_pp, seed_sd)
        p = {
            "hierarchical": hierarchical_bootstrap(bi, mono, rng, n_resamples=args.resamples).p_value,
            "trial-level": sign_flip_test(bi.mean(axis=0) - mono.mean(axis=0), args.resamples, rng),
            "seed-level": seed_level_test(100 * bi.mean(axis=1), 100 * mono.mean(axis=1), rng),
        }
        for name, value in p.items():
            hits[name] += bool(value < args.alpha)
    return {name: count / args.sims for name, count in hits.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 5], help="training seeds per model (default: 2 5)")
    parser.add_argument("--effects", type=float, nargs="+", default=[0, 2, 4, 6],
                        help="true bilingual − monolingual ME difference d, in points (default: 0 2 4 6)")
    parser.add_argument("--seed-sd", type=float, nargs="+", default=[3.0],
                        help="SD of a seed's expected ME accuracy around its model's mean, in points (default: 3)")
    parser.add_argument("--trials", type=int, default=950, help="shared ME trials (default: 950, 19 novel concepts × 50)")
    parser.add_argument("--base", type=float, default=66.0, help="monolingual mean ME accuracy, %% (default: 66)")
    parser.add_argument("--item-sd", type=float, default=1.0, help="SD of trial difficulty, logit (default: 1)")
    parser.add_argument("--interaction-sd", type=float, default=0.5,
                        help="SD of a model's own preference per trial, logit (default: 0.5)")
    parser.add_argument("--sims", type=int, default=300, help="simulated studies per cell (default: 300)")
    parser.add_argument("--resamples", type=int, default=1999, help="resamples per test (default: 1999)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    parser.add_argument("--rng-seed", type=int, default=0, help="seed of the simulation (default: 0)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.rng_seed)
    started = time.perf_counter()
    print(f"rejection rate at alpha = {args.alpha} over {args.sims} simulated studies per row "
          f"({args.trials} trials, {args.resamples} resamples per test)")
    print("| seeds per model | seed SD (pp) | d (pp) | " + " | ".join(TESTS) + " |")
    print("|---|---|---|" + "---|" * len(TESTS))
    for seeds in args.seeds:
        for seed_sd in args.seed_sd:
            for effect in args.effects:
                rates = rejections(rng, args, seeds, effect, seed_sd)
                cells = " | ".join(f"{100 * rates[name]:.1f} %" for name in TESTS)
                print(f"| {seeds} | {seed_sd:g} | {effect:g} | {cells} |", flush=True)
    print(f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
