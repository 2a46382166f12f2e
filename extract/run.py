"""The extraction loop: one (modality, language) of a corpus through one frozen encoder into one store.

Resumability comes from the store writer (``cache.store.open_writer``): every batch is one journal commit, and
a rerun with the same request resumes with the items still pending. What this module adds is a batch grid
that does not depend on where a run stopped: the plan (all items, in extraction order) is cut into fixed
batches of ``batch_size`` and a resumed run re-forms exactly those batches, minus what is already done. The
encoder therefore sees the same batches (hence the same padding and arithmetic) as an uninterrupted run, and
the packed store is byte-identical to one.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import soundfile

from cache.clitools import progress_bar
from cache.layout import SUFFIX_FORMAT, store_path
from cache.provenance import Provenance, package_version
from cache.store import FLOAT16_MAX, ItemTable, open_writer
from extract.audio import RESAMPLER, read_segment
from extract.corpus import AudioItem, Corpus, ImageItem, MediaError
from extract.encoders.base import SAMPLE_RATE, Encoder
from extract.image import read_image

log = logging.getLogger(__name__)

Item = AudioItem | ImageItem


class ExtractionError(ValueError):
    """Extraction cannot go on: bad items (named, with their paths and reasons) or a bad request."""


@dataclasses.dataclass(frozen=True)
class AudioHeader:
    """What the file header says about one audio item: its segment's duration and the file's sample rate."""

    seconds: float
    sample_rate: int | None  # None when the header cannot be read (the item fails when it is read)


def audio_header(item: AudioItem) -> AudioHeader:
    """Duration of the item's segment and its file's rate, from the header only (no samples decoded)."""
    try:
        info = soundfile.info(os.fspath(item.path))
    except Exception:  # missing or unreadable: sorted first, reported when read
        return AudioHeader(0.0, None)
    total = info.frames / info.samplerate
    end = total if item.end is None else min(item.end, total)
    return AudioHeader(max(0.0, end - (item.start or 0.0)), int(info.samplerate))


def plan_items(corpus: Corpus, modality: str, lang: str | None) -> tuple[list[Item], dict[str, AudioHeader]]:
    """Every item of the modality (and language, for audio), all splits, in extraction order.

    Audio is sorted by segment duration, then id, so that each batch holds words of similar length (little
    padding); images by id. Returns the items and, for audio, their headers.
    """
    if modality == "audio":
        if not lang:
            raise ExtractionError("audio extraction needs a language")
        items = list(corpus.audio_of(lang))
        if not items:
            raise ExtractionError(f"corpus {corpus.name} has no audio for language {lang!r} "
                                  f"(its languages: {', '.join(corpus.languages)})")
        headers = {item.id: audio_header(item) for item in items}
        items.sort(key=lambda item: (headers[item.id].seconds, item.id))
        return items, headers
    if modality == "image":
        items = sorted(corpus.images, key=lambda item: item.id)
        if not items:
            raise ExtractionError(f"corpus {corpus.name} has no images")
        return items, {}
    raise ExtractionError(f"modality must be audio or image, not {modality!r}")


def shard_items(items: Sequence[Item], shard: tuple[int, int] | None) -> list[Item]:
    """Shard K of N (1-based), round-robin: item i goes to shard i mod N + 1.

    Round-robin rather than contiguous: the plan is sorted by duration, so contiguous shards would give one
    worker all the long words; round-robin shards take equal time and stay length-sorted themselves.
    """
    if shard is None:
        return list(items)
    k, n = shard
    if not 1 <= k <= n:
        raise ExtractionError(f"shard {k}/{n}: K must be between 1 and N")
    return list(items[k - 1 :: n])


GRID_PART_KEY = "grid_part"  # the preprocessing entry that marks a part store (extract/jobs.py)


@dataclasses.dataclass(frozen=True)
class GridPart:
    """Job ``index`` (0-based) of ``count`` over the fixed batch grid: grid batches index, index + count, ...

    The job takes whole batches of the grid a local run forms, not items, so the encoder sees exactly the
    local run's batches and the features are the local run's bytes (round-robin ``--shard`` changes the
    batches, hence the padding and the arithmetic). Batches round-robin rather than contiguous runs: the
    plan is sorted by duration, so every job gets short and long batches alike. Every grid batch but the
    last holds ``batch_size`` items, and the last one ends its job's list, so cutting a part's items into
    batches of ``batch_size`` again gives back exactly its grid batches: ``extract_store`` needs no second grid.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ExtractionError(f"grid part {self.index} of {self.count}: the index must be in 0..{self.count - 1}")

    def rows(self, n_items: int, batch_size: int) -> np.ndarray:
        """The plan positions of this job's grid batches, in grid order."""
        starts = range(self.index * batch_size, n_items, self.count * batch_size)
        return np.array([row for start in starts for row in range(start, min(start + batch_size, n_items))], np.int64)

    def record(self, batch_size: int) -> dict[str, int]:
        """What a part's provenance says about the grid, so that a part made for another one is refused."""
        return {"job": self.index + 1, "of": self.count, "batch_size": batch_size}


def grid_size(n_items: int, batch_size: int) -> int:
    """How many batches the grid over ``n_items`` has."""
    return -(-n_items // batch_size)


def item_table(corpus: Corpus, items: Sequence[Item]) -> ItemTable:
    """The store's metadata columns for the planned items (lang and speaker empty for images)."""
    return ItemTable.from_records(
        {
            "id": item.id,
            "concept": item.concept,
            "kind": corpus.kind_of(item.concept),
            "lang": getattr(item, "lang", ""),
            "speaker": getattr(item, "speaker", ""),
            "source": item.source,
            "split": item.split,
        }
        for item in items
    )


def provenance_for(
    corpus: Corpus,
    modality: str,
    lang: str | None,
    encoder: Encoder,
    headers: dict[str, AudioHeader],
    shard: tuple[int, int] | None,
) -> Provenance:
    """What the store will be made from: encoder, weights, layer, preprocessing, corpus contents, shard."""
    preprocessing: dict[str, Any] = dict(encoder.preprocessing)
    if modality == "audio":
        rates = sorted({h.sample_rate for h in headers.values() if h.sample_rate is not None})
        preprocessing["source_sample_rates"] = rates
        preprocessing["resampler"] = RESAMPLER if any(rate != SAMPLE_RATE for rate in rates) else "none"
    return Provenance(
        encoder=encoder.name,
        encoder_fingerprint=encoder.fingerprint,
        layer=encoder.layer,
        layers=encoder.layers,
        dim=encoder.dim,
        modality=modality,
        lang=lang if modality == "audio" else None,
        preprocessing=preprocessing,
        precision=encoder.precision,
        corpus=corpus.name,
        corpus_hash=corpus.manifest_hash(modality, lang if modality == "audio" else None),
        package_version=package_version(),
        shard=shard,
    )


def resolve_out_path(
    out: Path, modality: str, lang: str | None, encoder: Encoder, fmt: str | None, shard: tuple[int, int] | None
) -> Path:
    """``out`` is a store path (``.h5``/``.zarr`` suffix: its format wins) or a folder (named by the layout)."""
    out = Path(out)
    suffix_format = SUFFIX_FORMAT.get(out.suffix)
    if suffix_format is not None:
        if fmt is not None and fmt != suffix_format:
            raise ExtractionError(f"--format {fmt} contradicts the store path {out} ({suffix_format})")
        return out
    return store_path(out, modality, encoder.name, lang if modality == "audio" else None, encoder.layer,
                      fmt or "hdf5", shard, layers=encoder.layers)


def reader_for(modality: str, encoder: Encoder) -> Callable[[Item], Any]:
    if modality == "audio":
        return lambda item: read_segment(item, SAMPLE_RATE, min_samples=encoder.min_samples)
    return read_image


def batches(plan: Sequence[Item], batch_size: int, pending: set[str]) -> Iterator[list[Item]]:
    """The fixed batch grid over the plan, each batch reduced to its pending items (empty ones dropped)."""
    for start in range(0, len(plan), batch_size):
        batch = [item for item in plan[start : start + batch_size] if item.id in pending]
        if batch:
            yield batch


def read_batch(batch: Sequence[Item], read: Callable[[Item], Any]) -> list[tuple[Item, Any, MediaError | None]]:
    """Read every item of a batch; a bad one comes back with its MediaError instead of data."""
    out = []
    for item in batch:
        try:
            out.append((item, read(item), None))
        except MediaError as error:
            out.append((item, None, error))
    return out


def _is_out_of_memory(error: BaseException) -> bool:
    """torch's (CUDA) OutOfMemoryError, CTranslate2's "out of memory" RuntimeError, or Python's MemoryError."""
    return (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or "out of memory" in str(error).lower())


def encoder_failure(item: Item, encoder: Encoder, error: Exception) -> MediaError:
    """The MediaError for an item the encoder raised on: names the item and keeps the encoder's own words."""
    words = " ".join(str(error).split()) or "no message"
    return MediaError(item.id, item.path, f"encoder {encoder.name} failed on it ({type(error).__name__}: {words})",
                      "check the item (its file, its start/end) or rerun with --skip-bad to leave it out")


def bad_features(item: Item, features: np.ndarray) -> MediaError | None:
    """Features the store cannot hold faithfully make the item bad: no frames, NaN/Inf, or beyond float16's ±65504."""
    features = np.asarray(features)
    if features.ndim not in (2, 3) or features.shape[0] == 0:  # (T, D), or (T, L, D) with a layer axis
        return MediaError(item.id, item.path, f"encoder produced no frames (features of shape {features.shape})",
                          "check the item's segment, or rerun with --skip-bad to leave it out")
    if not np.isfinite(features).all():
        return MediaError(item.id, item.path, "encoder produced NaN/Inf",
                          "check the encoder (its weights, --precision) or rerun with --skip-bad to leave it out")
    peak = float(np.abs(features).max()) if features.size else 0.0
    if peak > FLOAT16_MAX:
        return MediaError(item.id, item.path, f"encoder produced values beyond float16's range (max |x| = {peak:.4g} "
                          f"> {FLOAT16_MAX:g})", "check the encoder, or rerun with --skip-bad to leave it out")
    return None


def encode_batch(encoder: Encoder, batch: Sequence[tuple[Item, Any]]) -> list[tuple[Item, Any, MediaError | None]]:
    """Encode one batch of read items; each comes back with its features or the MediaError saying why none.

    When the forward pass raises, the items are encoded one at a time to find the one(s) that make it
    fail; when an item's features are not finite, that item is bad. The others are then encoded again as
    one batch without the bad ones: exactly the batch a rerun forms once those are skipped, so the store's
    bytes do not depend on whether the run was interrupted. A batch that fails only as a batch (every item
    encodes alone) keeps the one-at-a-time features. Running out of memory is not an item's fault: it
    stops the run (lower --batch-size), whatever --skip-bad says.
    """
    bad: dict[str, MediaError] = {}
    remaining = list(batch)
    features: dict[str, Any] = {}
    while remaining:
        try:
            encoded = encoder.encode([data for _, data in remaining])
        except Exception as error:
            if _is_out_of_memory(error):
                raise out_of_memory(encoder, remaining, error) from error
            if len(remaining) == 1:
                bad[remaining[0][0].id] = encoder_failure(remaining[0][0], encoder, error)
                break
            singles = {}
            for item, data in remaining:
                try:
                    singles[item.id] = encoder.encode([data])[0]
                except Exception as single_error:
                    if _is_out_of_memory(single_error):
                        raise out_of_memory(encoder, [(item, data)], single_error) from single_error
                    bad[item.id] = encoder_failure(item, encoder, single_error)
            if len(singles) == len(remaining):  # it fails only as a batch: keep the one-at-a-time features
                for item, _ in remaining:
                    if (problem := bad_features(item, singles[item.id])) is not None:
                        bad[item.id] = problem
                    else:
                        features[item.id] = singles[item.id]
                break
            remaining = [(item, data) for item, data in remaining if item.id not in bad]
            continue
        if len(encoded) != len(remaining):  # an encoder bug, not an item's fault: never zip it away
            raise ExtractionError(f"encoder {encoder.name} returned {len(encoded)} feature arrays for a batch of "
                                  f"{len(remaining)} items (first: {remaining[0][0].id!r})")
        failing = {item.id: problem for (item, _), f in zip(remaining, encoded)
                   if (problem := bad_features(item, f)) is not None}
        if not failing:
            features.update({item.id: f for (item, _), f in zip(remaining, encoded)})
            break
        bad.update(failing)
        remaining = [(item, data) for item, data in remaining if item.id not in failing]
    return [(item, features.get(item.id), bad.get(item.id)) for item, _ in batch]


def out_of_memory(encoder: Encoder, batch: Sequence[tuple[Item, Any]], error: BaseException) -> ExtractionError:
    """Running out of memory is the batch's size, not an item's fault: the run stops, --skip-bad or not."""
    return ExtractionError(f"out of memory encoding a batch of {len(batch)} item(s) with {encoder.name} (first: "
                           f"{batch[0][0].id!r}): {' '.join(str(error).split())}; rerun with a smaller --batch-size "
                           "(a rerun resumes)")


def stop_message(errors: Sequence[MediaError], path: Path, committed: int) -> str:
    """Why extraction stopped (every bad item of the batch) and the two ways on."""
    return ("\n".join(str(e) for e in errors)
            + f"\nExtraction of {path.name} stopped; the {committed} items already written are kept and a rerun "
            "resumes after them. Or rerun with --skip-bad to leave bad items out (they are listed in the store).")


@dataclasses.dataclass(frozen=True)
class StorePlan:
    """What one store (or shard, or grid part) is to hold, before anything is encoded."""

    path: Path
    plan: list[Item]  # in extraction order
    items: ItemTable
    provenance: Provenance
    positions: int | None  # P of an image store; None for audio


def plan_store(
    corpus: Corpus,
    modality: str,
    lang: str | None,
    encoder: Encoder,
    out_path: Path,
    fmt: str | None = None,
    batch_size: int = 16,
    shard: tuple[int, int] | None = None,
    part: GridPart | None = None,
) -> StorePlan:
    """The store's path, items, provenance and shape for a request (arguments as ``extract_store``).

    A grid part's provenance is the whole store's plus ``preprocessing[GRID_PART_KEY]`` (its job, the job
    count and the batch size: they decide which batches it holds, hence its bytes).
    """
    if encoder.modality != modality:
        raise ExtractionError(f"encoder {encoder.name} is an {encoder.modality} encoder, not {modality}")
    if batch_size < 1:
        raise ExtractionError(f"batch size must be at least 1, not {batch_size}")
    if shard is not None and part is not None:
        raise ExtractionError("a store is either a round-robin shard or a grid part, not both")
    lang = lang if modality == "audio" else None
    path = resolve_out_path(out_path, modality, lang, encoder, fmt, shard)
    items, headers = plan_items(corpus, modality, lang)
    plan = shard_items(items, shard)
    provenance = provenance_for(corpus, modality, lang, encoder, headers, shard)
    positions = encoder.preprocessing.get("positions") if modality == "image" else None
    whole = StorePlan(path, plan, item_table(corpus, plan), provenance, positions)
    return whole if part is None else part_plan(whole, part, batch_size, path)


def part_plan(whole: StorePlan, part: GridPart, batch_size: int, path: Path) -> StorePlan:
    """The plan of one grid part of a store, written at ``path``."""
    rows = part.rows(len(whole.plan), batch_size)
    provenance = whole.provenance.replace(preprocessing={**whole.provenance.preprocessing,
                                                         GRID_PART_KEY: part.record(batch_size)})
    return StorePlan(Path(path), [whole.plan[row] for row in rows], whole.items.select(rows), provenance,
                     whole.positions)


def extract_store(
    corpus: Corpus,
    modality: str,
    lang: str | None,
    encoder: Encoder,
    out_path: Path,
    fmt: str | None = None,
    batch_size: int = 16,
    shard: tuple[int, int] | None = None,
    skip_bad: bool = False,
    force: bool = False,
    progress: bool = True,
    part: GridPart | None = None,
) -> Path:
    """Extract one store (or one shard of it, or one grid part) and return its path.

    Args:
        corpus: the loaded corpus.
        modality / lang: ``audio`` + a language, or ``image`` (lang ignored).
        encoder: a loaded encoder of that modality.
        out_path: the store path, or a folder (the store is named by ``cache.layout.store_path``).
        fmt: ``hdf5`` | ``zarr`` when ``out_path`` is a folder (default hdf5).
        batch_size: items per encoder call and per journal commit.
        shard: ``(K, N)``: extract only shard K of N (round-robin over the plan) into its own store.
        skip_bad: leave bad items out (unreadable, truncated, too short, failing in the encoder or giving
            non-finite features), listed in the store's ``skipped`` table, instead of stopping.
        force: delete an existing store/journal made from other inputs and rebuild it.
        part: encode only this job's batches of the grid, into a part store (``extract.jobs`` assembles the
            parts into the store a local run writes).

    A complete store with the same provenance is returned untouched; an interrupted one is resumed; one made
    from other inputs raises ``cache.store.ProvenanceMismatch`` (unless ``force``).
    """
    request = plan_store(corpus, modality, lang, encoder, out_path, fmt, batch_size, shard, part)
    path, plan = request.path, request.plan
    writer = open_writer(path, request.provenance, request.items, encoder.dim, request.positions, overwrite=force)
    try:
        if writer.complete:
            log.info("%s is complete and matches the request: nothing to do", path)
            return path
        pending = set(writer.pending.ids.tolist())
        read = reader_for(modality, encoder)
        bar = progress_bar(progress, total=len(plan), initial=writer.done, unit="item", desc=path.name)
        with bar, ThreadPoolExecutor(max_workers=1) as pool:  # reads the next batch while this one encodes
            grid = batches(plan, batch_size, pending)
            upcoming = next(grid, None)
            ahead = pool.submit(read_batch, upcoming, read) if upcoming is not None else None
            while ahead is not None:
                loaded = ahead.result()
                upcoming = next(grid, None)
                ahead = pool.submit(read_batch, upcoming, read) if upcoming is not None else None
                unreadable = [error for _, _, error in loaded if error is not None]
                if unreadable and not skip_bad:
                    raise ExtractionError(stop_message(unreadable, path, writer.committed)) from unreadable[0]
                readable = [(item, data) for item, data, error in loaded if error is None]
                outcome = {item.id: (None, error) for item, _, error in loaded if error is not None}
                outcome.update((item.id, (features, error)) for item, features, error in encode_batch(encoder, readable))
                failed = [outcome[item.id][1] for item, _, _ in loaded if outcome[item.id][1] is not None]
                if failed and not skip_bad:
                    raise ExtractionError(stop_message(failed, path, writer.committed)) from failed[0]
                for error in failed:
                    log.warning("skipped %s", error)
                    writer.skip(error.item_id, str(error.path), error.reason)
                good = [outcome[item.id][0] for item, _, _ in loaded if outcome[item.id][1] is None]
                if good:  # in plan order: the next pending items once the bad ones are skipped
                    writer.append(good)
                bar.update(len(loaded))
        return writer.finish()
    finally:
        writer.close()
