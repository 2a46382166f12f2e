"""A sweep's runs as jobs: each run trains in a worker (`cache.executors.run_jobs`) into the folder a local
run would use, with the same metrics as a local run at the same torch thread count.

The plan is made, and every check done, in the submitting process (`train.sweep.plan_sweep`); a job gets only
its `RunConfig` and opens and loads the stores itself, so nothing large travels to the workers. A job killed
mid-way leaves its run folder half-trained (state.pt is the last committed epoch): rerunning the command
resumes it there, as it does for a local run.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from cache.executors import ExecutorSpec, Job, run_jobs
from cache.hardware import resolve_device
from train.loop import LoadedStores, choose_precision
from train.runs import RunConfig, RunConfigError
from train.sweep import SweepPlan, SweepResult, train_one


def train_job(config: RunConfig, runs_root: str, name: str | None, force: bool) -> bool:
    """Train one run in this worker (a job of `train_on_executor`); whether it was complete already.

    A CUDA device becomes `cuda`: the executor chose this worker's GPU (CUDA_VISIBLE_DEVICES), so an index
    picked on the submitting machine means nothing here (the device does not change a run's identity). A job
    sent to other machines (`ExecutorSpec.remote`) resolves `auto` device and precision here, on the hardware
    it trains on, by the rules a local run follows.
    """
    device = resolve_device(config.device)
    precision = choose_precision(config.precision, device, config.reference).name \
        if config.precision == "auto" else config.precision
    config = dataclasses.replace(config, device="cuda" if device.startswith("cuda") else device, precision=precision)
    return train_one(config, Path(runs_root), name, force, False, LoadedStores(config.device))


def train_on_executor(plan: SweepPlan, executor: ExecutorSpec, runs_root: Path, name: str | None = None,
                      force: bool = False, progress: bool = True, on_done: Callable[[Path], None] | None = None,
                      on_finished: Callable[[int, Path, SweepResult], None] | None = None) -> SweepResult:
    """`SweepPlan.train` with one job per run on `executor`; the callbacks follow in plan order once all
    jobs ended. A failed or killed job is a failed run (with the worker's message), never a lost one."""
    if name is not None and len(plan.runs) != 1:
        raise RunConfigError(f"--name names one run folder, but {len(plan.runs)} runs were asked for")
    run_dirs = [Path(runs_root) / (name or config.folder_name()) for config in plan.runs]
    jobs = [Job(run_dir.name, (config, str(runs_root), name, force)) for run_dir, config in zip(run_dirs, plan.runs)]
    result = SweepResult()
    for i, (run_dir, outcome) in enumerate(zip(run_dirs, run_jobs(executor, train_job, jobs, progress)), 1):
        result.record(run_dir, outcome.ok, bool(outcome.value), outcome.error)
        if outcome.ok and on_done is not None:
            on_done(run_dir)
        if on_finished is not None:
            on_finished(i, run_dir, result)
    return result
