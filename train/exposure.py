"""Exposure regimes: how much of which language a run sees, and when (issue 12, "Conditions").

The paper's bilingual run sees every training anchor of both languages every epoch (the `sum` budget,
simultaneous exposure, all data, all familiar concepts). `Exposure` varies that along five axes, each
recorded in config.json under `"exposure"` and, when not the default, in the run's folder name:

- `ratio`: the percent share of each language (in `langs` order) among an epoch's anchors, drawn per epoch
  from each language's own pool: without replacement when the pool holds enough anchors for its share;
  only when it is too small do anchors repeat, as evenly as possible (every anchor the same whole number
  of times, the remainder drawn without replacement: plain with-replacement draws of 360 from 300 anchors
  would leave ~90 of them unseen that epoch);
- `budget`: `sum` (both languages' data) or `matched` (as many anchors per epoch as a monolingual run of the
  first language sees: the same data budget, spread over two languages);
- `l2_onset`: the 1-based epoch from which the second language's anchors join (1: simultaneous); before it
  an epoch holds the first language's anchors only (with the `sum` budget, a smaller epoch);
- `data_fraction`: the share of each familiar concept's training tokens kept, per language: a seeded
  permutation of the concept's tokens, cut to a prefix, so a smaller fraction is a subset of a larger one;
- `vocab_size`: train on N familiar concepts: a seeded permutation of the familiar vocabulary cut to a
  prefix (nested across N); validation uses the same concepts.

Everything here is pure (index arrays and a `numpy.random.Generator` in, index arrays out), so every rule
is tested without training; `train.loop` and `train.sampler` only call it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from dataclasses import dataclass

import numpy as np

BUDGETS = ("sum", "matched")
DEFAULTS = {"ratio": None, "budget": "sum", "l2_onset": 1, "data_fraction": 1.0, "vocab_size": None}


class ExposureError(ValueError):
    """An exposure option that is malformed, or meaningless for the run it is asked for."""


@dataclass(frozen=True)
class Exposure:
    """One exposure condition; the defaults are the paper's (every run before this option existed)."""

    ratio: tuple[int, ...] | None = None  # percent per language, in `langs` order; sums to 100
    budget: str = "sum"
    l2_onset: int = 1  # 1-based epoch from which the second language joins
    data_fraction: float = 1.0  # share of each familiar concept's training tokens, per language
    vocab_size: int | None = None  # number of familiar concepts trained on (None: all)

    def __post_init__(self) -> None:
        if isinstance(self.data_fraction, int) and not isinstance(self.data_fraction, bool):
            object.__setattr__(self, "data_fraction", float(self.data_fraction))  # 1 and 1.0: one record
        if self.ratio is not None:
            object.__setattr__(self, "ratio", tuple(int(share) for share in self.ratio))
            if len(self.ratio) < 2 or sum(self.ratio) != 100 or min(self.ratio) <= 0:
                raise ExposureError(f"--ratio {self.ratio_text()}: one positive percent per language of the run, "
                                    "summing to 100 (e.g. 75:25)")
        if self.budget not in BUDGETS:
            raise ExposureError(f"--budget {self.budget!r} is not one of {', '.join(BUDGETS)}")
        if isinstance(self.l2_onset, bool) or int(self.l2_onset) != self.l2_onset or self.l2_onset < 1:
            raise ExposureError(f"--l2-onset {self.l2_onset}: an epoch number, 1 or more (1 = simultaneous)")
        if not 0 < self.data_fraction <= 1:
            raise ExposureError(f"--data-fraction {self.data_fraction:g}: a fraction in (0, 1] (1 = all the data)")
        if self.vocab_size is not None and (int(self.vocab_size) != self.vocab_size or self.vocab_size < 2):
            raise ExposureError(f"--vocab-size {self.vocab_size}: a whole number of familiar concepts, 2 or more "
                                "(an episode needs a concept other than the anchor's)")

    # ------------------------------------------------------------------ records
    @classmethod
    def from_dict(cls, record: dict | None) -> "Exposure":
        """The exposure of a config.json record; a run that recorded none (older) had the defaults."""
        record = {**DEFAULTS, **(record or {})}
        unknown = sorted(set(record) - set(DEFAULTS))
        if unknown:
            raise ExposureError(f"exposure fields {unknown} are unknown (known: {', '.join(DEFAULTS)})")
        return cls(**record)

    def to_dict(self) -> dict:
        """The config.json record (JSON types: the ratio as a list)."""
        record = dataclasses.asdict(self)
        record["ratio"] = None if self.ratio is None else list(self.ratio)
        return record

    def ratio_text(self) -> str:
        return ":".join(map(str, self.ratio or ()))

    def suffix(self) -> str:
        """The folder-name suffix: `-r75` (first language's share), `-matched`, `-onset5`, `-data50`,
        `-vocab8`, in that order; "" for the defaults, so existing runs keep their names."""
        parts = []
        if self.ratio is not None:
            parts.append(f"r{self.ratio[0]}")
        if self.budget != "sum":
            parts.append(self.budget)
        if self.l2_onset != 1:
            parts.append(f"onset{self.l2_onset}")
        if self.data_fraction != 1:
            parts.append(f"data{100 * self.data_fraction:g}")
        if self.vocab_size is not None:
            parts.append(f"vocab{self.vocab_size}")
        return "".join(f"-{part}" for part in parts)

    def check_run(self, langs: list[str], epochs: int) -> None:
        """Refuse a condition that means nothing for a run of `langs` over `epochs` epochs."""
        run = "+".join(langs)
        if len(langs) == 1:
            given = [option for option, asked in (("--ratio", self.ratio is not None), ("--budget matched",
                     self.budget != "sum"), ("--l2-onset", self.l2_onset != 1)) if asked]
            if given:
                raise ExposureError(f"{', '.join(given)} describe(s) how two languages share a run, but run {run} "
                                    "has one language: train the monolingual runs in a separate command")
        if self.ratio is not None and len(self.ratio) != len(langs):
            raise ExposureError(f"--ratio {self.ratio_text()}: {len(self.ratio)} shares for the {len(langs)} "
                                f"languages of run {run} (one per language, in --langs order)")
        if self.l2_onset > epochs:
            raise ExposureError(f"--l2-onset {self.l2_onset}: run {run} has {epochs} epochs, so its second language "
                                "would never join; give an onset of at most --epochs")

    def check_vocabulary(self, familiar: int) -> None:
        """Refuse a vocabulary size larger than the `familiar` concepts there are to train on."""
        if self.vocab_size is not None and self.vocab_size > familiar:
            raise ExposureError(f"--vocab-size {self.vocab_size}: the stores have only {familiar} familiar "
                                f"concepts to train on; give at most {familiar}")

    # ------------------------------------------------------------------ what a run trains on
    def select_vocabulary(self, vocabulary: list[str], seed: int) -> list[str]:
        """The familiar concepts trained on (sorted): all, or a seeded prefix of N (nested across N)."""
        if self.vocab_size is None:
            return list(vocabulary)
        self.check_vocabulary(len(vocabulary))
        order = np.random.default_rng(_seed_words(seed, "vocabulary")).permutation(len(vocabulary))
        return sorted(vocabulary[k] for k in order[: self.vocab_size])

    def training_tokens(self, concepts: np.ndarray, keep: np.ndarray, langs: np.ndarray, seed: int) -> np.ndarray:
        """`keep` (the familiar training tokens; `langs`: each token's language name) cut to `data_fraction`
        of each (language, concept)'s tokens: a prefix of one seeded permutation per (language, concept), at
        least one token each. The permutation depends on the seed, the language, the concept and that
        language's tokens only, so a language keeps the same tokens in a monolingual and a bilingual run, and
        across vocabulary sizes."""
        keep = np.asarray(keep, dtype=bool)
        if self.data_fraction == 1:
            return keep.copy()
        kept = np.zeros_like(keep)
        for lang in np.unique(langs[keep]):
            for concept in np.unique(concepts[keep & (langs == lang)]):
                tokens = np.flatnonzero(keep & (langs == lang) & (concepts == concept))
                rng = np.random.default_rng(_seed_words(seed, "tokens", str(lang), str(concept)))
                order = rng.permutation(len(tokens))
                kept[tokens[order[: max(1, math.ceil(self.data_fraction * len(tokens) - 1e-9))]]] = True
        return kept

    # ------------------------------------------------------------------ epochs
    def active_languages(self, n_langs: int, epoch: int) -> int:
        """How many languages the 0-based `epoch` draws from: the first only before the L2 onset."""
        return n_langs if epoch + 1 >= self.l2_onset else 1

    def epoch_counts(self, pool_sizes: list[int], epoch: int, repeats: int = 1) -> list[int]:
        """Anchors of each language in the 0-based `epoch`, from the sizes of the languages' anchor pools.

        `sum`: all the active languages' anchors (× `repeats`, the monolingual equal-steps control);
        `matched`: as many as the first language's pool. They are shared by `ratio` when the second language
        is active, else in proportion to the pools (largest remainder, so the counts sum to the budget).
        """
        active = self.active_languages(len(pool_sizes), epoch)
        natural = [size * repeats if k < active else 0 for k, size in enumerate(pool_sizes)]
        total = pool_sizes[0] * repeats if self.budget == "matched" else sum(natural)
        if active == 1 or (self.ratio is None and total == sum(natural)):
            return natural
        return _apportion(total, list(self.ratio) if self.ratio is not None else natural)

    def epoch_sizes(self, pool_sizes: list[int], epochs: int, repeats: int = 1) -> list[int]:
        """Anchors of every epoch (what the step count and the learning-rate schedule are computed from)."""
        return [sum(self.epoch_counts(pool_sizes, epoch, repeats)) for epoch in range(epochs)]

    def epoch_order(self, pools: list[np.ndarray], epoch: int, rng: np.random.Generator,
                    repeats: int = 1) -> np.ndarray:
        """The 0-based `epoch`'s anchors in one shuffled order, from the languages' anchor `pools`.

        When every active pool is taken whole this is the paper's order (all anchors, each `repeats` times,
        one permutation: the same draws as before exposure regimes existed); otherwise each language's count
        is drawn from its own pool (`draw_from_pool`) and the union shuffled."""
        counts = self.epoch_counts([len(pool) for pool in pools], epoch, repeats)
        if all(count in (0, len(pool) * repeats) for count, pool in zip(counts, pools)):
            return rng.permutation(np.tile(np.concatenate([p for p, c in zip(pools, counts) if c]), repeats))
        return rng.permutation(np.concatenate([draw_from_pool(pool, count, rng)
                                               for pool, count in zip(pools, counts) if count]))


def draw_from_pool(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` anchors of `pool`: without replacement when it holds that many; else every anchor
    `count // len(pool)` times plus the remainder without replacement (repeats as even as they can be)."""
    if not len(pool):
        raise ExposureError(f"{count} anchors asked of a language that has no training anchors")
    passes, rest = divmod(count, len(pool))
    return np.concatenate([np.tile(pool, passes), rng.choice(pool, rest, replace=False)])


def _apportion(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` (largest remainder, ties to the earlier language)."""
    exact = [total * w / sum(weights) for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda k: (counts[k] - exact[k], k))
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return counts


def _seed_words(seed: int, *names: str) -> list[int]:
    """Seed words for `numpy.random.default_rng` from the run seed and names (stable across processes,
    unlike `hash`): each selection gets its own stream, independent of the training draws."""
    digest = hashlib.sha256("\0".join(names).encode()).digest()
    return [int(seed), *(int.from_bytes(digest[k: k + 4], "little") for k in range(0, 16, 4))]


def language_pools(anchors: np.ndarray, langs: np.ndarray, n_langs: int) -> list[np.ndarray]:
    """The anchors of each language (code 0..n−1 in `langs`, one per item), in their original order."""
    return [anchors[langs[anchors] == k] for k in range(n_langs)]


def parse_ratio(text: str) -> tuple[int, ...]:
    """`75:25` → (75, 25)."""
    try:
        return tuple(int(part) for part in text.split(":"))
    except ValueError:
        raise ExposureError(f"--ratio {text!r}: write whole percents per language joined by ':' (e.g. 75:25)") from None


def sweep_exposures(ratios: list[str], budgets: list[str], onsets: list[str], fractions: list[str],
                    vocab_sizes: list[str]) -> list[Exposure]:
    """One `Exposure` per combination of the options' values (each given once or several times; an option
    not given keeps its default), in the options' order; repeated values count once."""
    def parsed(values: list[str], parse, option: str) -> list:
        out = []
        for value in dict.fromkeys(values):
            try:
                out.append(parse(value))
            except ValueError as error:
                if isinstance(error, ExposureError):
                    raise
                raise ExposureError(f"{option} {value!r} is not a number") from None
        return out

    axes = [parsed(ratios, parse_ratio, "--ratio") or [None], list(dict.fromkeys(budgets)) or ["sum"],
            parsed(onsets, int, "--l2-onset") or [1], parsed(fractions, float, "--data-fraction") or [1.0],
            parsed(vocab_sizes, int, "--vocab-size") or [None]]
    return list(dict.fromkeys(Exposure(*values) for values in itertools.product(*axes)))
