"""Content hashes: the one place files, byte strings and JSON-able values are hashed (sha256, hex)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

BLOCK = 1 << 22


def sha256_file(path: str | Path) -> str:
    """sha256 of one file's bytes (`hashlib.file_digest` releases the GIL, so threads overlap reads)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_files(paths: Iterable[str | Path]) -> str:
    """sha256 over the bytes of the given files, in the order given (the names are not hashed)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def sha256_bytes(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys, no whitespace): equal values, equal hashes."""
    return sha256_bytes(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode())
