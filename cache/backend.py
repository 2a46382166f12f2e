"""What a storage backend provides, and the registry the reader and writer find backends in.

A backend (`hdf5.py`, `zarr_backend.py`) registers itself by name when imported (as lhotse's feature
writers and readers do). The writer picks a backend by the suffix of the path it is asked to write (the
user's choice); the reader asks every backend whether it `recognises` a path from the file's own bytes or
metadata, so a store is never misread because of its name, and a file that no backend recognises is
refused as "not a store". `cache.formats` imports the built-in backends, which registers them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np


class BackendReader(Protocol):
    """One finished store file of one backend."""

    path: Path
    attrs: dict[str, Any]         # provenance (dict), committed, complete, modality, dim, positions, format
    features_shape: tuple[int, ...]
    features_dtype: np.dtype

    def column(self, name: str) -> np.ndarray: ...                       # a whole small array
    def has_column(self, name: str) -> bool: ...
    def damage(self) -> list[str]: ...                                    # missing/truncated chunks or file
    def read_rows_into(self, start: int, stop: int, out: np.ndarray) -> None: ...   # features[start:stop]
    def read_items_into(self, idx: np.ndarray, out: np.ndarray) -> None: ...        # images, idx sorted unique
    def read_audio_into(self, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None: ...
    def nbytes_on_disk(self) -> int: ...
    def close(self) -> None: ...


class BackendWriter(Protocol):
    """Packs a journal into one store file."""

    def write_features(self, start: int, block: np.ndarray) -> None: ...  # rows written strictly in order
    def finish(self) -> None: ...                                           # flush, complete = True, close


@dataclass(frozen=True)
class Backend:
    """One storage format: its name (recorded in every store as the `format` attribute), a display title,
    the path suffixes that choose it for writing, and its three entry points."""

    name: str
    title: str
    suffixes: tuple[str, ...]
    recognises: Callable[[Path], bool]
    create: Callable[[Path, tuple[int, ...], dict[str, np.ndarray], dict[str, Any]], BackendWriter]
    open_reader: Callable[[Path], BackendReader]


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add a backend under its name (a second registration of a name replaces the first)."""
    _REGISTRY[backend.name] = backend
    return backend


def registered() -> tuple[Backend, ...]:
    return tuple(_REGISTRY.values())
