"""The HDF5 backend (h5py): contiguous datasets, read with hyperslab selections that h5py does fast.

Why contiguous and not chunked: a store is written once, by packing its finished journal (see writer.py), so
nothing needs resizable datasets. Measured on this project's machine (docs/cache.md, bench/cache_read.py),
h5py's fancy selection `ds[sorted_idx]` on a chunked dataset costs ~4 s per 720-image batch, but on a
contiguous dataset it is the fastest HDF5 path (~50 ms); whole-array slices stream at disk speed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .backend import Backend, register
from .errors import REEXTRACT, CorruptStore, StoreError
from .layout import SUFFIX_FORMAT
from .rawio import RawRows

NAME = "hdf5"
_ATTRS = ("committed", "complete", "modality", "dim", "positions", "format_version", "format")


class HDF5Writer:
    """Writes the features of one store file row block by row block (blocks arrive in order)."""

    def __init__(self, path: Path, shape: tuple[int, ...], columns: dict[str, np.ndarray], attrs: dict[str, Any]):
        self._f = h5py.File(path, "w", track_order=False)
        self._ds = self._f.create_dataset("features", shape=shape, dtype=np.float16, track_times=False)
        for name, values in columns.items():
            self._f.create_dataset(name, data=values, track_times=False)
        _write_attrs(self._f, attrs)

    def write_features(self, start: int, block: np.ndarray) -> None:
        if len(block):
            self._ds.write_direct(np.ascontiguousarray(block, np.float16), dest_sel=np.s_[start:start + len(block)])

    def finish(self) -> None:
        self._f.flush()
        self._f.attrs["complete"] = True
        self._f.close()


def _write_attrs(f: h5py.File, attrs: dict[str, Any]) -> None:
    f.attrs["provenance"] = json.dumps(attrs["provenance"], sort_keys=True)
    for k in _ATTRS:
        v = attrs.get(k)
        f.attrs[k] = 0 if v is None else v


def create(path: Path, shape: tuple[int, ...], columns: dict[str, np.ndarray], attrs: dict[str, Any]) -> HDF5Writer:
    return HDF5Writer(Path(path), shape, columns, attrs)


def _attr(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return value.decode() if isinstance(value, bytes) else value


class HDF5Reader:
    """One finished .h5 store file opened for reading."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise StoreError(f"{self.path} is not a readable HDF5 store ({e}); delete it and extract again") from None
        try:
            a = self._f.attrs
            if "provenance" not in a or not isinstance(self._f.get("features"), h5py.Dataset):
                raise StoreError(f"{self.path} is an HDF5 file but not a vgsme store (no provenance/features)")
            self.attrs: dict[str, Any] = {k: _attr(a[k]) for k in _ATTRS if k in a}
            try:
                self.attrs["provenance"] = json.loads(_attr(a["provenance"]))
            except (TypeError, ValueError) as e:
                raise CorruptStore(f"{self.path}: provenance is not JSON ({e}); {REEXTRACT}") from None
            if self.attrs.get("format", NAME) != NAME:
                raise CorruptStore(f"{self.path}: an HDF5 file whose format attribute says {self.attrs['format']!r}; "
                                   f"{REEXTRACT}")
            self.attrs["complete"] = bool(self.attrs.get("complete", False))
            if self.attrs.get("positions") == 0:
                self.attrs["positions"] = None
            self._ds = self._f["features"]
            self.features_shape = tuple(int(s) for s in self._ds.shape)
            self.features_dtype = np.dtype(self._ds.dtype)
            self._raw = _raw_rows(self.path, self._ds)
        except BaseException:
            self._f.close()
            raise

    def has_column(self, name: str) -> bool:
        return isinstance(self._f.get(name), h5py.Dataset)

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self._f[name][()])

    def damage(self) -> list[str]:
        """A file cut short: the features dataset must lie wholly inside the file."""
        offset = self._ds.id.get_offset()
        need = 0 if offset is None else offset + self._ds.id.get_storage_size()
        have = self.path.stat().st_size
        if need > have:
            return [f"file truncated: {have} bytes, the features end at byte {need}"]
        return []

    def read_rows_into(self, start: int, stop: int, out: np.ndarray) -> None:
        if stop <= start:
            return
        if self._raw is not None:
            self._raw.read_runs(np.array([start]), np.array([stop - start]), [out[:stop - start]])
        else:
            self._ds.read_direct(out, source_sel=np.s_[start:stop], dest_sel=np.s_[0:stop - start])

    def read_items_into(self, idx: np.ndarray, out: np.ndarray) -> None:
        if not len(idx):
            return
        if self._raw is not None:
            self._raw.read_runs(idx, np.ones(len(idx), np.int64), [out[j:j + 1] for j in range(len(idx))])
        else:  # one fancy selection on a contiguous dataset: HDF5 merges it into one pass over the file
            self._ds.read_direct(out, source_sel=np.s_[idx.tolist()], dest_sel=np.s_[0:len(idx)])

    def read_audio_into(self, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
        if self._raw is not None:
            self._raw.read_runs(starts, lengths, [out[j] for j in range(len(starts))])
            return
        for j, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
            if n:
                self._ds.read_direct(out[j], source_sel=np.s_[s:s + n], dest_sel=np.s_[0:n])

    def nbytes_on_disk(self) -> int:
        return self.path.stat().st_size

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()


def _raw_rows(path: Path, ds: h5py.Dataset) -> RawRows | None:
    """Positioned reads straight from the file when the dataset is plain contiguous little-endian float16."""
    offset = ds.id.get_offset()
    plain = (ds.chunks is None and ds.compression is None and not ds.external and offset is not None
             and ds.dtype == np.dtype("<f2") and len(ds.shape) >= 1)
    if not plain:
        return None
    return RawRows(lambda _k: path, offset, max(1, ds.shape[0]), ds.shape[1:], ds.shape[0], store=path)


def recognises(path: Path) -> bool:
    """An HDF5 file by its signature (h5py also finds one behind a user block)."""
    return Path(path).is_file() and h5py.is_hdf5(str(path))


def open_reader(path: Path) -> HDF5Reader:
    return HDF5Reader(path)


BACKEND = register(Backend(NAME, "HDF5", tuple(s for s, f in SUFFIX_FORMAT.items() if f == NAME), recognises,
                           create, open_reader))
