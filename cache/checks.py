"""The structural checks of one store file, shared by the reader (which refuses a store that fails any)
and by `verify` (which reports every failure).

A store's small arrays must agree with each other and with its features array before any feature is read:
offsets that disagree with lengths, a missing metadata column or a features array of the wrong shape would
otherwise give wrong rows, not an error. Content (checksums, NaN/inf) is checked by reading the features
(reader.py, verify.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import BackendReader
from .errors import REEXTRACT, CorruptStore
from .items import ITEM_COLUMNS, SKIP_COLUMNS, ItemTable, SkippedTable, decode_strings
from .provenance import FORMAT_VERSION, READABLE_FORMATS, Provenance


@dataclass(frozen=True, eq=False)
class FileTables:
    """The small arrays of one store file, decoded: everything but the features."""

    provenance: Provenance
    items: ItemTable
    skipped: SkippedTable
    lengths: np.ndarray           # int64 (N,)
    offsets: np.ndarray | None    # int64 (N,), audio only
    checksums: np.ndarray         # uint32 (N,), CRC-32C of each item's float16 bytes


def read_tables(f: BackendReader) -> FileTables:
    """Decode a file's provenance and columns; `CorruptStore` naming every missing or malformed one."""
    try:
        prov = Provenance.from_dict(f.attrs["provenance"])
    except (ValueError, TypeError, KeyError) as e:
        raise CorruptStore(f"{f.path}: provenance unreadable ({e}); {REEXTRACT}") from None
    wanted = ["lengths", "checksums"] + (["offsets"] if prov.modality == "audio" else []) \
        + [f"items/{c}" for c in ITEM_COLUMNS] + [f"skipped/{c}" for c in SKIP_COLUMNS]
    missing = [name for name in wanted if not f.has_column(name)]
    if missing:
        old = prov.format_version < FORMAT_VERSION
        raise CorruptStore(f"{f.path}: missing column(s) {', '.join(missing)}"
                           + (f" (written by store format {prov.format_version}, before per-item checksums)"
                              if old else "") + f"; {REEXTRACT}")
    bad: list[str] = []

    def strings(name: str) -> np.ndarray:
        raw = f.column(name)
        if raw.ndim != 2 or raw.dtype != np.uint8:
            bad.append(f"{name} is {raw.dtype} {raw.shape}, expected (N, W) uint8")
            return np.array([], dtype=str)
        try:
            return decode_strings(raw)
        except UnicodeDecodeError as e:
            bad.append(f"{name} is not UTF-8 ({e})")
            return np.array([], dtype=str)

    def integers(name: str, kind: str) -> np.ndarray:
        raw = f.column(name)
        if raw.ndim != 1 or raw.dtype.kind != kind:
            bad.append(f"{name} is {raw.dtype} {raw.shape}, expected a 1-d {'unsigned ' if kind == 'u' else ''}"
                       "integer array")
        return raw.reshape(-1).astype(np.int64 if kind == "i" else np.uint32)

    lengths = integers("lengths", "i")
    offsets = integers("offsets", "i") if prov.modality == "audio" else None
    checksums = integers("checksums", "u")
    cols = {c: strings(f"items/{c}") for c in ITEM_COLUMNS}
    skipped = {c: strings(f"skipped/{c}") for c in SKIP_COLUMNS}
    n = len(lengths)
    for name, col in [(f"items/{c}", v) for c, v in cols.items()] + [("checksums", checksums)] \
            + ([("offsets", offsets)] if offsets is not None else []):
        if len(col) != n and not any(b.startswith(name) for b in bad):
            bad.append(f"{name} has {len(col)} entries, lengths has {n}")
    if len({len(v) for v in skipped.values()}) > 1:
        bad.append("the skipped columns differ in length")
    if bad:
        raise CorruptStore(f"{f.path}: " + "; ".join(bad) + f"; {REEXTRACT}")
    return FileTables(prov, ItemTable(**cols), SkippedTable(*skipped.values()), lengths, offsets, checksums)


def layout_problems(f: BackendReader, t: FileTables) -> list[str]:
    """What makes the features array unreadable item by item: shape, dtype, offsets, lengths, damage."""
    out = list(f.damage())
    prov, shape, n, lengths = t.provenance, f.features_shape, len(t.lengths), t.lengths
    if prov.format_version not in READABLE_FORMATS:
        out.append(f"store format {prov.format_version}, this vgsme reads formats "
                   f"{', '.join(map(str, READABLE_FORMATS))}")
    elif prov.format_version != prov.layout_format:
        out.append(f"store format {prov.format_version} but its provenance "
                   + (f"has layers {list(prov.layers)} (format {prov.layout_format})" if prov.layers
                      else f"has no layer axis (format {prov.layout_format})"))
    if f.features_dtype != np.float16:
        out.append(f"features are {f.features_dtype}, expected float16")
    if shape[-1] != prov.dim:
        out.append(f"features have dim {shape[-1]}, provenance says {prov.dim}")
    if prov.modality == "audio":
        if prov.layers is None and len(shape) != 2:
            out.append(f"audio features have shape {shape}, expected (frames, D)")
        if prov.layers is not None and (len(shape) != 3 or shape[1] != len(prov.layers)):
            out.append(f"audio features have shape {shape}, expected (frames, {len(prov.layers)}, D) for the "
                       f"layers {list(prov.layers)} of its provenance")
        if (lengths < 1).any():
            out.append(f"{int((lengths < 1).sum())} item(s) with no frames (first {t.items.ids[np.argmax(lengths < 1)]})")
        expect = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if n else t.offsets
        broken = np.flatnonzero(t.offsets != expect)
        if len(broken):
            i = broken[0]
            out.append(f"offsets inconsistent with lengths from item {i} ({t.items.ids[i]}): "
                       f"{t.offsets[i]} != {expect[i]} (offsets must be monotone and contiguous)")
        if int(lengths.sum()) != shape[0]:
            out.append(f"lengths sum to {int(lengths.sum())} frames but features hold {shape[0]}")
    elif len(shape) != 3 or shape[0] != n:
        out.append(f"image features have shape {shape}, expected ({n}, P, D)")
    elif (lengths != shape[1]).any():
        out.append(f"image lengths must all equal P = {shape[1]}")
    return out


def metadata_problems(f: BackendReader, t: FileTables) -> list[str]:
    """What makes the item table or attributes wrong, though the features could be read."""
    out = []
    committed = f.attrs.get("committed")
    if committed != len(t.lengths):
        out.append(f"committed = {committed} but the store holds {len(t.lengths)} items")
    out += [f"metadata: {p}" for p in t.items.problems()]
    if t.provenance.modality == "audio":
        wrong = np.flatnonzero(t.items.lang != t.provenance.lang)
        if len(wrong):
            out.append(f"metadata: {len(wrong)} item(s) whose lang is not the store's {t.provenance.lang!r} "
                       f"(first {t.items.ids[wrong[0]]}={t.items.lang[wrong[0]]!r})")
    if set(t.skipped.ids.tolist()) & set(t.items.ids.tolist()):
        out.append("metadata: items listed both as stored and as skipped")
    return out
