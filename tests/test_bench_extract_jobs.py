"""`bench/extract_jobs.py --quick`: the script behind docs/extraction.md's "Extraction across jobs" figures runs
every step it runs by default (fresh-process encodes at two thread counts, local vs jobs on spawned workers) and
writes what it prints, so the figures stay reproducible."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "extract_jobs.py"


def test_quick_mode_compares_thread_counts_and_checks_the_jobs_store_is_the_local_one(tmp_path):
    out = tmp_path / "jobs.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--runs", "1", "--out", str(out)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["corpus"] == {"words": 14, "pictures": 14, "path": "the tests' tiny corpus"}
    assert report["machine"]["device_name"] in result.stdout

    [threads] = report["threads"]
    assert threads["encoder"] == "tiny-wavlm" and threads["threads"] == [1, 2] and threads["items"] == 14
    assert 0 <= threads["differ_float16"] <= threads["differ_fp32"] <= 14
    assert (threads["max_abs_diff"] > 0) == (threads["differ_fp32"] > 0)
    assert threads["repeat_differ_fp32"] == {"1": None, "2": None}  # one run per count: not checked
    assert "| tiny-wavlm | " in result.stdout and "not checked (--runs 1)" in result.stdout

    [jobs] = report["local_vs_jobs"]
    assert jobs["encoder"] == "tiny-wavlm" and jobs["items"] == 14
    assert jobs["identical"] is True, "2 jobs on spawned workers must give the local store byte for byte"
    assert jobs["local_s"] > 0 and jobs["jobs_s"] > 0
    assert "engines" not in report
