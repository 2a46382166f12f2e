"""The errors a store can raise: each a `ValueError` whose message names the store (or item) and the fix.

They live in their own module so that every other module of the package (backends, reader, writer,
verify) can raise them without importing each other.
"""
from __future__ import annotations

from pathlib import Path

REEXTRACT = "re-extract it (extract-features --force)"


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


class NonFiniteFeatures(StoreError):
    """Features given to the writer hold NaN or inf, or values that overflow float16; nothing was written."""


class CorruptStore(StoreError):
    """A store's bytes are not what its writer wrote: a checksum mismatch, a missing or truncated chunk or
    file, or arrays that contradict each other. Reading it would give wrong data, so it is refused."""
