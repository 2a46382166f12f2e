"""Writing stores: `open_writer` and the journalled, resumable `StoreWriter`.

Writing is journalled. While a store is being written it lives in `<store>.partial/`: the plan (the item
table, provenance, shape), then one numbered file per committed `append` or `skip`, each written under a
temporary name and renamed, so a `kill -9` at any moment leaves only whole batches behind. Rerunning
`open_writer` with the same provenance and items resumes after the last whole batch. `finish()` packs the
journal, in order, into the backend file under a temporary name, marks it complete and renames it into
place. The store at its final path therefore always holds `complete = True`, and an interrupted-then-resumed
extraction packs exactly the bytes an uninterrupted one does. Packing once at the end also lets each backend
lay out its arrays for reading (contiguous HDF5 datasets, Zarr chunks of many items) instead of for appending.

Each appended item's CRC-32C is computed once, from the float16 bytes journalled, and packed as the store's
`checksums` column (integrity.py); features that are not finite in float16 are refused before anything of
their batch is written.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_write, make_dirs, write_json
from .errors import NonFiniteFeatures, ProvenanceMismatch, StoreError
from .files import journal_path, remove_path, remove_store, tmp_path
from .formats import backend_for_suffix
from .integrity import item_checksums
from .items import ITEM_COLUMNS, ItemTable, SkippedTable, decode_strings, encode_strings
from .locks import acquire
from .provenance import Provenance
from .reader import open_store

log = logging.getLogger(__name__)
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504: the largest value a float16 store holds


class StoreWriter:
    """Appends features item by item in plan order, durable after every call; see the module docstring."""

    def __init__(self, path: Path, provenance: Provenance, items: ItemTable, dim: int, positions: int | None,
                 complete: bool = False):
        self.path, self.provenance, self.items = path, provenance, items
        self.dim, self.positions = int(dim), positions
        self.backend = backend_for_suffix(path)
        self.journal = journal_path(path)
        self.complete = complete
        self._lock_fh = None
        self._written = np.zeros(len(items), bool)
        self._skipped: dict[str, tuple[str, str]] = {}
        self._frames = 0
        self._next_event = 0
        self._cursor = 0  # every plan row before it is written or skipped

    # -- state
    @property
    def committed(self) -> int:
        """Items whose features are durably written."""
        return len(self.items) - len(self._skipped) if self.complete else int(self._written.sum())

    @property
    def done(self) -> int:
        """Items written or skipped."""
        return len(self.items) if self.complete else int(self._written.sum()) + len(self._skipped)

    def pending_mask(self) -> np.ndarray:
        """True for plan items neither written nor skipped."""
        if self.complete:
            return np.zeros(len(self.items), bool)
        return ~self._written & ~np.isin(self.items.ids, list(self._skipped))

    @property
    def pending(self) -> ItemTable:
        """The items still to write (in plan order): what the extractor feeds next."""
        return self.items.select(self.pending_mask())

    # -- journal
    def _create_journal(self) -> None:
        make_dirs(self.journal)
        _write_npz(self.journal / "plan.npz", **{c: encode_strings(v) for c, v in self.items.columns().items()})
        meta = {"provenance": self.provenance.to_dict(), "dim": self.dim, "positions": self.positions}
        write_json(self.journal / "meta.json", meta)  # written last: a journal without it is discarded

    def _lock(self) -> None:
        self._lock_fh = acquire(self.journal / "lock", f"writing {self.path}", StoreError)

    def _events(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.journal.iterdir():
            if p.name.endswith(".tmp"):
                p.unlink()  # a batch that was being written when the process died
                continue
            stem = p.name.split(".")[0]
            if stem.isdigit():
                out.append((int(stem), p))
        return sorted(out)

    def _replay(self) -> None:
        for number, p in self._events():
            if p.suffix == ".npz":
                with np.load(p) as part:
                    index, lengths = part["index"], part["lengths"]
                self._written[index] = True
                self._frames += int(lengths.sum())
            else:
                rec = json.loads(p.read_text())
                self._skipped[rec["id"]] = (rec["path"], rec["reason"])
            self._next_event = number + 1
        self._advance()

    def _advance(self) -> None:
        skipped = np.isin(self.items.ids, list(self._skipped))
        done = self._written | skipped
        while self._cursor < len(done) and done[self._cursor]:
            self._cursor += 1

    def _event_path(self, suffix: str) -> Path:
        p = self.journal / f"{self._next_event:08d}{suffix}"
        self._next_event += 1
        return p

    # -- writing
    def _check_open(self) -> None:
        if self.complete:
            raise StoreError(f"{self.path} is already complete")

    def append(self, features: Sequence[np.ndarray]) -> None:
        """Write the next `len(features)` pending items (in plan order) and commit them.

        Audio items are (T, D) with T >= 1, or (T, L, D) for a store with a layer axis (the provenance's
        `layers`); images (P, D). Values are stored as float16; a value that is
        not finite in float16 (NaN, inf, or a finite value beyond ±65504 that the cast would make inf) is
        refused with `NonFiniteFeatures` naming the item, and nothing of the batch is written.
        """
        self._check_open()
        if not len(features):
            return
        pending = np.flatnonzero(self.pending_mask())
        if len(features) > len(pending):
            raise StoreError(f"{self.path}: {len(features)} items appended but only {len(pending)} remain in the plan")
        targets = pending[:len(features)]
        arrays = []
        for i, a in zip(targets, features):
            a = np.asarray(a)
            item = self.items.ids[i]
            if self.modality == "image":
                fits, want = a.shape == (self.positions, self.dim), str((self.positions, self.dim))
            else:
                fits = a.ndim == 1 + len(self.row_shape) and a.shape[1:] == self.row_shape and a.shape[0] >= 1
                want = "(T>=1, " + ", ".join(map(str, self.row_shape)) + ")"
            if not fits:
                raise StoreError(f"item {item}: features of shape {a.shape}, expected {want}")
            with np.errstate(over="ignore", invalid="ignore"):
                a16 = np.ascontiguousarray(a.astype(np.float16))
            if not np.isfinite(a16).all():
                raise NonFiniteFeatures(f"item {item}: features hold NaN or values beyond float16's range "
                                        f"({_non_finite_summary(a)}); nothing of this batch was written; "
                                        "check the encoder")
            arrays.append(a16)
        lengths = np.array([len(a) for a in arrays], np.int32)
        block = np.concatenate(arrays) if self.modality == "audio" else np.stack(arrays)
        # the rename is the commit point of this batch
        _write_npz(self._event_path(".npz"), index=targets.astype(np.int64), lengths=lengths,
                   checksums=item_checksums(arrays), features=block)
        self._written[targets] = True
        self._frames += int(lengths.sum())
        self._advance()

    def skip(self, item_id: str, path: str, reason: str) -> None:
        """Leave a pending item out of the store, recording its media path and why (idempotent on resume)."""
        self._check_open()
        if item_id in self._skipped:
            return
        where = np.flatnonzero(self.items.ids == item_id)
        if not len(where):
            raise StoreError(f"{self.path}: cannot skip {item_id!r}, it is not in the plan")
        if self._written[where[0]]:
            raise StoreError(f"{self.path}: cannot skip {item_id!r}, its features are already written")
        rec = {"id": str(item_id), "path": str(path), "reason": str(reason)}
        write_json(self._event_path(".skip.json"), rec)
        self._skipped[str(item_id)] = (str(path), str(reason))
        self._advance()

    @property
    def modality(self) -> str:
        return self.provenance.modality

    @property
    def row_shape(self) -> tuple[int, ...]:
        """One row of the features array: an audio frame (D,) or, with a layer axis, (L, D); an image (P, D)."""
        if self.modality == "image":
            return (int(self.positions), self.dim)
        layers = self.provenance.layers
        return (self.dim,) if layers is None else (len(layers), self.dim)

    def finish(self) -> Path:
        """Pack the journal into the store (under a temporary name), mark it complete, rename it into place."""
        if self.complete:
            return self.path
        pending = self.pending
        if len(pending):
            raise StoreError(f"{self.path}: cannot finish, {len(pending)} item(s) not written or skipped "
                             f"(first: {', '.join(pending.ids[:5])})")
        written = np.flatnonzero(self._written)
        n = len(written)
        lengths = np.zeros(n, np.int32)
        tmp = tmp_path(self.path)
        remove_path(tmp)
        shape = ((self._frames,) if self.modality == "audio" else (n,)) + self.row_shape
        skipped_ids = [i for i in self.items.ids if i in self._skipped]  # plan order: independent of call order
        skipped = SkippedTable(np.array(skipped_ids, dtype=str),
                               np.array([self._skipped[i][0] for i in skipped_ids], dtype=str),
                               np.array([self._skipped[i][1] for i in skipped_ids], dtype=str))
        attrs = {"provenance": self.provenance.to_dict(), "committed": n, "complete": False,
                 "modality": self.modality, "dim": self.dim, "positions": self.positions,
                 "format_version": self.provenance.format_version, "format": self.backend.name}
        # lengths must be known before the metadata columns are written: read them from the parts first
        parts = [p for _, p in self._events() if p.suffix == ".npz"]
        checksums = np.zeros(n, np.uint32)
        k = 0
        for p in parts:
            with np.load(p) as part:
                ln, crc = part["lengths"], part["checksums"]
            lengths[k:k + len(ln)] = ln
            checksums[k:k + len(ln)] = crc
            k += len(ln)
        offsets = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)]).astype(np.int64) \
            if n else np.zeros(0, np.int64)
        columns: dict[str, np.ndarray] = {"lengths": lengths, "checksums": checksums}
        if self.modality == "audio":
            columns["offsets"] = offsets
        columns.update({f"items/{c}": encode_strings(v) for c, v in self.items.select(written).columns().items()})
        columns.update({f"skipped/{c}": encode_strings(v) for c, v in skipped.columns().items()})
        writer = self.backend.create(tmp, shape, columns, attrs)
        row, last = 0, -1
        for p in parts:
            with np.load(p) as part:
                index, block = part["index"], part["features"]
            if index.min() <= last:
                raise StoreError(f"{self.journal}: batches out of plan order at {p.name}; delete the journal and rerun")
            last = int(index.max())
            writer.write_features(row, block)
            row += len(block)
        writer.finish()
        os.replace(tmp, self.path)
        self.complete = True
        self._release()
        shutil.rmtree(self.journal, ignore_errors=True)
        return self.path

    def _release(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def close(self) -> None:
        """Release the journal lock (the journal stays, for a later resume)."""
        self._release()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plan_differences(stored: ItemTable, requested: ItemTable) -> list[str]:
    if len(stored) != len(requested):
        return [f"items: stored plan has {len(stored)} items, requested {len(requested)}"]
    out = []
    for c in ITEM_COLUMNS:
        diff = np.flatnonzero(getattr(stored, c) != getattr(requested, c))
        if len(diff):
            i = diff[0]
            out.append(f"items.{c}: {len(diff)} differ (first at row {i}: stored {getattr(stored, c)[i]!r}, "
                       f"requested {getattr(requested, c)[i]!r})")
    return out


def open_writer(path: str | Path, provenance: Provenance, items: ItemTable, dim: int, positions: int | None = None,
                overwrite: bool = False) -> StoreWriter:
    """Start writing a store, or resume the interrupted one at `path` if it was made from the same inputs.

    `items` is the full plan in extraction order; features are appended in that order (`writer.pending`
    lists what is left). A finished store with the same provenance gives a writer that is already
    `complete`. A store or journal with other provenance or another plan raises `ProvenanceMismatch`
    naming every differing field, unless `overwrite` (which deletes it first).
    """
    path = Path(path)
    backend_for_suffix(path)
    if provenance.modality == "image" and not positions:
        raise StoreError(f"{path}: an image store needs `positions` (P of the (N, P, D) features)")
    if provenance.modality == "audio":
        positions = None
    if int(provenance.dim) != int(dim):
        raise StoreError(f"{path}: provenance says dim {provenance.dim} but the writer was given {dim}")
    problems = items.problems()
    if problems:
        raise StoreError(f"{path}: the item table is not fit for a store: " + "; ".join(problems))
    if overwrite:
        remove_store(path)
    journal = journal_path(path)
    if path.exists():
        existing = open_store(path, allow_incomplete=True)
        try:
            diff = existing.provenance.mismatches(provenance)
            held = set(existing.items.ids) | set(existing.skipped.ids)
            if existing.complete and not diff and held != set(items.ids):
                diff = [f"items: the store holds {len(held)} items (written or skipped), the request {len(items)}"]
            if diff or not existing.complete:
                raise ProvenanceMismatch(path, diff or ["complete: the store at this path is not complete"])
        finally:
            existing.close()
        if journal.exists():
            shutil.rmtree(journal)  # left behind by a kill between the rename and the clean-up
        return StoreWriter(path, provenance, items, dim, positions, complete=True)
    remove_path(tmp_path(path))  # a pack interrupted before its rename: the journal still has everything
    writer = StoreWriter(path, provenance, items, dim, positions)
    if journal.exists() and (journal / "meta.json").exists():
        meta = json.loads((journal / "meta.json").read_text())
        diff = Provenance.from_dict(meta["provenance"]).mismatches(provenance)
        if meta["dim"] != int(dim) or meta["positions"] != positions:
            diff.append(f"shape: stored dim {meta['dim']} positions {meta['positions']}, "
                        f"requested dim {dim} positions {positions}")
        with np.load(journal / "plan.npz") as plan:
            stored_items = ItemTable(**{c: decode_strings(plan[c]) for c in ITEM_COLUMNS})
        diff += _plan_differences(stored_items, items)
        if diff:
            raise ProvenanceMismatch(path, diff)
        writer.provenance = Provenance.from_dict(meta["provenance"])  # keep the first run's creation time
        writer._lock()
        writer._replay()
        log.info("resuming %s: %d of %d items done", path, writer.done, len(items))
    else:
        remove_path(journal)  # a journal without its meta.json died while being created
        make_dirs(path.parent)
        writer._create_journal()
        writer._lock()
    return writer


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    """An .npz journal file, written under a temporary name and renamed (cache.atomic)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a handle: np.savez would append ".npz" to a temporary's name
            np.savez(fh, **arrays)
    atomic_write(path, write)


def _non_finite_summary(a: np.ndarray) -> str:
    """How many values are NaN, inf, or finite but beyond float16's range (they would cast to inf)."""
    wide = np.asarray(a, np.float64)
    finite = np.isfinite(wide)
    over = int((finite & (np.abs(wide) > FLOAT16_MAX)).sum())
    return (f"NaN: {int(np.isnan(wide).sum())}, inf: {int(np.isinf(wide).sum())}, "
            f"finite beyond ±{FLOAT16_MAX:.0f}: {over}"
            + (f", max |x| = {np.abs(wide[finite]).max():.6g}" if over else ""))
