"""Reading stores: `open_store` (one store, or a shard set as one) and `FeatureStore`.

Opening checks everything that can be checked without reading the features (checks.py): a store whose
small arrays disagree with each other or with its features array, a damaged file, or a shard set mixing
stores is refused with one `StoreError` that names the store and the fix. `read()` checks each item it
returns against its stored CRC-32C (integrity.py), so damaged bytes are an error, never data. Whole loads
check every item the first time a file is loaded, then trust a record of that (verified.py).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .backend import BackendReader
from .checks import FileTables, layout_problems, metadata_problems, read_tables
from .errors import REEXTRACT, CorruptStore, IncompleteStore, StoreError
from .files import journal_path
from .formats import backend_of, store_format
from .hashing import sha256_bytes, sha256_json
from .integrity import bad_items, checksum, item_slices
from .items import ItemTable, SkippedTable
from .provenance import Provenance
from .verified import identity, is_verified, mark_verified

if TYPE_CHECKING:
    import torch

    from .memory import InMemoryFeatures

LOAD_SLICE_BYTES = 256 << 20  # whole-store loads read this much per call: big enough for full disk speed


def corrupt_items_error(path: Path, ids: np.ndarray) -> CorruptStore:
    return CorruptStore(f"{path}: {len(ids)} item(s) fail their checksum (the bytes on disk are not those "
                        f"written): {', '.join(ids[:10])}" + (" ..." if len(ids) > 10 else "") + f"; {REEXTRACT}")


class FeatureStore:
    """A store (or a set of shards read as one): metadata in memory, features read on demand or loaded whole."""

    def __init__(self, files: list[BackendReader], tables: list[FileTables]):
        order = sorted(range(len(files)), key=lambda k: tables[k].provenance.shard or (0, 0))
        files, tables = [files[k] for k in order], [tables[k] for k in order]
        self._files, self._tables = files, tables
        first = tables[0].provenance
        if len(files) > 1:
            _check_shard_set(files, tables)
            first = first.replace(shard=None)
        self.provenance: Provenance = first
        self.modality: str = first.modality
        self.dim: int = int(first.dim)
        self.positions: int | None = None if self.modality == "audio" else int(files[0].features_shape[1])
        self.layers: tuple[int, ...] | None = first.layers  # the hidden states of a layer axis, else None
        self.paths = [f.path for f in files]
        self.items = ItemTable.concat([t.items for t in tables])
        self.skipped = SkippedTable(*(np.concatenate([getattr(t.skipped, c) for t in tables])
                                      for c in ("ids", "path", "reason")))
        self.lengths = np.concatenate([t.lengths for t in tables])
        self.checksums = np.concatenate([t.checksums for t in tables])
        self._item_start = np.concatenate([[0], np.cumsum([len(t.lengths) for t in tables])]).astype(np.int64)
        self.complete = all(bool(f.attrs["complete"]) for f in files)
        if self.modality == "audio":
            frames = [int(f.features_shape[0]) for f in files]
            self._frame_start = np.concatenate([[0], np.cumsum(frames)]).astype(np.int64)
            self.offsets = np.concatenate([t.offsets + s for t, s in zip(tables, self._frame_start)])
        else:
            self.offsets = None

    @functools.cached_property
    def fingerprint(self) -> str:
        """A content fingerprint of the store (sha256 hex): equal fingerprints, equal features and metadata.

        It covers the provenance, the item table, the lengths and every item's CRC-32C of its feature bytes,
        so it changes with any feature, not only with the inputs. Runs record it for every store they train
        on, and analyses key their caches by it, so a store rebuilt from a changed corpus or encoder is
        noticed downstream. Shards are fingerprinted as the whole store they form. When and by which package
        version the store was written is left out: an identical rebuild is not a change. Computed once per
        opened store (it hashes the whole item table: about 64 ms for 20,000 items).
        """
        return sha256_json({"provenance": self.provenance.identity(),
                            "items": {c: v.tolist() for c, v in self.items.columns().items()},
                            "lengths": self.lengths.tolist(), "checksums": self.checksums.tolist()})

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (f"FeatureStore({', '.join(p.name for p in self.paths)}: {len(self)} {self.modality} items, "
                f"dim {self.dim}, encoder {self.provenance.encoder})")

    @property
    def row_shape(self) -> tuple[int, ...]:
        """One row of the features array: an audio frame (D,), or (L, D) with a layer axis; an image (P, D)."""
        return tuple(int(v) for v in self._files[0].features_shape[1:])

    def layer_position(self, layer: int | None) -> int | None:
        """Where hidden state `layer` sits on the layer axis; None when `layer` is None (every stored layer)
        or when the store has one layer and `layer` is that one. Any other layer is a `StoreError` naming
        the layers the store holds."""
        if layer is None:
            return None
        if self.layers is None:
            if layer == self.provenance.layer:
                return None
            held = "the final output" if self.provenance.layer is None else f"layer {self.provenance.layer}"
            raise StoreError(f"{self.paths[0]} holds one layer ({held}), not layer {layer}; extract that layer "
                             f"(extract-features --layer {layer}, or --layers all)")
        if layer not in self.layers:
            raise StoreError(f"{self.paths[0]} holds layers {_layer_list(self.layers)}, not layer {layer}; choose "
                             f"one of those, or extract it (extract-features --layers ...)")
        return self.layers.index(layer)

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

    def read(self, indices: Sequence[int] | np.ndarray, layer: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features of the given items, in the given order: (B, T_max, D) float16 zero-padded, and lengths (B,).

        A store with a layer axis gives (B, T_max, L, D), or (B, T_max, D) of hidden state `layer` (one of
        `layers`; see `layer_position`). Reads go to disk in sorted order (each item once) whatever the
        requested order, because that is the order in which both backends read fastest. Every item read is
        checked against its checksum (which covers all its layers, so all are read).
        """
        idx = self._check_indices(indices)
        position = self.layer_position(layer)
        uniq, inverse = np.unique(idx, return_inverse=True)
        lengths = self.lengths[uniq]
        if self.modality == "audio":
            out = np.zeros((len(uniq), int(lengths.max(initial=0))) + self.row_shape, np.float16)
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
                f.read_audio_into(self._tables[s].offsets[local], lengths[a:b], out[a:b])
            else:
                f.read_items_into(local, out[a:b])
            got = np.array([checksum(out[j, :lengths[j]]) for j in range(a, b)], np.uint32)
            bad = np.flatnonzero(got != self.checksums[uniq[a:b]])
            if len(bad):
                raise corrupt_items_error(f.path, self.items.ids[uniq[a:b][bad]])
        if position is not None:
            out = np.ascontiguousarray(out[:, :, position])
        if len(uniq) == len(idx) and np.array_equal(uniq, idx):
            return out, lengths.astype(np.int32)
        return out[inverse], lengths[inverse].astype(np.int32)

    def _file_fingerprint(self, s: int) -> str:
        """The content fingerprint of one file: its provenance and every item's checksum."""
        return sha256_bytes(sha256_json(self._files[s].attrs["provenance"]).encode(), self._tables[s].checksums.tobytes())

    def _file_slices(self, s: int, slice_bytes: int) -> Iterator[tuple[int, int, int, int, bool]]:
        """(item_a, item_b, row_a, row_b, check) over file `s` in item-aligned slices; `check` is False when
        the file, unchanged, is recorded as verified. The caller checks each slice; when every slice has
        been consumed (all passed), the record is written."""
        f, t = self._files[s], self._tables[s]
        ident, fingerprint = identity(f.path), self._file_fingerprint(s)
        check = not is_verified(f.path, fingerprint, ident)
        row_bytes = int(np.prod(f.features_shape[1:])) * 2
        for a, b, ra, rb in item_slices(t.lengths, t.offsets, row_bytes, slice_bytes):
            yield a, b, ra, rb, check
        if check:
            mark_verified(f.path, fingerprint, ident)

    def _check_slice(self, s: int, a: int, b: int, row_a: int, block: np.ndarray) -> None:
        t = self._tables[s]
        bad = bad_items(block, t.lengths[a:b], None if t.offsets is None else t.offsets[a:b], row_a,
                        t.checksums[a:b])
        if len(bad):
            raise corrupt_items_error(self._files[s].path, t.items.ids[a + bad])

    def iter_rows(self, slice_bytes: int = LOAD_SLICE_BYTES) -> Iterator[tuple[int, np.ndarray]]:
        """(first_row, block) over the whole features array in big slices of whole items, each checked
        (verify on first use, see `read_all_into`)."""
        for s, f in enumerate(self._files):
            for a, b, ra, rb, check in self._file_slices(s, slice_bytes):
                block = np.empty((rb - ra,) + tuple(f.features_shape[1:]), np.float16)
                f.read_rows_into(ra, rb, block)
                if check:
                    self._check_slice(s, a, b, ra, block)
                yield self._row_start(s) + ra, block

    def read_all_into(self, out: np.ndarray, slice_bytes: int = LOAD_SLICE_BYTES) -> None:
        """Fill `out` (total_frames or N rows, float16, C-contiguous) with the whole features array.

        The first whole read of a file checks every item's checksum slice by slice (while the slice is still
        in cache) and then records that the file, as it is, was verified (verified.py); later whole reads of
        the unchanged file skip the pass, which would cost a third of the load.
        """
        for s, f in enumerate(self._files):
            first = self._row_start(s)
            for a, b, ra, rb, check in self._file_slices(s, slice_bytes):
                block = out[first + ra:first + rb]
                f.read_rows_into(ra, rb, block)
                if check:
                    self._check_slice(s, a, b, ra, block)

    def _row_start(self, s: int) -> int:
        return int(self._frame_start[s]) if self.modality == "audio" else int(self._item_start[s])

    def load(self, device: str = "cpu", pin: bool = False, dtype: "torch.dtype | None" = None,
             layer: int | None = None) -> "InMemoryFeatures":
        """The whole store as torch tensors on `device` (CPU RAM, optionally pinned, or a CUDA device), every
        item checked against its checksum. `dtype`: float16 (as stored, the default), bfloat16 or float32.
        `layer`: with a layer axis, only that hidden state is kept in memory (None: all of them)."""
        from .memory import InMemoryFeatures  # torch is imported only by those who load
        return InMemoryFeatures.from_store(self, device=device, pin=pin, dtype=dtype, layer=layer)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _layer_list(layers: tuple[int, ...]) -> str:
    """`0..12` for a contiguous run of layers, else `0, 3, 6`."""
    if len(layers) > 2 and list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(map(str, layers))


def _check_shard_set(files: list[BackendReader], tables: list[FileTables]) -> None:
    """Shards must be one store cut in pieces: same provenance but the shard, K-of-N for every K once,
    and no item twice."""
    first = tables[0].provenance
    for f, t in zip(files[1:], tables[1:]):
        diff = first.mismatches(t.provenance, ignore=("shard",))
        if diff:
            raise StoreError(f"shards {files[0].path.name} and {f.path.name} disagree: " + "; ".join(diff))
    shards = [t.provenance.shard for t in tables]
    n = shards[0][1] if shards[0] else None
    want = [(k, n) for k in range(1, (n or 0) + 1)]
    if n is None or sorted(s or (0, 0) for s in shards) != want:
        have = ", ".join(f"{s[0]}-of-{s[1]}" if s else "whole" for s in shards)
        missing = [f"{k}-of-{n}" for k, _ in want if (k, n) not in shards] if n else []
        raise StoreError(f"not a full shard set ({have})"
                         + (f": missing shard(s) {', '.join(missing)}" if missing else ""))
    ids = np.concatenate([t.items.ids for t in tables])
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise StoreError(f"shards {', '.join(f.path.name for f in files)} do not form one store: "
                         f"{int((counts > 1).sum())} item(s) appear in several ({', '.join(uniq[counts > 1][:5])}); "
                         "pass the shards of one extraction")


def open_file(path: Path, allow_incomplete: bool = False) -> tuple[BackendReader, FileTables]:
    """One store file, opened by the backend that recognises it, its tables read and checked."""
    f = backend_of(path).open_reader(path)
    try:
        tables = read_tables(f)
        problems = layout_problems(f, tables) + metadata_problems(f, tables)
        if problems:
            raise CorruptStore(f"{path} is damaged: " + "; ".join(problems) + f"; {REEXTRACT}")
        if not f.attrs.get("complete") and not allow_incomplete:
            raise IncompleteStore(f"{path} is not complete (committed {f.attrs.get('committed')} items); "
                                  "rerun its extraction to finish it")
        return f, tables
    except BaseException:
        f.close()
        raise


def open_store(path_or_paths: str | Path | Sequence[str | Path], allow_incomplete: bool = False) -> FeatureStore:
    """Open a store, or a list of shard paths as one store. The backend is the one that recognises the file.

    An unfinished store is refused (`IncompleteStore`) unless `allow_incomplete`; a store still being
    written exists only as its journal, which is never opened as a store. A damaged store, or shards of
    different stores, are refused (`StoreError`, `CorruptStore`).
    """
    paths = [Path(path_or_paths)] if isinstance(path_or_paths, (str, os.PathLike)) else [Path(p) for p in path_or_paths]
    if not paths:
        raise StoreError("open_store needs at least one path")
    opened: list[tuple[BackendReader, FileTables]] = []
    try:
        for p in paths:
            store_format(p)
            if not p.exists():
                if journal_path(p).exists():
                    raise IncompleteStore(f"{p} is not finished: its extraction was interrupted or is running "
                                          f"(journal {journal_path(p).name}); rerun the same extract-features "
                                          "command to resume it")
                raise StoreError(f"{p} does not exist")
            opened.append(open_file(p, allow_incomplete))
        return FeatureStore([f for f, _ in opened], [t for _, t in opened])
    except BaseException:
        for f, _ in opened:
            f.close()
        raise
