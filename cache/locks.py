"""Exclusive locks between processes: one writer per store, one trainer per run folder.

`fcntl.flock` locks are released by the kernel when their process dies (`kill -9` included), so a lock
never outlives a crash and a rerun can always take it; two live processes writing the same files would
silently interleave their results, so the second is refused instead.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .atomic import make_dirs, output_error
from .hashing import sha256_bytes


class Busy(ValueError):
    """Another live process holds the lock: it is writing the same store or training the same run."""


def acquire(lock_file: str | Path, what: str, error: type[ValueError] = Busy) -> IO:
    """Take the exclusive lock `lock_file` (created if needed) for `what`, or raise `error` (default `Busy`)
    naming it. The returned handle holds the lock until it is closed (or the process ends)."""
    lock_file = Path(lock_file)
    make_dirs(lock_file.parent)
    try:
        handle = open(lock_file, "a+")
    except OSError as error:
        raise output_error(lock_file, error) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise error(f"another process is {what} (lock {lock_file}); wait for it to finish or stop it") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def lock_file_for(path: str | Path) -> Path:
    """The lock file of a folder that may be deleted and made again while locked (a run folder replaced by
    `--force`): in the temporary folder, named by the folder's absolute path, so it never shows up among
    the user's files."""
    digest = sha256_bytes(str(Path(path).resolve()).encode())[:32]
    return Path(tempfile.gettempdir()) / "vgsme-locks" / f"{digest}.lock"


@contextlib.contextmanager
def exclusive(lock_file: str | Path, what: str) -> Iterator[None]:
    """`with exclusive(path, "training run X"):` — the lock held for the block."""
    handle = acquire(lock_file, what)
    try:
        yield
    finally:
        handle.close()
