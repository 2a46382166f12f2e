"""Verify on first use: a record, beside a store file, that its checksums were all checked and matched.

Why: checking every item's CRC-32C while loading a whole store cost a third of the load here (1.1-1.7 GB/s
unchecked against 0.8-1.15 GB/s checked on the shared 2-core machine, docs/cache.md), below the 1 GB/s a
training load must keep. So `load()` checks every item the first time it loads a file and then writes
`<store>.verified.json`: the file's identity and the store's content fingerprint. A later load of the same
file, unchanged, skips the pass. The identity is what any write changes: device, inode, size, mtime and
ctime of the HDF5 file, or of every file inside a Zarr folder (ctime cannot be set back by a user, so an
edit made in place and disguised with `touch` still shows). Damage that bypasses the file system (bit rot
on the medium) is not seen by this shortcut: `python -m cache verify` always reads and checks every item,
and `store.read()` always checks the items it returns. A cache folder that is not writable only means the
record is not kept (every load then checks).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .atomic import OutputError, write_json
from .files import verified_path as record_path
from .hashing import sha256_json

log = logging.getLogger(__name__)


def identity(path: str | Path) -> str:
    """A digest of what any write to the store file (or to any file of a Zarr folder) changes."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stats = []
    for p in files:
        st = os.stat(p)
        stats.append([str(p.relative_to(path)) if p != path else "", st.st_dev, st.st_ino, st.st_size,
                      st.st_mtime_ns, st.st_ctime_ns])
    return sha256_json(stats)


def is_verified(path: str | Path, fingerprint: str, ident: str) -> bool:
    """Whether the record says this very file, with this content fingerprint, was verified."""
    try:
        rec = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and rec.get("identity") == ident and rec.get("fingerprint") == fingerprint


def mark_verified(path: str | Path, fingerprint: str, ident: str) -> None:
    """Keep the record (atomically); a folder that cannot be written is logged, not an error."""
    try:
        write_json(record_path(path), {"identity": ident, "fingerprint": fingerprint})
    except OutputError as e:
        log.info("not recording that %s was verified (%s): every load will check it", path, e)
