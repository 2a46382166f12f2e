"""Job functions for the executor tests: top-level, in a plain module, so that every engine's workers (spawned
processes, Dask workers, submitit jobs) can import them by name."""
from __future__ import annotations

import os
import signal
from pathlib import Path


class JobBroke(RuntimeError):
    """A failure that is not a user error: reported with its type and line."""


def square(x: int) -> int:
    return x * x


def fail_on(x: int, bad: int) -> int:
    """`x * x`, except for `bad`: a ValueError, a user error whose message is reported as it is."""
    if x == bad:
        raise ValueError(f"item {x} is bad: fix it")
    return x * x


def broken(x: int) -> int:
    raise JobBroke(f"bug on {x}")


def die(marker: str) -> int:
    """Kill this job's own process with SIGKILL the first time (leaving `marker`), succeed when rerun."""
    path = Path(marker)
    if not path.exists():
        path.write_text("killed once")
        os.kill(os.getpid(), signal.SIGKILL)
    return 42


def worker_setup(_: int) -> tuple[str | None, int]:
    """The GPU and the torch threads the executor gave this worker."""
    import torch
    return os.environ.get("CUDA_VISIBLE_DEVICES"), torch.get_num_threads()
