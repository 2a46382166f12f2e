"""Writing files so that a reader never sees half of one: the one atomic-write helper of the project.

Every result file (tables, JSON, figures, weights, episode files) is written under a temporary name in
the same folder and renamed onto its final path (`os.replace` is atomic on POSIX), so a crash, `kill -9`
or a full disk leaves either the old file or the new one, never a truncated one. Operating-system
errors a user can cause (a read-only or full output folder, a path that is a file) become `OutputError`,
whose message names the path and the fix, so that every CLI reports them in one clean line.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


class OutputError(ValueError):
    """A result could not be written (permissions, full disk, read-only file system): nothing was left behind."""


_FIXES = {
    errno.EACCES: "make the folder writable or choose another output folder",
    errno.EPERM: "make the folder writable or choose another output folder",
    errno.EROFS: "the file system is read-only: choose another output folder",
    errno.ENOSPC: "the disk is full: free space or choose another output folder",
    errno.EDQUOT: "the disk quota is exceeded: free space or choose another output folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another output folder",
    errno.EEXIST: "a file stands where a folder is needed: choose another output folder",
}


_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it) and put back at once
os.umask(_UMASK)


def output_error(path: Path, error: OSError) -> OutputError:
    """The `OutputError` for an `OSError` met while writing `path`."""
    fix = _FIXES.get(error.errno, "check the output folder")
    return OutputError(f"cannot write {path}: {error.strerror or error} ({fix})")


def make_dirs(path: Path) -> Path:
    """`mkdir -p`, with a clean `OutputError` when the folder cannot be made."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(path, error) from None
    return path


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp_path)` and rename the result onto `path`; on any failure remove the temporary file.

    The temporary name starts with `.` and ends in `.tmp`, in the final folder (a rename across file
    systems would not be atomic). `write` may use any library that writes to a path (pandas, torch,
    safetensors, matplotlib). Parent folders are created.
    """
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a result gets the mode open() would give
        os.close(fd)
    except OSError as error:
        raise output_error(path, error) from None
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise output_error(path, error) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Any) -> Path:
    """JSON with sorted keys and a final newline (stable bytes for the same data)."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, frame) -> Path:
    """A pandas DataFrame as CSV without its index."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def save_figure(path: str | Path, figure, **savefig_kwargs) -> Path:
    """A matplotlib figure saved atomically; the format is taken from `path`'s suffix, not the temp name."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format=fmt, **savefig_kwargs))


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writes killed mid-way (``kill -9``, a lost node) left in `folder` and
    its subfolders, and return them; `atomic_write` removes its own on any error it lives through.

    Call it only while holding the folder's lock: a live writer's temporary file looks the same.
    """
    leftovers = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()] if Path(folder).is_dir() else []
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers
