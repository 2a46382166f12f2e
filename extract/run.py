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
from tqdm import tqdm

from cache.layout import SUFFIX_FORMAT, store_path
from cache.provenance import Provenance, package_version
from cache.store import ItemTable, open_writer
from extract.audio import RESAMPLER, read_segment
from extract.corpus import AudioItem, Corpus, ImageItem, MediaError
from extract.encoders.base import SAMPLE_RATE, Encoder
from extract.image import read_image

log = logging.getLogger(__name__)

Item = AudioItem | ImageItem


class ExtractionError(ValueError):
    """An item the encoder cannot be given (missing, unreadable, corrupt, empty, too short); names the item."""


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
        dim=encoder.dim,
        modality=modality,
        lang=lang if modality == "audio" else None,
        preprocessing=preprocessing,
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
                      fmt or "hdf5", shard)


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
) -> Path:
    """Extract one store (or one shard of it) and return its path.

    Args:
        corpus: the loaded corpus.
        modality / lang: ``audio`` + a language, or ``image`` (lang ignored).
        encoder: a loaded encoder of that modality.
        out_path: the store path, or a folder (the store is named by ``cache.layout.store_path``).
        fmt: ``hdf5`` | ``zarr`` when ``out_path`` is a folder (default hdf5).
        batch_size: items per encoder call and per journal commit.
        shard: ``(K, N)``: extract only shard K of N (round-robin over the plan) into its own store.
        skip_bad: leave unreadable items out, listed in the store's ``skipped`` table, instead of stopping.
        force: delete an existing store/journal made from other inputs and rebuild it.

    A complete store with the same provenance is returned untouched; an interrupted one is resumed; one made
    from other inputs raises ``cache.store.ProvenanceMismatch`` (unless ``force``).
    """
    if encoder.modality != modality:
        raise ExtractionError(f"encoder {encoder.name} is an {encoder.modality} encoder, not {modality}")
    if batch_size < 1:
        raise ExtractionError(f"batch size must be at least 1, not {batch_size}")
    lang = lang if modality == "audio" else None
    path = resolve_out_path(out_path, modality, lang, encoder, fmt, shard)
    items, headers = plan_items(corpus, modality, lang)
    plan = shard_items(items, shard)
    provenance = provenance_for(corpus, modality, lang, encoder, headers, shard)
    positions = encoder.preprocessing.get("positions") if modality == "image" else None
    writer = open_writer(path, provenance, item_table(corpus, plan), encoder.dim, positions, overwrite=force)
    try:
        if writer.complete:
            log.info("%s is complete and matches the request: nothing to do", path)
            return path
        pending = set(writer.pending.ids.tolist())
        read = reader_for(modality, encoder)
        bar = tqdm(total=len(plan), initial=writer.done, unit="item", desc=path.name, disable=not progress,
                   dynamic_ncols=True, smoothing=0.1)
        with bar, ThreadPoolExecutor(max_workers=1) as pool:  # reads the next batch while this one encodes
            grid = batches(plan, batch_size, pending)
            upcoming = next(grid, None)
            ahead = pool.submit(read_batch, upcoming, read) if upcoming is not None else None
            while ahead is not None:
                loaded = ahead.result()
                upcoming = next(grid, None)
                ahead = pool.submit(read_batch, upcoming, read) if upcoming is not None else None
                good = []
                for item, data, error in loaded:
                    if error is None:
                        good.append(data)
                    elif skip_bad:
                        log.warning("skipped %s", error)
                        writer.skip(item.id, str(item.path), error.reason)
                    else:
                        raise ExtractionError(
                            f"{error}\nExtraction of {path.name} stopped; the {writer.committed} items already "
                            "written are kept and a rerun resumes after them. Or rerun with --skip-bad to leave "
                            "bad items out (they are listed in the store)."
                        ) from error
                if good:
                    writer.append(encoder.encode(good))
                bar.update(len(loaded))
        return writer.finish()
    finally:
        writer.close()
