"""TensorBoard event files of a run (`train-heads --tensorboard`), written from its metrics.csv.

metrics.csv is the record of a run's epochs; the event files are only a view of it for TensorBoard. So they
are written from it after every committed epoch (and on resume), never kept by a writer of their own: a run
killed at any instant and rerun ends with every epoch in its events exactly once, and a complete run given
`--tensorboard` later gets its events without being retrained (the flag is not part of a run's identity).

The folder (`RunFolder.tensorboard_dir`) holds one file per epoch, `events.out.tfevents.<epoch:06d>.vgsme`,
with that epoch's scalars: every numeric column of metrics.csv but `epoch`, under its column name, at
step = epoch, its wall time the moment the epoch ended (metrics.csv's mtime minus the later epochs' seconds).
Why a file per epoch: TensorBoard reads a folder's event files in name order and never rereads one it has
finished, so files that are only ever added, each complete before it gets its name, are followed live with no
duplicate and no purge event; a file appended to, rewritten or replaced in place is not (a kill mid-append
leaves a torn record; a replaced file is not reread by a TensorBoard that has it open).

Why not `torch.utils.tensorboard.SummaryWriter` itself: it names its file by the clock, host and process and
writes it in the watched folder, so a file cannot get its name only once complete, and the files of a
resume's catch-up, written within one second, would not sort by epoch. The same pieces it is built on write
these files: `torch.utils.tensorboard.summary.scalar` makes each summary, tensorboard's `RecordWriter` frames
the records, tensorboard's `Event` proto holds them. Nothing here is imported until event files are asked for,
so training without `--tensorboard` never needs the package.
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

from cache.atomic import atomic_write, make_dirs
from train.runs import RunFolder

EVENT_FILE = "events.out.tfevents.{epoch:06d}.vgsme"
EVENT_FILE_PATTERN = re.compile(r"events\.out\.tfevents\.(\d{6})\.vgsme")
FILE_VERSION = "brain.Event:2"  # what SummaryWriter writes first: readers take the file's format from it
INSTALL_HINT = "pip install tensorboard (or pip install -e '.[tensorboard]')"


class TensorBoardMissing(ValueError):
    """Event files were asked for (or a run folder already has them) but the tensorboard package is absent."""


def require_tensorboard() -> None:
    """Import the writer's pieces now, so that a missing package is one clear error before training starts."""
    try:
        for module in ("tensorboard.summary.writer.record_writer", "torch.utils.tensorboard.summary"):
            importlib.import_module(module)
    except ImportError:
        raise TensorBoardMissing(f"TensorBoard event files (--tensorboard, or a run folder that already has a "
                                 f"tensorboard/ folder) need the tensorboard package: {INSTALL_HINT}; or train "
                                 f"without --tensorboard (and delete a run's tensorboard/ folder to stop keeping "
                                 f"its event files)") from None


def events_wanted(folder: RunFolder, asked: bool) -> bool:
    """Whether the run's event files are kept in step: when asked for, and whenever the folder already has some
    (a run resumed without the flag would otherwise leave them stopping at an old epoch, silently stale)."""
    return asked or folder.tensorboard_dir.is_dir()


def epochs_with_events(folder: RunFolder) -> set[int]:
    """The epochs whose event file is in the folder."""
    if not folder.tensorboard_dir.is_dir():
        return set()
    return {int(m[1]) for name in os.listdir(folder.tensorboard_dir) if (m := EVENT_FILE_PATTERN.fullmatch(name))}


def write_run_events(folder: RunFolder) -> list[Path]:
    """Write the event file of every epoch of metrics.csv that has none yet, in epoch order; returns them.

    Each file is written under a name TensorBoard ignores (no `tfevents` in it) and renamed when complete,
    so TensorBoard never sees a part of one, and a file that exists is whole."""
    require_tensorboard()
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter
    from torch.utils.tensorboard.summary import scalar

    rows = folder.metrics
    done = epochs_with_events(folder)
    missing = [k for k, row in enumerate(rows) if row["epoch"] not in done]
    if not missing:
        return []
    make_dirs(folder.tensorboard_dir)
    ended = folder.metrics_path.stat().st_mtime  # when the last row was written: the end of the last epoch
    later = [sum(row["seconds"] for row in rows[k + 1:]) for k in range(len(rows))]
    written = []
    for k in missing:
        row, wall_time = rows[k], ended - later[k]

        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                records = RecordWriter(handle)
                records.write(Event(wall_time=wall_time, file_version=FILE_VERSION).SerializeToString())
                for column, value in row.items():
                    if column != "epoch":
                        records.write(Event(wall_time=wall_time, step=row["epoch"],
                                            summary=scalar(column, value)).SerializeToString())

        final = folder.tensorboard_dir / EVENT_FILE.format(epoch=row["epoch"])
        staged = atomic_write(final.with_name(f".epoch-{row['epoch']:06d}.staged"), write)
        os.replace(staged, final)  # the name TensorBoard reads is given only to a complete file
        written.append(final)
    return written
