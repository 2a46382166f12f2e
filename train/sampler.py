"""Episodes as index arrays: per audio anchor, its positive image, 11 negative images and 11 negative audios.

Everything works on integer concept codes per item (−1 = never drawn: a novel concept or another split),
so the sampler never sees features and never loops over samples in Python. A negative is drawn as in the
authors' code: a concept uniformly among the other familiar concepts (with replacement), then an item of
that concept uniformly; negatives are independent per modality and per anchor. All draws come from the
`numpy.random.Generator` passed in.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from train.exposure import Exposure, language_pools

NEGATIVES = 11
NEGATIVE_MODES = ("per-anchor", "shared")


class SamplingError(ValueError):
    """The items cannot form episodes (a concept without items in a split, too few concepts)."""


def concept_codes(concepts: np.ndarray, keep: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """Code of each item's concept in `vocabulary`, −1 where `keep` is False or the concept is not in it."""
    lookup = {c: k for k, c in enumerate(vocabulary)}
    codes = np.array([lookup.get(c, -1) for c in concepts], dtype=np.int64)
    codes[~np.asarray(keep, dtype=bool)] = -1
    return codes


@dataclass(frozen=True)
class ConceptItems:
    """Item indices grouped by concept code, to draw an item of a given concept in O(1)."""

    order: np.ndarray  # item indices sorted by concept code
    start: np.ndarray  # (C,) first position of each concept in `order`
    count: np.ndarray  # (C,) items per concept

    @classmethod
    def build(cls, codes: np.ndarray, n_concepts: int, what: str, vocabulary: list[str]) -> "ConceptItems":
        kept = np.flatnonzero(codes >= 0)
        order = kept[np.argsort(codes[kept], kind="stable")]
        count = np.bincount(codes[kept], minlength=n_concepts)
        empty = [vocabulary[c] for c in np.flatnonzero(count == 0)]
        if empty:
            raise SamplingError(f"no {what} for concept(s) {', '.join(empty)}: every familiar concept needs "
                                f"{what}; add them to the corpus and re-extract, or choose stores that have them")
        return cls(order, np.concatenate([[0], np.cumsum(count)[:-1]]), count)

    def draw(self, concepts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item uniformly from each entry's concept (any shape)."""
        return self.order[self.start[concepts] + rng.integers(0, self.count[concepts])]


@dataclass(frozen=True)
class Episodes:
    """Index tensors of one batch: column 0 is the anchor audio / its positive image, then the negatives."""

    audio: np.ndarray  # (B, 1 + K) pooled-audio indices
    image: np.ndarray  # (B, 1 + K) image indices
    audio_valid: np.ndarray | None  # (B, 1 + K) bool, only for shared negatives
    image_valid: np.ndarray | None


@dataclass
class EpisodeSampler:
    audio_codes: np.ndarray  # (N_audio,) concept code of each pooled audio item, −1 = never drawn
    image_codes: np.ndarray  # (N_image,)
    vocabulary: list[str]  # the familiar concepts, code = position
    split: str = "train"
    negatives: int = NEGATIVES
    mode: str = "per-anchor"
    audio_langs: np.ndarray | None = None  # (N_audio,) language code of each pooled audio item; None: one language
    _audio: ConceptItems = field(init=False, repr=False)
    _image: ConceptItems = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in NEGATIVE_MODES:
            raise SamplingError(f"negatives mode {self.mode!r} is not one of {NEGATIVE_MODES}")
        if len(self.vocabulary) < 2:
            raise SamplingError(f"{len(self.vocabulary)} familiar concept(s): episodes need at least 2")
        c = len(self.vocabulary)
        self._audio = ConceptItems.build(self.audio_codes, c, f"{self.split} audio", self.vocabulary)
        self._image = ConceptItems.build(self.image_codes, c, f"{self.split} images", self.vocabulary)

    @property
    def anchors(self) -> np.ndarray:
        """Every drawable audio item: the anchors of one epoch (or of the validation set)."""
        return np.flatnonzero(self.audio_codes >= 0)

    @property
    def pools(self) -> list[np.ndarray]:
        """The anchors of each language (one pool for a single language)."""
        if self.audio_langs is None:
            return [self.anchors]
        return language_pools(self.anchors, self.audio_langs, int(self.audio_langs.max(initial=0)) + 1)

    def epoch_order(self, rng: np.random.Generator, repeats: int = 1, exposure: Exposure = Exposure(),
                    epoch: int = 0) -> np.ndarray:
        """The anchors of the 0-based `epoch` in one shuffled order: by default all of them, each `repeats`
        times (the equal-steps control); `exposure` sets the languages' shares, budget and onset."""
        return exposure.epoch_order(self.pools, epoch, rng, repeats)

    def draw(self, anchors: np.ndarray, rng: np.random.Generator) -> Episodes:
        concept = self.audio_codes[anchors]
        if (concept < 0).any():
            raise SamplingError(f"anchor(s) {anchors[concept < 0][:5].tolist()} are not drawable {self.split} audio")
        positive = self._image.draw(concept, rng)
        if self.mode == "per-anchor":
            neg_image = self._image.draw(self._other_concepts(concept, rng), rng)
            neg_audio = self._audio.draw(self._other_concepts(concept, rng), rng)
            audio_valid = image_valid = None
        else:
            image_concepts = rng.integers(0, len(self.vocabulary), self.negatives)
            audio_concepts = rng.integers(0, len(self.vocabulary), self.negatives)
            neg_image = np.broadcast_to(self._image.draw(image_concepts, rng), (len(anchors), self.negatives))
            neg_audio = np.broadcast_to(self._audio.draw(audio_concepts, rng), (len(anchors), self.negatives))
            first = np.ones((len(anchors), 1), dtype=bool)
            image_valid = np.hstack([first, image_concepts[None, :] != concept[:, None]])
            audio_valid = np.hstack([first, audio_concepts[None, :] != concept[:, None]])
        return Episodes(np.hstack([anchors[:, None], neg_audio]), np.hstack([positive[:, None], neg_image]),
                        audio_valid, image_valid)

    def _other_concepts(self, concept: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B, K) concepts drawn uniformly among the C − 1 concepts other than each row's own."""
        r = rng.integers(0, len(self.vocabulary) - 1, (len(concept), self.negatives))
        return r + (r >= concept[:, None])
