"""`python -m cache info|verify`: what a store holds, and whether it is sound.

`verify_store` looks below the reader interface (at the raw arrays and attributes) so that it can report a
broken store instead of failing to open it: every problem becomes one line naming the store and the fix.
It runs the reader's structural checks (checks.py), then reads the whole features array in item-aligned
slices and names every item whose CRC-32C differs from the stored one, and every item holding NaN or inf.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .backend import BackendReader
from .checks import FileTables, layout_problems, metadata_problems, read_tables
from .errors import REEXTRACT, StoreError
from .files import journal_path
from .formats import backend_of, store_format
from .integrity import bad_items, item_slices
from .reader import LOAD_SLICE_BYTES, open_store


def verify_store(path: str | Path, slice_bytes: int = LOAD_SLICE_BYTES) -> list[str]:
    """Every problem found in one store file (a shard is verified alone); an empty list means sound."""
    path = Path(path)
    try:
        store_format(path)
        if not path.exists():
            return [f"{path}: does not exist" + (" (extraction interrupted or running: rerun it to finish)"
                                                 if journal_path(path).exists() else "")]
        f = backend_of(path).open_reader(path)
    except StoreError as e:
        return [str(e)]
    try:
        try:
            tables = read_tables(f)
        except StoreError as e:
            return [str(e)]
        return [f"{path.name}: {p}" for p in _problems(f, tables, slice_bytes)]
    finally:
        f.close()


def _problems(f: BackendReader, t: FileTables, slice_bytes: int) -> list[str]:
    out = [] if f.attrs.get("complete") else ["not complete: its extraction did not finish; rerun it"]
    layout = layout_problems(f, t)
    out += [f"{p}; {REEXTRACT}" for p in layout + metadata_problems(f, t)]
    if not layout:  # the features can be read item by item
        out += _scan(f, t, slice_bytes)
    return out


def _scan(f: BackendReader, t: FileTables, slice_bytes: int) -> list[str]:
    """Read the features in big item-aligned slices; name the items failing their checksum and those holding
    NaN or inf (which only a damaged or foreign store can hold: the writer refuses them)."""
    row_shape = tuple(f.features_shape[1:])
    corrupt: list[np.ndarray] = []
    non_finite: list[np.ndarray] = []
    for a, b, ra, rb in item_slices(t.lengths, t.offsets, int(np.prod(row_shape)) * 2, slice_bytes):
        block = np.empty((rb - ra,) + row_shape, np.float16)
        f.read_rows_into(ra, rb, block)
        offsets = None if t.offsets is None else t.offsets[a:b]
        corrupt.append(a + bad_items(block, t.lengths[a:b], offsets, ra, t.checksums[a:b]))
        finite = np.isfinite(block.reshape(rb - ra, -1)).all(axis=1)
        if not finite.all():
            rows = ra + np.flatnonzero(~finite)
            non_finite.append(rows if offsets is None else np.searchsorted(t.offsets, rows, side="right") - 1)
    out = []
    for bad, what in ((corrupt, "fail their checksum (the bytes on disk are not those written)"),
                      (non_finite, "hold NaN or inf")):
        bad = np.unique(np.concatenate(bad)) if bad else np.zeros(0, np.int64)
        if len(bad):
            out.append(f"{len(bad)} item(s) {what}: {', '.join(t.items.ids[bad[:10]])}"
                       + (" ..." if len(bad) > 10 else "") + f"; {REEXTRACT}")
    return out


def store_info(path: str | Path) -> dict[str, Any]:
    """A JSON-able summary of a store (or of an unfinished store's journal)."""
    path = Path(path)
    if not path.exists() and journal_path(path).exists():
        return _journal_info(path)
    with open_store(path, allow_incomplete=True) as s:
        items = s.items
        per_concept = Counter(items.concept.tolist())
        info: dict[str, Any] = {
            "path": str(path), "format": backend_of(path).name, "complete": s.complete, "items": len(s),
            "modality": s.modality, "dim": s.dim, "features_shape": list(s.files[0].features_shape),
            "dtype": str(s.files[0].features_dtype), "size_on_disk_bytes": s.nbytes_on_disk(),
            "features_bytes": s.nbytes, "skipped": len(s.skipped),
            "per_split": dict(sorted(Counter(items.split.tolist()).items())),
            "per_kind": dict(sorted(Counter(items.kind.tolist()).items())),
            "per_source": dict(sorted(Counter(items.source.tolist()).items())),
            "concepts": len(per_concept),
            "items_per_concept": {"min": min(per_concept.values(), default=0),
                                  "max": max(per_concept.values(), default=0)},
            "provenance": s.provenance.to_dict() | {"shard": s.files[0].attrs["provenance"].get("shard")},
            "fingerprint": s.fingerprint,
        }
        if s.modality == "audio":
            info["frames"] = s.total_frames
            info["frames_per_item"] = {"min": int(s.lengths.min()) if len(s) else 0,
                                       "mean": round(float(s.lengths.mean()), 2) if len(s) else 0.0,
                                       "max": int(s.lengths.max(initial=0))}
            info["speakers"] = len(set(items.speaker.tolist()))
        else:
            info["positions"] = s.positions
        return info


def _journal_info(path: Path) -> dict[str, Any]:
    journal = journal_path(path)
    meta = json.loads((journal / "meta.json").read_text()) if (journal / "meta.json").exists() else {}
    written = 0
    for p in sorted(journal.glob("*.npz")):
        if p.name != "plan.npz":
            with np.load(p) as part:
                written += len(part["index"])
    with np.load(journal / "plan.npz") as plan:
        planned = len(plan["ids"])
    return {"path": str(path), "format": store_format(path), "complete": False, "in_progress": True,
            "journal": str(journal), "items_planned": planned, "items_written": written,
            "items_skipped": len(list(journal.glob("*.skip.json"))), "provenance": meta.get("provenance")}
