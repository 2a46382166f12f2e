"""The store interface: the item table, the reader (`open_store`) and the resumable writer (`open_writer`).

A store holds, for one (corpus, modality, language, encoder, layer, preprocessing), the float16 features of
every item plus the item metadata and the provenance, so that training and analyses never need the corpus.

Writing is journalled. While a store is being written it lives in `<store>.partial/`: the plan (the item
table, provenance, shape), then one numbered file per committed `append` or `skip`, each written under a
temporary name and renamed, so a `kill -9` at any moment leaves only whole batches behind. Rerunning
`open_writer` with the same provenance and items resumes after the last whole batch. `finish()` packs the
journal, in order, into the backend file under a temporary name, marks it complete and renames it into
place. The store at its final path therefore always holds `complete = True`, and an interrupted-then-resumed
extraction packs exactly the bytes an uninterrupted one does. Packing once at the end also lets each backend
lay out its arrays for reading (contiguous HDF5 datasets, Zarr chunks of many items) instead of for appending.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from .layout import SUFFIX_FORMAT
from .provenance import Provenance

if TYPE_CHECKING:
    from .memory import InMemoryFeatures

log = logging.getLogger(__name__)

ITEM_COLUMNS = ("ids", "concept", "kind", "lang", "speaker", "source", "split")
SKIP_COLUMNS = ("ids", "path", "reason")
KINDS = ("familiar", "novel")
LOAD_SLICE_BYTES = 256 << 20  # whole-store loads read this much per call: big enough for full disk speed


class StoreError(ValueError):
    """A store cannot be opened or written as asked; the message names the store and the fix."""


class ProvenanceMismatch(StoreError):
    """An existing store was made from other inputs than the request; `fields` lists each difference."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        super().__init__(f"{path} was made from different inputs than requested:\n  " + "\n  ".join(fields)
                         + "\nUse another output path, or rebuild it (extract-features --force).")


class IncompleteStore(StoreError):
    """The store was not finished (its extraction was interrupted or is running)."""


# ---------------------------------------------------------------------------------------------- item table
def encode_strings(values: np.ndarray) -> np.ndarray:
    """Strings -> (N, W) uint8 of zero-padded UTF-8: a representation both HDF5 and Zarr v3 store natively."""
    encoded = [str(v).encode("utf-8") for v in values]
    width = max([len(b) for b in encoded], default=0) or 1
    return np.frombuffer(np.array(encoded, dtype=f"S{width}").tobytes(), np.uint8).reshape(len(encoded), width) \
        if encoded else np.zeros((0, 1), np.uint8)


def decode_strings(raw: np.ndarray) -> np.ndarray:
    """Inverse of `encode_strings`: (N, W) uint8 -> numpy unicode array."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if raw.shape[0] == 0:
        return np.array([], dtype="<U1")
    return np.char.decode(raw.view(f"S{raw.shape[1]}").reshape(-1), "utf-8")


@dataclass(frozen=True, eq=False)
class ItemTable:
    """Per-item metadata, one numpy unicode array per column, in store order. `lang`/`speaker` are "" for images."""

    ids: np.ndarray
    concept: np.ndarray
    kind: np.ndarray
    lang: np.ndarray
    speaker: np.ndarray
    source: np.ndarray
    split: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ids)
        for f in fields(self):
            col = np.asarray(getattr(self, f.name), dtype=str)
            if col.ndim != 1 or len(col) != n:
                raise ValueError(f"item column {f.name!r} has shape {col.shape}, expected ({n},)")
            object.__setattr__(self, f.name, col)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> "ItemTable":
        """From dicts with the column names (`id` is accepted for `ids`); missing lang/speaker/source are ""."""
        records = list(records)
        cols: dict[str, list[str]] = {c: [] for c in ITEM_COLUMNS}
        for i, r in enumerate(records):
            for c in ITEM_COLUMNS:
                key = "id" if c == "ids" and "id" in r else c
                if key not in r and c in ("ids", "concept", "kind", "split"):
                    raise ValueError(f"item record {i} ({r}) lacks {c!r}")
                v = r.get(key, "")
                cols[c].append("" if v is None else str(v))
        return cls(**{c: np.array(v, dtype=str) for c, v in cols.items()})

    @classmethod
    def concat(cls, tables: Sequence["ItemTable"]) -> "ItemTable":
        return cls(**{c: np.concatenate([getattr(t, c) for t in tables]) for c in ITEM_COLUMNS})

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ItemTable) and all(
            np.array_equal(getattr(self, c), getattr(other, c)) for c in ITEM_COLUMNS)

    def columns(self) -> dict[str, np.ndarray]:
        return {c: getattr(self, c) for c in ITEM_COLUMNS}

    def to_records(self) -> list[dict[str, str]]:
        """One dict per item, keys `id, concept, kind, lang, speaker, source, split`."""
        names = ["id" if c == "ids" else c for c in ITEM_COLUMNS]
        return [dict(zip(names, row)) for row in zip(*(getattr(self, c).tolist() for c in ITEM_COLUMNS))]

    def index_of(self, ids: Iterable[str]) -> np.ndarray:
        """Positions of `ids` in this table; KeyError naming the ids that are not in it."""
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=str)
        order = np.argsort(self.ids, kind="stable")
        pos = np.searchsorted(self.ids, ids, sorter=order)
        pos = np.minimum(pos, max(len(order) - 1, 0))
        found = order[pos] if len(order) else np.zeros(len(ids), int)
        ok = (self.ids[found] == ids) if len(order) else np.zeros(len(ids), bool)
        if not ok.all():
            missing = ids[~ok]
            raise KeyError(f"{len(missing)} id(s) not in the store: {', '.join(missing[:10])}"
                           + (" ..." if len(missing) > 10 else ""))
        return found.astype(np.int64)

    def mask(self, **criteria: str | Iterable[str]) -> np.ndarray:
        """Boolean mask of the items whose columns match, e.g. `mask(split="train", kind="familiar")`;
        a value may be one string or a collection of allowed strings."""
        m = np.ones(len(self), bool)
        for col, want in criteria.items():
            if col == "id":
                col = "ids"
            if col not in ITEM_COLUMNS:
                raise ValueError(f"unknown item column {col!r}; columns are {ITEM_COLUMNS}")
            values = [want] if isinstance(want, str) else list(want)
            m &= np.isin(getattr(self, col), values)
        return m

    def select(self, which: np.ndarray | Sequence[int]) -> "ItemTable":
        """The rows picked by a boolean mask or an index array, in that order."""
        return ItemTable(**{c: getattr(self, c)[np.asarray(which)] for c in ITEM_COLUMNS})

    def problems(self) -> list[str]:
        """What makes this table unfit for a store: duplicate or empty ids, empty concept/split, unknown kinds."""
        out = []
        uniq, counts = np.unique(self.ids, return_counts=True)
        if (counts > 1).any():
            out.append(f"duplicate ids: {', '.join(uniq[counts > 1][:10])}")
        for col in ("ids", "concept", "split"):
            empty = np.flatnonzero(getattr(self, col) == "")
            if len(empty):
                out.append(f"{len(empty)} item(s) with an empty {col} (rows {', '.join(map(str, empty[:10]))})")
        bad = np.flatnonzero(~np.isin(self.kind, KINDS))
        if len(bad):
            out.append(f"{len(bad)} item(s) with a kind other than {KINDS}: "
                       + ", ".join(f"{self.ids[i]}={self.kind[i]!r}" for i in bad[:10]))
        return out


@dataclass(frozen=True)
class SkippedTable:
    """Items left out of a store (`--skip-bad`): their id, media path and the reason."""

    ids: np.ndarray
    path: np.ndarray
    reason: np.ndarray

    @classmethod
    def empty(cls) -> "SkippedTable":
        return cls(*(np.array([], dtype=str) for _ in SKIP_COLUMNS))

    def __len__(self) -> int:
        return len(self.ids)

    def columns(self) -> dict[str, np.ndarray]:
        return {c: getattr(self, c) for c in SKIP_COLUMNS}

    def to_records(self) -> list[dict[str, str]]:
        return [{"id": i, "path": p, "reason": r} for i, p, r in zip(self.ids, self.path, self.reason)]


# ----------------------------------------------------------------------------------------- backend protocol
class BackendReader(Protocol):
    """One finished store file of one backend (hdf5.py, zarr_backend.py)."""

    path: Path
    attrs: dict[str, Any]         # provenance (dict), committed, complete, modality, dim, positions
    features_shape: tuple[int, ...]
    features_dtype: np.dtype

    def column(self, name: str) -> np.ndarray: ...                       # a whole small array
    def read_rows_into(self, start: int, stop: int, out: np.ndarray) -> None: ...   # features[start:stop]
    def read_items_into(self, idx: np.ndarray, out: np.ndarray) -> None: ...        # images, idx sorted unique
    def read_audio_into(self, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None: ...
    def nbytes_on_disk(self) -> int: ...
    def close(self) -> None: ...


class BackendWriter(Protocol):
    """Packs a journal into one store file; created by `hdf5.create` / `zarr_backend.create`."""

    def write_features(self, start: int, block: np.ndarray) -> None: ...  # rows written strictly in order
    def finish(self) -> None: ...                                           # flush, complete = True, close


def _backend(fmt: str):
    if fmt == "hdf5":
        from . import hdf5 as mod
    elif fmt == "zarr":
        from . import zarr_backend as mod
    else:
        raise StoreError(f"unknown store format {fmt!r}")
    return mod


def store_format(path: Path) -> str:
    """'hdf5' or 'zarr' from the file name's suffix."""
    fmt = SUFFIX_FORMAT.get(Path(path).suffix)
    if fmt is None:
        raise StoreError(f"{path}: a store path must end in {', '.join(SUFFIX_FORMAT)}")
    return fmt


def journal_path(path: Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def remove_store(path: Path) -> None:
    """Delete a store, its journal and any half-packed temporary (what `--force` does before rewriting)."""
    path = Path(path)
    for p in (path, journal_path(path), _tmp_path(path)):
        _remove(p)


# ---------------------------------------------------------------------------------------------------- reader
class FeatureStore:
    """A store (or a set of shards read as one): metadata in memory, features read on demand or loaded whole."""

    def __init__(self, files: list[BackendReader]):
        self._files = files
        provs = [Provenance.from_dict(f.attrs["provenance"]) for f in files]
        first = provs[0]
        for f, p in zip(files[1:], provs[1:]):
            diff = first.mismatches(p, ignore=("shard",))
            if diff:
                raise StoreError(f"shards {files[0].path.name} and {f.path.name} disagree: " + "; ".join(diff))
        if len(files) > 1:
            shards = [p.shard for p in provs]
            n = shards[0][1] if shards[0] else None
            want = [(k, n) for k in range(1, (n or 0) + 1)]
            if n is None or sorted(shards) != want:
                have = ", ".join(f"{s[0]}-of-{s[1]}" if s else "whole" for s in shards)
                missing = [f"{k}-of-{n}" for k, _ in want if (k, n) not in shards] if n else []
                raise StoreError(f"not a full shard set ({have})"
                                 + (f": missing shard(s) {', '.join(missing)}" if missing else ""))
            files.sort(key=lambda f: Provenance.from_dict(f.attrs["provenance"]).shard)
            first = first.replace(shard=None)
        self.provenance: Provenance = first
        self.modality: str = first.modality
        self.dim: int = int(first.dim)
        self.positions: int | None = None if self.modality == "audio" else int(files[0].features_shape[1])
        self.paths = [f.path for f in files]
        self.items = ItemTable.concat([ItemTable(**{c: decode_strings(f.column(f"items/{c}")) for c in ITEM_COLUMNS})
                                       for f in files])
        self.skipped = SkippedTable(*(np.concatenate([decode_strings(f.column(f"skipped/{c}")) for f in files])
                                      for c in SKIP_COLUMNS))
        self.lengths = np.concatenate([f.column("lengths").astype(np.int64) for f in files])
        counts = [int(f.attrs["committed"]) for f in files]
        self._item_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.complete = all(bool(f.attrs["complete"]) for f in files)
        if self.modality == "audio":
            self._local_offsets = [f.column("offsets").astype(np.int64) for f in files]
            frames = [int(f.features_shape[0]) for f in files]
            self._frame_start = np.concatenate([[0], np.cumsum(frames)]).astype(np.int64)
            self.offsets = np.concatenate([o + s for o, s in zip(self._local_offsets, self._frame_start)])
        else:
            self.offsets = None

    @property
    def fingerprint(self) -> str:
        """A content fingerprint of the store (sha256 hex): equal fingerprints, equal features and metadata.

        Runs record it for every store they train on, and analyses key their caches by it, so a store
        rebuilt from a changed corpus or encoder is noticed downstream. Shards are fingerprinted as the
        whole store they form.
        """
        from .hashing import sha256_json
        return sha256_json({"provenance": self.provenance.to_dict(),
                            "items": {c: v.tolist() for c, v in self.items.columns().items()},
                            "lengths": self.lengths.tolist()})

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (f"FeatureStore({', '.join(p.name for p in self.paths)}: {len(self)} {self.modality} items, "
                f"dim {self.dim}, encoder {self.provenance.encoder})")

    @property
    def total_frames(self) -> int:
        """Rows of the features array: frames for audio, items for images."""
        return int(sum(f.features_shape[0] for f in self._files))

    @property
    def nbytes(self) -> int:
        """Bytes of float16 features."""
        return int(sum(np.prod(f.features_shape) * 2 for f in self._files))

    def nbytes_on_disk(self) -> int:
        return sum(f.nbytes_on_disk() for f in self._files)

    @property
    def files(self) -> list[BackendReader]:
        """The backend files (one per shard), for checks that look below the interface (verify, info)."""
        return list(self._files)

    def _check_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"item indices must lie in [0, {len(self)}); got {idx.min()}..{idx.max()}")
        return idx

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features of the given items, in the given order: (B, T_max, D) float16 zero-padded, and lengths (B,).

        Reads go to disk in sorted order (each item once) whatever the requested order, because that is the
        order in which both backends read fastest.
        """
        idx = self._check_indices(indices)
        uniq, inverse = np.unique(idx, return_inverse=True)
        lengths = self.lengths[uniq]
        if self.modality == "audio":
            out = np.zeros((len(uniq), int(lengths.max(initial=0)), self.dim), np.float16)
        else:
            out = np.empty((len(uniq), self.positions, self.dim), np.float16)
        # uniq is sorted and shards hold consecutive items, so each shard's part is a contiguous run of rows
        bounds = np.searchsorted(uniq, self._item_start)
        for s, f in enumerate(self._files):
            a, b = bounds[s], bounds[s + 1]
            if a == b:
                continue
            local = uniq[a:b] - self._item_start[s]
            if self.modality == "audio":
                f.read_audio_into(self._local_offsets[s][local], lengths[a:b], out[a:b])
            else:
                f.read_items_into(local, out[a:b])
        if len(uniq) == len(idx) and np.array_equal(uniq, idx):
            return out, lengths.astype(np.int32)
        return out[inverse], lengths[inverse].astype(np.int32)

    def _row_slices(self, slice_bytes: int) -> Iterator[tuple[object, int, int, int]]:
        """(file, a, b, first_row): the features array in contiguous slices of about `slice_bytes`."""
        row_bytes = int(np.prod(self._files[0].features_shape[1:])) * 2
        step = max(1, slice_bytes // row_bytes)
        start = 0
        for f in self._files:
            n = f.features_shape[0]
            for a in range(0, n, step):
                yield f, a, min(n, a + step), start + a
            start += n

    def iter_rows(self, slice_bytes: int = LOAD_SLICE_BYTES) -> Iterator[tuple[int, np.ndarray]]:
        """(first_row, block) over the whole features array in big contiguous slices (for scans like verify)."""
        for f, a, b, first in self._row_slices(slice_bytes):
            block = np.empty((b - a,) + tuple(f.features_shape[1:]), np.float16)
            f.read_rows_into(a, b, block)
            yield first, block

    def read_all_into(self, out: np.ndarray, slice_bytes: int = LOAD_SLICE_BYTES) -> None:
        """Fill `out` (total_frames or N rows, float16, C-contiguous) with the whole features array."""
        for f, a, b, first in self._row_slices(slice_bytes):
            f.read_rows_into(a, b, out[first:first + b - a])

    def load(self, device: str = "cpu", pin: bool = False) -> "InMemoryFeatures":
        """The whole store as torch tensors on `device` (CPU RAM, optionally pinned, or a CUDA device)."""
        from .memory import InMemoryFeatures
        return InMemoryFeatures.from_store(self, device=device, pin=pin)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path_or_paths: str | Path | Sequence[str | Path], allow_incomplete: bool = False) -> FeatureStore:
    """Open a store, or a list of shard paths as one store. The backend follows the suffix (.h5 / .zarr).

    An unfinished store is refused (`IncompleteStore`) unless `allow_incomplete`; a store still being
    written exists only as its journal, which is never opened as a store.
    """
    paths = [Path(path_or_paths)] if isinstance(path_or_paths, (str, os.PathLike)) else [Path(p) for p in path_or_paths]
    if not paths:
        raise StoreError("open_store needs at least one path")
    files = []
    try:
        for p in paths:
            fmt = store_format(p)
            if not p.exists():
                if journal_path(p).exists():
                    raise IncompleteStore(f"{p} is not finished: its extraction was interrupted or is running "
                                          f"(journal {journal_path(p).name}); rerun the same extract-features "
                                          "command to resume it")
                raise StoreError(f"{p} does not exist")
            f = _backend(fmt).open_reader(p)
            files.append(f)
            if not f.attrs.get("complete") and not allow_incomplete:
                raise IncompleteStore(f"{p} is not complete (committed {f.attrs.get('committed')} items); "
                                      "rerun its extraction to finish it")
        return FeatureStore(files)
    except BaseException:
        for f in files:
            f.close()
        raise


# ---------------------------------------------------------------------------------------------------- writer
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class StoreWriter:
    """Appends features item by item in plan order, durable after every call; see the module docstring."""

    def __init__(self, path: Path, provenance: Provenance, items: ItemTable, dim: int, positions: int | None,
                 complete: bool = False):
        self.path, self.provenance, self.items = path, provenance, items
        self.dim, self.positions = int(dim), positions
        self.fmt = store_format(path)
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
        self.journal.mkdir(parents=True)
        np.savez(self.journal / "plan.npz", **{c: encode_strings(v) for c, v in self.items.columns().items()})
        meta = {"provenance": self.provenance.to_dict(), "dim": self.dim, "positions": self.positions}
        _atomic_write_bytes(self.journal / "meta.json", json.dumps(meta, indent=1).encode())

    def _lock(self) -> None:
        self._lock_fh = open(self.journal / "lock", "a+")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            self._lock_fh = None
            raise StoreError(f"another process is writing {self.path} (lock {self.journal / 'lock'})") from None

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

        Audio items are (T, D) with T >= 1; images (P, D). Values are stored as float16; a value that is
        not finite in float16 (NaN, or beyond ±65504) is refused naming the item.
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
            want = (self.positions, self.dim) if self.modality == "image" else (None, self.dim)
            if a.ndim != 2 or a.shape[1] != self.dim or (want[0] is not None and a.shape[0] != want[0]) \
                    or a.shape[0] < 1:
                raise StoreError(f"item {item}: features of shape {a.shape}, expected "
                                 f"{'(T>=1, %d)' % self.dim if want[0] is None else str(want)}")
            with np.errstate(over="ignore", invalid="ignore"):
                a16 = a.astype(np.float16)
            if not np.isfinite(a16).all():
                raise StoreError(f"item {item}: features hold NaN or values beyond float16's range "
                                 f"(max |x| = {np.nanmax(np.abs(a.astype(np.float64)))}); check the encoder")
            arrays.append(a16)
        lengths = np.array([len(a) for a in arrays], np.int32)
        block = np.concatenate(arrays) if self.modality == "audio" else np.stack(arrays)
        p = self._event_path(".npz")
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, index=targets.astype(np.int64), lengths=lengths, features=block)
        os.replace(tmp, p)  # the commit point of this batch
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
        _atomic_write_bytes(self._event_path(".skip.json"), json.dumps(rec).encode())
        self._skipped[str(item_id)] = (str(path), str(reason))
        self._advance()

    @property
    def modality(self) -> str:
        return self.provenance.modality

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
        tmp = _tmp_path(self.path)
        _remove(tmp)
        shape = (self._frames, self.dim) if self.modality == "audio" else (n, self.positions, self.dim)
        skipped_ids = [i for i in self.items.ids if i in self._skipped]  # plan order: independent of call order
        skipped = SkippedTable(np.array(skipped_ids, dtype=str),
                               np.array([self._skipped[i][0] for i in skipped_ids], dtype=str),
                               np.array([self._skipped[i][1] for i in skipped_ids], dtype=str))
        attrs = {"provenance": self.provenance.to_dict(), "committed": n, "complete": False,
                 "modality": self.modality, "dim": self.dim, "positions": self.positions,
                 "format_version": self.provenance.format_version}
        # lengths must be known before the metadata columns are written: read them from the parts first
        parts = [p for _, p in self._events() if p.suffix == ".npz"]
        k = 0
        for p in parts:
            with np.load(p) as part:
                ln = part["lengths"]
            lengths[k:k + len(ln)] = ln
            k += len(ln)
        offsets = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)]).astype(np.int64) \
            if n else np.zeros(0, np.int64)
        columns: dict[str, np.ndarray] = {"lengths": lengths}
        if self.modality == "audio":
            columns["offsets"] = offsets
        columns.update({f"items/{c}": encode_strings(v) for c, v in self.items.select(written).columns().items()})
        columns.update({f"skipped/{c}": encode_strings(v) for c, v in skipped.columns().items()})
        writer = _backend(self.fmt).create(tmp, shape, columns, attrs)
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
    store_format(path)
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
    _remove(_tmp_path(path))  # a pack interrupted before its rename: the journal still has everything
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
        _remove(journal)  # a journal without its meta.json died while being created
        path.parent.mkdir(parents=True, exist_ok=True)
        writer._create_journal()
        writer._lock()
    return writer
