"""Familiar and ME test episodes, drawn once per language and shared by every model and seed.

An episode is an audio query and two images, one of the query's concept (the positive) and one of
another concept (the negative), both from the same source dataset so that the pair cannot be told apart
by its style. The familiar test draws everything from familiar concepts; the ME test draws the query and
the positive from a novel concept and the negative from a familiar one. Only test-split items are used,
and concepts the runs were trained without (`exclude_concepts`) are in no episode, as query, positive or
negative.

The draw depends only on the item tables (sorted by id, so the stores' item order does not matter), the
language, the test, the excluded concepts and a seed. It is saved next to the stores, so that monolingual
and bilingual models and all their seeds answer identical trials: that is what makes paired per-trial
comparisons possible.
"""
from __future__ import annotations

import json
import logging
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cache.atomic import write_text
from cache.vocab import KINDS

log = logging.getLogger(__name__)

TESTS = ("familiar", "me")
EPISODE_COLUMNS = ["episode", "test", "lang", "concept", "query_id", "pos_id", "neg_id"]
ITEM_COLUMNS = ["id", "concept", "kind", "source", "split"]
DEFAULT_SEED = 0
DEFAULT_PER_CONCEPT = 50


class EpisodeError(ValueError):
    """The items cannot give the requested episodes, or saved episodes do not match the stores."""


@dataclass(frozen=True)
class EpisodeMeta:
    """What an episode file was drawn from; saved as `<lang>.<test>.json` beside the CSV."""

    corpus: str
    audio_hash: str  # the manifest hash of the items the audio store covers (its provenance corpus_hash)
    image_hash: str  # the same for the image store
    lang: str
    test: str
    seed: int
    per_concept: int
    n_episodes: int
    excluded: tuple[str, ...] = ()  # concepts left out of the draw; sidecars from before the option: none

    def __post_init__(self) -> None:
        object.__setattr__(self, "excluded", tuple(sorted(self.excluded)))


def _check_items(frame: pd.DataFrame, what: str) -> None:
    missing = [c for c in ITEM_COLUMNS if c not in frame.columns]
    if missing:
        raise EpisodeError(f"{what} item table lacks columns {missing}; it needs {ITEM_COLUMNS}")
    bad_kind = sorted(set(frame["kind"]) - set(KINDS))
    if bad_kind:
        raise EpisodeError(f"{what} items have kind {bad_kind}; kind must be 'familiar' or 'novel'")


def _rng(seed: int, lang: str, test: str) -> np.random.Generator:
    """One generator per (seed, language, test), so adding a language never changes another's draw."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(lang.encode()), zlib.crc32(test.encode())]))


def draw_episodes(
    audio: pd.DataFrame,
    images: pd.DataFrame,
    lang: str,
    test: str,
    per_concept: int = DEFAULT_PER_CONCEPT,
    seed: int = DEFAULT_SEED,
    excluded: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Draw `per_concept` episodes for every familiar (test="familiar") or novel (test="me") concept
    that is not `excluded`.

    `audio` holds one language's audio items and `images` the image items, both with the columns
    id, concept, kind, source, split (any split: only "test" rows are used). For each episode the query
    is uniform over the concept's test audio and the positive uniform over the concept's test images
    whose source offers at least one negative; the negative is uniform over the test images of the
    familiar concepts (other than the query's, for the familiar test) with the positive's source.
    Excluded concepts' items are dropped first, so they are never a query, a positive or a negative.
    """
    if test not in TESTS:
        raise EpisodeError(f"unknown test {test!r}; choose one of {TESTS}")
    _check_items(audio, f"audio ({lang})")
    _check_items(images, "image")
    left_out = list(excluded)
    audio = audio[(audio["split"] == "test") & ~audio["concept"].isin(left_out)].sort_values("id", kind="stable")
    images = images[(images["split"] == "test") & ~images["concept"].isin(left_out)].sort_values("id", kind="stable")
    kind = "familiar" if test == "familiar" else "novel"
    concepts = sorted(set(audio.loc[audio["kind"] == kind, "concept"]) | set(images.loc[images["kind"] == kind, "concept"]))
    if not concepts:
        left = f" besides the excluded {', '.join(left_out)}" if left_out else ""
        raise EpisodeError(f"no {kind} test items for language {lang!r}{left}: the {test} test needs {kind} concepts "
                           "in the test split")
    familiar_images = images[images["kind"] == "familiar"]
    rng = _rng(seed, lang, test)
    rows, problems = [], []
    for concept in concepts:
        queries = audio.loc[audio["concept"] == concept, "id"].to_numpy()
        positives = images[images["concept"] == concept]
        candidates = {
            source: group["id"].to_numpy()
            for source, group in familiar_images[familiar_images["concept"] != concept].groupby("source")
        }
        positives = positives[positives["source"].isin(list(candidates))]
        if len(queries) == 0:
            problems.append(f"{concept}: no test audio in {lang!r}")
        if len(positives) == 0:
            problems.append(f"{concept}: no test image whose source also has a familiar test image of another concept")
        if len(queries) == 0 or len(positives) == 0:
            continue
        dropped = (images["concept"] == concept).sum() - len(positives)
        if dropped:
            log.warning("%s: %d test image(s) left out as positives: no familiar negative shares their source", concept, dropped)
        pos_ids, pos_sources = positives["id"].to_numpy(), positives["source"].to_numpy()
        for _ in range(per_concept):
            q = queries[rng.integers(len(queries))]
            p = rng.integers(len(pos_ids))
            pool = candidates[pos_sources[p]]
            rows.append((test, lang, concept, q, pos_ids[p], pool[rng.integers(len(pool))]))
    if problems:
        raise EpisodeError(
            f"cannot draw {test} episodes for {lang!r}:\n  " + "\n  ".join(problems)
            + "\nfix: give every such concept test items in the corpus (audio.csv / images.csv, split=test) and re-extract"
        )
    frame = pd.DataFrame(rows, columns=EPISODE_COLUMNS[1:])
    frame.insert(0, "episode", np.arange(len(frame)))
    return frame


def episode_paths(episodes_dir: Path, lang: str, test: str) -> tuple[Path, Path]:
    """The CSV and its JSON sidecar for one language and test."""
    return episodes_dir / f"{lang}.{test}.csv", episodes_dir / f"{lang}.{test}.json"


def save_episodes(episodes: pd.DataFrame, meta: EpisodeMeta, episodes_dir: Path) -> Path:
    """Write the CSV, then its sidecar; the sidecar is what marks the pair complete."""
    csv_path, meta_path = episode_paths(episodes_dir, meta.lang, meta.test)
    write_text(csv_path, episodes.to_csv(index=False))
    write_text(meta_path, json.dumps(asdict(meta), indent=2) + "\n")
    return csv_path


def load_episodes(episodes_dir: Path, lang: str, test: str) -> tuple[pd.DataFrame, EpisodeMeta] | None:
    """The saved episodes and their metadata, or None when none (or only a CSV without sidecar) exist."""
    csv_path, meta_path = episode_paths(episodes_dir, lang, test)
    if not (csv_path.exists() and meta_path.exists()):
        return None
    meta = EpisodeMeta(**json.loads(meta_path.read_text()))
    frame = pd.read_csv(csv_path, dtype={"query_id": str, "pos_id": str, "neg_id": str, "lang": str, "concept": str})
    if len(frame) != meta.n_episodes:
        raise EpisodeError(f"{csv_path} has {len(frame)} rows but its sidecar says {meta.n_episodes}; delete both files or rerun with --redraw")
    return frame, meta


def get_episodes(
    episodes_dir: Path,
    audio: pd.DataFrame,
    images: pd.DataFrame,
    lang: str,
    test: str,
    corpus: str,
    audio_hash: str,
    image_hash: str,
    seed: int = DEFAULT_SEED,
    per_concept: int = DEFAULT_PER_CONCEPT,
    redraw: bool = False,
    excluded: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Load the saved episodes for (lang, test), or draw and save them when there are none.

    Saved episodes drawn from other items (the stores' manifest hashes: the language's audio and the
    images), another seed, size or set of excluded concepts are refused rather than silently redrawn:
    runs already scored on them would no longer be comparable.
    """
    excluded = tuple(sorted(excluded))
    saved = None if redraw else load_episodes(episodes_dir, lang, test)
    wanted = {"audio_hash": audio_hash, "image_hash": image_hash, "seed": seed, "per_concept": per_concept,
              "excluded": excluded}
    if saved is not None:
        frame, meta = saved
        differ = {k: (getattr(meta, k), v) for k, v in wanted.items() if getattr(meta, k) != v}
        if differ:
            detail = ", ".join(f"{k}: saved {a!r}, wanted {b!r}" for k, (a, b) in differ.items())
            also = (" (the excluded concepts come from the runs' --exclude-concepts: analyse runs trained with "
                    f"the saved exclusion, {list(meta.excluded)})" if "excluded" in differ else "")
            raise EpisodeError(
                f"saved {test} episodes for {lang!r} in {episodes_dir} were drawn differently ({detail}); "
                f"fix: ask for the saved ones (--episode-seed {meta.seed} --per-concept {meta.per_concept}){also}, "
                "or replace them with `analyse episodes --redraw` (same options) and then rescore every run"
            )
        return frame
    frame = draw_episodes(audio, images, lang, test, per_concept=per_concept, seed=seed, excluded=excluded)
    meta = EpisodeMeta(corpus=corpus, audio_hash=audio_hash, image_hash=image_hash, lang=lang, test=test, seed=seed,
                       per_concept=per_concept, n_episodes=len(frame), excluded=excluded)
    save_episodes(frame, meta, episodes_dir)
    return frame


def episodes_for_run(run, lang: str, test: str, seed: int = DEFAULT_SEED, per_concept: int = DEFAULT_PER_CONCEPT,
                     redraw: bool = False) -> pd.DataFrame:
    """The shared episodes of one of a run's languages, from (or drawn into) the folder beside its stores,
    without the concepts the run was trained without."""
    from analyse.exclusion import run_exclusion
    from analyse.study import episodes_dir, items_frame, open_store

    audio, image = open_store(run.audio_stores[lang]), open_store(run.image_store)
    return get_episodes(episodes_dir(run), items_frame(audio, "audio"), items_frame(image, "image"), lang, test,
                        corpus=audio.provenance.corpus, audio_hash=audio.provenance.corpus_hash,
                        image_hash=image.provenance.corpus_hash, seed=seed, per_concept=per_concept, redraw=redraw,
                        excluded=run_exclusion(run))
