"""Where a store's files lie while it is written and after: the store, its journal, the pack temporary.

A store being written exists only as its journal `<store>.partial/`; `finish()` packs it into
`<store>.tmp` and renames that onto the store's path (see writer.py).
"""
from __future__ import annotations

import shutil
from pathlib import Path


def journal_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")


def tmp_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree, if there is one."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def verified_path(path: str | Path) -> Path:
    """The record that a store file was verified (verified.py)."""
    path = Path(path)
    return path.with_name(path.name + ".verified.json")


def remove_store(path: str | Path) -> None:
    """Delete a store, its journal, any half-packed temporary and its verified record (what `--force` does
    before rewriting)."""
    path = Path(path)
    for p in (path, journal_path(path), tmp_path(path), verified_path(path)):
        remove_path(p)
