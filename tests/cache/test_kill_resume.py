"""A writer process killed with SIGKILL at arbitrary moments, then rerun, finishes the same store."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cache.store import journal_path, open_store

REPO = Path(__file__).resolve().parents[2]

# Writes N audio items one per append, resuming whatever is there; prints after each commit.
WRITER = r"""
import sys, numpy as np
from cache.store import open_writer
from tests.synthetic import synthetic_items, synthetic_provenance
path, n = sys.argv[1], int(sys.argv[2])
items = synthetic_items(n, "audio")
w = open_writer(path, synthetic_provenance("audio", 16), items, 16)
for i in np.flatnonzero(w.pending_mask()):
    if i == 7:
        w.skip(items.ids[i], "x.wav", "empty")
        continue
    rng = np.random.default_rng(int(i))
    w.append([rng.standard_normal((int(rng.integers(1, 40)), 16))])
    print("committed", w.committed, flush=True)
w.finish()
print("done", flush=True)
"""


def _run(path, n, kill_after=None):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    lines = 0
    for line in proc.stdout:
        lines += 1
        if kill_after is not None and lines >= kill_after:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    return proc.returncode


@pytest.mark.timeout(120)
def test_kill_9_and_rerun_gives_the_uninterrupted_store(tmp_path):
    n = 60
    ref = tmp_path / "ref.h5"
    assert _run(ref, n) == 0
    path = tmp_path / "killed.h5"
    for kill_after in (3, 9, 20):
        assert _run(path, n, kill_after) == -signal.SIGKILL
        assert journal_path(path).exists() and not path.exists()
    assert _run(path, n) == 0
    a, b = open_store(ref), open_store(path)
    assert a.items == b.items and len(b) == n - 1 and b.skipped.to_records()[0]["id"] == "en-0007"
    xa, la = a.read(np.arange(len(a)))
    xb, lb = b.read(np.arange(len(b)))
    assert np.array_equal(la, lb) and xa.tobytes() == xb.tobytes()
