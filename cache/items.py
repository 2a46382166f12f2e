"""The item table of a store (per-item metadata columns) and its table of skipped items.

Both are plain numpy unicode columns in store order. On disk every string column is a (N, W) uint8 matrix
of zero-padded UTF-8 (`encode_strings`): a representation that HDF5 and Zarr v3 store natively and alike.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .vocab import KINDS, SPLITS

ITEM_COLUMNS = ("ids", "concept", "kind", "lang", "speaker", "source", "split")
SKIP_COLUMNS = ("ids", "path", "reason")


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
        """What makes this table unfit for a store: duplicate or empty ids, empty concept/split, unknown kinds
        or splits. The writer refuses such a table and the reader refuses a store holding one."""
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
        bad = np.flatnonzero(~np.isin(self.split, SPLITS) & (self.split != ""))
        if len(bad):
            out.append(f"{len(bad)} item(s) with a split other than {SPLITS}: "
                       + ", ".join(f"{self.ids[i]}={self.split[i]!r}" for i in bad[:10]))
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
