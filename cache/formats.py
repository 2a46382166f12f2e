"""The built-in backends (importing this module registers them) and how a path finds its backend.

The writer's backend follows the suffix of the path it writes; the reader's follows what the file is.
"""
from __future__ import annotations

from pathlib import Path

from . import hdf5, zarr_backend  # noqa: F401  (registration)
from .backend import Backend, registered
from .errors import StoreError


def backend_for_suffix(path: str | Path) -> Backend:
    """The backend chosen by a store path's suffix (.h5/.hdf5: HDF5, .zarr: Zarr)."""
    suffix = Path(path).suffix
    for b in registered():
        if suffix in b.suffixes:
            return b
    raise StoreError(f"{path}: a store path must end in {', '.join(s for b in registered() for s in b.suffixes)}")


def store_format(path: str | Path) -> str:
    """'hdf5' or 'zarr' from the file name's suffix."""
    return backend_for_suffix(path).name


def backend_of(path: str | Path) -> Backend:
    """The backend that recognises the existing file or folder at `path`, whatever its name."""
    path = Path(path)
    for b in registered():
        if b.recognises(path):
            return b
    try:
        expected = backend_for_suffix(path).title
    except StoreError:
        expected = " or ".join(b.title for b in registered())
    raise StoreError(f"{path} is not a readable {expected} store: it is neither "
                     + " nor ".join(f"a {b.title} store" for b in registered())
                     + "; delete it and extract again")
