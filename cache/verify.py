"""`python -m cache info|verify`: what a store holds, and whether it is sound.

`verify_store` looks below the reader interface (at the raw arrays and attributes) so that it can report a
broken store instead of failing to open it: every problem becomes one line naming the store and the fix.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .provenance import Provenance
from .store import (ITEM_COLUMNS, KINDS, LOAD_SLICE_BYTES, SKIP_COLUMNS, ItemTable, StoreError, _backend,
                    decode_strings, journal_path, open_store, store_format)

SPLITS = ("train", "valid", "test")


def verify_store(path: str | Path, slice_bytes: int = LOAD_SLICE_BYTES) -> list[str]:
    """Every problem found in one store file (a shard is verified alone); an empty list means sound."""
    path = Path(path)
    try:
        fmt = store_format(path)
        if not path.exists():
            return [f"{path}: does not exist" + (" (extraction interrupted or running: rerun it to finish)"
                                                 if journal_path(path).exists() else "")]
        f = _backend(fmt).open_reader(path)
    except StoreError as e:
        return [str(e)]
    try:
        return [f"{path.name}: {p}" for p in _problems(f, slice_bytes)]
    finally:
        f.close()


def _problems(f: Any, slice_bytes: int) -> list[str]:
    out: list[str] = []
    try:
        prov = Provenance.from_dict(f.attrs["provenance"])
    except (ValueError, TypeError, KeyError) as e:
        return [f"provenance unreadable: {e}"]
    if not f.attrs.get("complete"):
        out.append("not complete: its extraction did not finish; rerun it")
    shape, dtype = f.features_shape, f.features_dtype
    if dtype != np.float16:
        out.append(f"features are {dtype}, expected float16")
    try:
        cols = {c: decode_strings(f.column(f"items/{c}")) for c in ITEM_COLUMNS}
        skipped = {c: decode_strings(f.column(f"skipped/{c}")) for c in SKIP_COLUMNS}
        lengths = f.column("lengths").astype(np.int64)
        offsets = f.column("offsets").astype(np.int64) if prov.modality == "audio" else None
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        return out + [f"metadata unreadable ({e}); extract again"]
    n = len(lengths)
    committed = int(f.attrs.get("committed", -1))
    if committed != n:
        out.append(f"committed = {committed} but the store holds {n} items")
    for c, v in cols.items():
        if len(v) != n:
            out.append(f"item column {c} has {len(v)} entries, expected {n}")
    if out and any("item column" in p for p in out):
        return out
    items = ItemTable(**cols)
    out += [f"metadata: {p}" for p in items.problems()]
    bad_split = np.flatnonzero(~np.isin(items.split, SPLITS))
    if len(bad_split):
        out.append(f"metadata: {len(bad_split)} item(s) with a split other than {SPLITS} "
                   f"(first {items.ids[bad_split[0]]}={items.split[bad_split[0]]!r})")
    if len(set(skipped["ids"]) & set(items.ids)):
        out.append("items listed both as stored and as skipped")
    if shape[-1] != prov.dim:
        out.append(f"features have dim {shape[-1]}, provenance says {prov.dim}")
    if prov.modality == "audio":
        wrong_lang = np.flatnonzero(items.lang != prov.lang)
        if len(wrong_lang):
            out.append(f"metadata: {len(wrong_lang)} item(s) whose lang is not the store's {prov.lang!r} "
                       f"(first {items.ids[wrong_lang[0]]}={items.lang[wrong_lang[0]]!r})")
        if len(shape) != 2:
            out.append(f"audio features have shape {shape}, expected (frames, D)")
        if len(offsets) != n:
            out.append(f"offsets has {len(offsets)} entries, expected {n}")
        else:
            if (lengths < 1).any():
                out.append(f"{int((lengths < 1).sum())} item(s) with no frames (first {items.ids[np.argmax(lengths < 1)]})")
            expect = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if n else offsets
            broken = np.flatnonzero(offsets != expect)
            if len(broken):
                out.append(f"offsets inconsistent with lengths from item {broken[0]} ({items.ids[broken[0]]}): "
                           f"{offsets[broken[0]]} != {expect[broken[0]]} (offsets must be monotone and contiguous)")
            if int(lengths.sum()) != shape[0]:
                out.append(f"lengths sum to {int(lengths.sum())} frames but features hold {shape[0]}")
    else:
        if len(shape) != 3 or shape[0] != n:
            out.append(f"image features have shape {shape}, expected ({n}, P, D)")
        elif (lengths != shape[1]).any():
            out.append(f"image lengths must all equal P = {shape[1]}")
    if not out or all(p.startswith(("metadata", "not complete", "committed")) for p in out):
        out += _scan_finite(f, shape, lengths, offsets, items, slice_bytes)
    return out


def _scan_finite(f: Any, shape: tuple[int, ...], lengths: np.ndarray, offsets: np.ndarray | None,
                 items: ItemTable, slice_bytes: int) -> list[str]:
    """Read the features in big slices and name the items holding NaN or inf."""
    row_elems = int(np.prod(shape[1:]))
    step = max(1, slice_bytes // (row_elems * 2))
    bad_rows: list[np.ndarray] = []
    for a in range(0, shape[0], step):
        b = min(shape[0], a + step)
        block = np.empty((b - a,) + tuple(shape[1:]), np.float16)
        f.read_rows_into(a, b, block)
        finite = np.isfinite(block.reshape(b - a, -1)).all(axis=1)
        if not finite.all():
            bad_rows.append(a + np.flatnonzero(~finite))
    if not bad_rows:
        return []
    rows = np.concatenate(bad_rows)
    item_of = rows if offsets is None else np.searchsorted(offsets, rows, side="right") - 1
    bad = np.unique(item_of)
    return [f"{len(bad)} item(s) hold NaN or inf: {', '.join(items.ids[bad[:10]])}"
            + (" ..." if len(bad) > 10 else "") + "; extract them again"]


def store_info(path: str | Path) -> dict[str, Any]:
    """A JSON-able summary of a store (or of an unfinished store's journal)."""
    path = Path(path)
    if not path.exists() and journal_path(path).exists():
        return _journal_info(path)
    with open_store(path, allow_incomplete=True) as s:
        items = s.items
        per_concept = Counter(items.concept.tolist())
        info: dict[str, Any] = {
            "path": str(path), "format": store_format(path), "complete": s.complete, "items": len(s),
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
