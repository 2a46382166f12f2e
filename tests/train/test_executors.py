"""`train-heads --executor`: every engine trains the run folders a local run makes (same config, metrics and
weights at the same --threads), a failed run is named while the others complete, and a run whose worker was
killed mid-way is resumed by rerunning the command."""
from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cache.locks import lock_file_for
from train.cli import train_heads
from train.runs import RunFolder

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import write_tiny_cache  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# Equal metrics need equal torch threads (1 vs 2 threads differ in the last bits): every run here uses one.
TINY = ["--epochs", "2", "--width", "64", "--batch-size", "16", "--device", "cpu", "--threads", "1", "--quiet"]
SWEEP = ["--configs", "en", "en+fr"]
RUNS = ("en-w64-s0", "en+fr-w64-s0")
# `--threads 1` sets torch's threads in this process too: put them back after each test, or later tests
# (an in-process extraction compared with a subprocess's) would run at one thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    """Workers that are fresh interpreters (submitit's jobs) find this checkout through PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def local_runs(tiny_cache, tmp_path_factory):
    """The sweep trained the way it always was: in this process, one run after the other."""
    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    try:
        result = invoke("--cache", tiny_cache, *SWEEP, *TINY, "--out", out)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out


def invoke(*args):
    return CliRunner().invoke(train_heads, [str(a) for a in args], catch_exceptions=False)


def comparable_config(run_dir: Path) -> dict:
    """config.json without what may differ between two trainings of one run: the device and the folder the
    stores were read from (their names, provenance and fingerprints stay)."""
    config = json.loads((run_dir / "config.json").read_text())
    config.pop("device")
    config["audio_stores"] = [[Path(p).name for p in paths] for paths in config["audio_stores"]]
    config["image_store"] = [Path(p).name for p in config["image_store"]]
    for key in ("provenance", "store_fingerprints"):
        config[key] = {Path(path).name: value for path, value in config[key].items()}
    return config


def assert_same_run(a: Path, b: Path) -> None:
    """The same run: config.json but its device and store folder, metrics.csv but its timings, and the weights,
    byte for byte."""
    assert comparable_config(a) == comparable_config(b)
    metrics = [RunFolder.open(p).metrics_frame().drop(columns="seconds") for p in (a, b)]
    assert metrics[0].equals(metrics[1])
    for name in ("best.safetensors", "last.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert run_files(a) == run_files(b)


def run_files(run_dir: Path) -> list[str]:
    """The run's files, hidden ones included: a temporary file (`.last.safetensors.*.tmp`, `cache.atomic`)
    that a kill -9 in the middle of a checkpoint's write leaves behind is removed by the resumed run."""
    return sorted(p.name for p in run_dir.iterdir())


@pytest.mark.parametrize("engine", [
    ["--executor", "processes", "--workers", "2"],
    ["--executor", "dask", "--workers", "2"],  # a LocalCluster made for the command
    ["--executor", "submitit", "--submitit-cluster", "local", "--workers", "2"],
], ids=["processes", "dask", "submitit"])
def test_every_executor_trains_the_run_folders_a_local_sweep_makes(engine, tiny_cache, local_runs, tmp_path):
    result = invoke("--cache", tiny_cache, *SWEEP, *TINY, "--out", tmp_path, *engine)
    assert result.exit_code == 0, result.output
    for run in RUNS:
        assert str(tmp_path / run) in result.output  # each run folder printed, as a local sweep does
        assert_same_run(local_runs / run, tmp_path / run)
    assert "2 runs: 2 complete, 0 skipped" in result.output
    if "submitit" in engine:
        assert any((tmp_path / "jobs").iterdir())  # the jobs' logs, in the output folder by default


def test_a_sweep_file_and_from_work_with_an_executor(tiny_cache, local_runs, tmp_path, dask_scheduler):
    dask = ["--executor", "dask", "--dask-scheduler", dask_scheduler]
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"cache: {tiny_cache}\nlangs: [en]\nepochs: 2\nwidth: 64\nbatch-size: 16\ndevice: cpu\n")
    result = invoke("--sweep", sweep, "--threads", "1", "--out", tmp_path / "s", *dask, "-q")
    assert result.exit_code == 0, result.output
    assert_same_run(local_runs / "en-w64-s0", tmp_path / "s" / "en-w64-s0")
    stamp = (tmp_path / "s" / "en-w64-s0" / "state.pt").stat().st_mtime_ns
    again = invoke("--sweep", sweep, "--threads", "1", "--out", tmp_path / "s", *dask)
    assert again.exit_code == 0 and str(tmp_path / "s" / "en-w64-s0") in again.output  # complete: printed,
    assert (tmp_path / "s" / "en-w64-s0" / "state.pt").stat().st_mtime_ns == stamp  # not retrained
    result = invoke("--from", local_runs / "en-w64-s0", "--out", tmp_path / "again", "--threads", "1",
                    *dask, "-q")
    assert result.exit_code == 0, result.output
    assert_same_run(local_runs / "en-w64-s0", tmp_path / "again")


def _flip_feature_bytes(path: Path) -> None:
    """Bit rot in a store's features: it still opens (and plans), its checksums fail when a job loads it."""
    with h5py.File(path, "r") as f:
        at = f["features"].id.get_offset() + 2 * int(np.prod(f["features"].shape[1:]))
    with open(path, "r+b") as fh:
        fh.seek(at)
        data = fh.read(4)
        fh.seek(at)
        fh.write(bytes(x ^ 0x5A for x in data))


def test_a_failed_run_is_named_and_the_others_complete(tiny_cache, local_runs, tmp_path, dask_scheduler):
    cache = shutil.copytree(tiny_cache, tmp_path / "cache")
    _flip_feature_bytes(cache / "audio-fr.synthetic.h5")
    result = CliRunner().invoke(train_heads, ["--cache", str(cache), *SWEEP, *TINY, "--out", str(tmp_path / "runs"),
                                              "--executor", "dask", "--dask-scheduler", dask_scheduler])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "1 of 2 runs failed" in result.output and "en+fr-w64-s0: " in result.output
    assert "audio-fr.synthetic.h5" in result.output and "checksum" in result.output  # the worker's own message
    assert_same_run(local_runs / "en-w64-s0", tmp_path / "runs" / "en-w64-s0")


def test_a_run_whose_worker_is_killed_mid_way_is_resumed_by_the_rerun(tiny_cache, tmp_path):
    epochs = ["--epochs", "8"]
    command = ["--cache", tiny_cache, "--langs", "en", *TINY, *epochs, "--executor", "processes", "--workers", "1"]
    run_dir = tmp_path / "runs" / "en-w64-s0"
    sweep = subprocess.Popen([sys.executable, "-m", "train.cli", *map(str, command), "--out", str(run_dir.parent)],
                             cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "state.pt").exists() and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    worker = int(lock_file_for(run_dir).read_text())  # the trainer's pid, written by the worker holding the lock
    os.kill(worker, signal.SIGKILL)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 1 and "worker process died" in err and "Traceback" not in err
    killed = RunFolder.open(run_dir)  # metrics.csv follows state.pt: the kill may land between the two
    assert killed.status == "running" and len(killed.metrics) < 8  # killed mid-way
    rerun = invoke(*command, "--out", run_dir.parent)
    assert rerun.exit_code == 0, rerun.output
    reference = invoke("--cache", tiny_cache, "--langs", "en", *TINY, *epochs, "--out", tmp_path / "local")
    assert reference.exit_code == 0, reference.output
    assert_same_run(tmp_path / "local" / "en-w64-s0", run_dir)


def test_executor_options_are_checked_before_any_run(tiny_cache, tmp_path):
    result = CliRunner().invoke(train_heads, ["--cache", str(tiny_cache), "--langs", "en", *TINY, "--out",
                                              str(tmp_path / "runs"), "--workers", "2"])
    assert result.exit_code == 2 and "--workers does not apply to --executor local" in result.output
    assert not (tmp_path / "runs").exists()


def test_jobs_on_other_machines_resolve_device_and_precision_there(tiny_cache, dask_scheduler, tmp_path):
    """With a running scheduler (or SLURM) the workers' hardware is known only to them: `auto` is resolved in
    each job and recorded in its config.json as a local run's is; a `--device cuda` the submitting machine
    lacks is not refused there (a login node sends jobs to GPU nodes), it fails in the job that lacks it."""
    args = ["--cache", tiny_cache, "--langs", "en", "--epochs", "1", "--width", "64", "--batch-size", "16",
            "--threads", "1", "--executor", "dask", "--dask-scheduler", dask_scheduler]
    result = invoke(*args, "--out", tmp_path / "auto", "--device", "auto", "--precision", "auto")
    assert result.exit_code == 0, result.output
    assert "resolved in each job" in result.output
    config = json.loads((tmp_path / "auto" / "en-w64-s0" / "config.json").read_text())
    from cache.hardware import resolve_device
    from train.loop import choose_precision

    assert config["device"] == resolve_device("auto")  # this machine's workers: the CPU here
    assert config["precision"] == choose_precision("auto", config["device"]).name
    if not torch.cuda.is_available():
        missing = CliRunner().invoke(train_heads, [str(a) for a in args] + ["--out", str(tmp_path / "gpu"),
                                                                              "--device", "cuda"])
        assert missing.exit_code == 1 and "torch sees no CUDA GPU here" in missing.output  # the job's words
