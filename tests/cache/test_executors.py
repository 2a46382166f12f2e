"""`cache.executors.run_jobs` on the real engines (a process pool, a Dask LocalCluster, submitit's local
cluster): outcomes in input order, a job's failure and a killed worker reported and never lost, progress lines,
and the option checks of `executor_options`."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cache.executors import WORKER_DIED, ExecutorError, ExecutorSpec, Job, SubmititEngine, executor_options, run_jobs
from tests.cache import executor_jobs as jobs_module

REPO = Path(__file__).resolve().parents[2]
JOBS = [Job(f"item-{i}", (i, 2)) for i in range(4)]
EXPECTED = [(True, 0, None), (True, 1, None), (False, None, "item 2 is bad: fix it"), (True, 9, None)]


@pytest.fixture
def importable(monkeypatch):
    """submitit's jobs are fresh interpreters: they find this checkout's packages through PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def _specs(kind: str, tmp_path: Path, scheduler: str | None = None) -> ExecutorSpec:
    return {"local": ExecutorSpec(),
            "processes": ExecutorSpec("processes", workers=2),
            "dask": ExecutorSpec("dask", dask_scheduler=scheduler),
            "submitit": ExecutorSpec("submitit", workers=2, submitit_cluster="local",
                                     log_folder=tmp_path / "logs")}[kind]


@pytest.mark.parametrize("kind", ["local", "processes", "dask", "submitit"])
def test_outcomes_in_input_order_and_a_failing_job_does_not_stop_the_others(kind, tmp_path, capsys, request):
    scheduler = request.getfixturevalue("dask_scheduler") if kind == "dask" else None
    if kind == "submitit":
        request.getfixturevalue("importable")
    outcomes = run_jobs(_specs(kind, tmp_path, scheduler), jobs_module.fail_on, JOBS)
    assert [o.label for o in outcomes] == [j.label for j in JOBS]
    assert [(o.ok, o.value, o.error) for o in outcomes] == EXPECTED
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("jobs: ")]
    if kind == "local":
        assert lines == []  # today's behaviour: no job lines
    else:
        assert lines[-1] == "jobs: 3 done, 0 running, 1 failed of 4"
        assert len(lines) == len(set(lines))  # one line per change


def test_an_unexpected_error_names_its_type_and_line():
    [outcome] = run_jobs(ExecutorSpec(), jobs_module.broken, [Job("b", (3,))])
    assert not outcome.ok and outcome.error.startswith("JobBroke: bug on 3 (at ")
    assert "executor_jobs.py" in outcome.error and "in broken" in outcome.error


def test_a_killed_pool_worker_fails_its_job_a_fresh_pool_runs_the_rest_and_a_rerun_succeeds(tmp_path):
    markers = [tmp_path / name for name in ("done-before", "dies", "done-after")]
    for survivor in (markers[0], markers[2]):
        survivor.write_text("")  # `die` kills its worker only when its marker is missing
    jobs = [Job(m.name, (str(m),)) for m in markers]
    spec = ExecutorSpec("processes", workers=1)
    outcomes = run_jobs(spec, jobs_module.die, jobs)
    assert [(o.ok, o.value, o.error) for o in outcomes] == [(True, 42, None), (False, None, WORKER_DIED),
                                                            (True, 42, None)]
    assert run_jobs(spec, jobs_module.die, jobs[1:2])[0].value == 42  # the rerun


def test_a_killed_submitit_job_fails_with_its_log_and_a_rerun_succeeds(tmp_path, importable):
    spec = ExecutorSpec("submitit", submitit_cluster="local", log_folder=tmp_path / "logs")
    job = Job("k", (str(tmp_path / "once"),))
    [outcome] = run_jobs(spec, jobs_module.die, [job])
    assert not outcome.ok and "ended without a result" in outcome.error and "rerun" in outcome.error
    assert str(tmp_path / "logs") in outcome.error  # its log is named
    assert run_jobs(spec, jobs_module.die, [job])[0].value == 42


def test_dask_reschedules_a_job_whose_worker_was_killed(tmp_path, dask_scheduler):
    # Dask's nanny restarts a killed worker and the scheduler runs the job again (up to its allowed failures):
    # a job that resumes from its own files (a run's state.pt) simply completes.
    [outcome] = run_jobs(ExecutorSpec("dask", dask_scheduler=dask_scheduler), jobs_module.die,
                         [Job("k", (str(tmp_path / "once"),))], progress=False)
    assert (outcome.ok, outcome.value) == (True, 42)
    assert (tmp_path / "once").exists()


def test_pool_workers_get_a_gpu_each_and_their_share_of_the_cores(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    monkeypatch.setattr("cache.executors.machine_cores", lambda: 4)
    outcomes = run_jobs(ExecutorSpec("processes", workers=2), jobs_module.worker_setup,
                        [Job(str(i), (i,)) for i in range(4)], progress=False)
    gpus, threads = zip(*(o.value for o in outcomes))
    assert set(gpus) <= {"5", "7"} and set(threads) == {2}  # one GPU each; 4 cores // 2 workers


@click.command()
@executor_options
def _command(executor: ExecutorSpec) -> None:
    click.echo(repr(executor))


@pytest.mark.parametrize("args,expected", [
    (["--dask-scheduler", "tcp://x:8786"], "--dask-scheduler does not apply to --executor local"),
    (["--workers", "2"], "--workers does not apply to --executor local"),
    (["--executor", "processes", "--job-time", "5"], "--job-time does not apply to --executor processes"),
    (["--executor", "submitit", "--submitit-cluster", "local", "--slurm-partition", "gpu"],
     "--slurm-partition does not apply to --executor submitit with --submitit-cluster local"),
    (["--executor", "dask", "--dask-scheduler", "tcp://x:8786", "--workers", "3"], "scheduler's own workers"),
    (["--executor", "dask", "--job-logs", "logs"], "--job-logs does not apply"),
    (["--executor", "threads"], "'threads' is not one of"),
    (["--executor", "processes", "--workers", "0"], "0 is not in the range"),
])
def test_options_that_do_not_go_together_are_usage_errors(args, expected):
    result = CliRunner().invoke(_command, args)
    assert result.exit_code == 2 and expected in result.output, result.output


def test_options_become_one_spec():
    result = CliRunner().invoke(_command, ["--executor", "submitit", "--workers", "8", "--slurm-partition", "gpu",
                                           "--slurm-account", "lab", "--job-time", "90", "--job-gpus", "1",
                                           "--job-mem", "16", "--job-logs", "logs"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == repr(ExecutorSpec("submitit", 8, None, None, None, "gpu", "lab", 90, 1, 16.0,
                                                      Path("logs")))
    assert CliRunner().invoke(_command, []).output.strip() == repr(ExecutorSpec())


def test_submitit_without_a_log_folder_is_refused():
    with pytest.raises(ExecutorError, match="--job-logs"):
        run_jobs(ExecutorSpec("submitit", submitit_cluster="local"), jobs_module.square, [Job("x", (1,))])
    assert ExecutorSpec("submitit").with_defaults(log_folder=Path("l")).log_folder == Path("l")
    assert ExecutorSpec("processes").with_defaults(threads=3, log_folder=Path("l")) == \
        ExecutorSpec("processes", threads=3)


def test_local_cluster_workers_get_a_gpu_each_and_their_share_of_the_cores(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    monkeypatch.setattr("cache.executors.machine_cores", lambda: 4)
    environ = dict(os.environ)
    outcomes = run_jobs(ExecutorSpec("dask", workers=2), jobs_module.worker_setup,
                        [Job(str(i), (i,)) for i in range(4)], progress=False)
    gpus, threads = zip(*(o.value for o in outcomes))
    assert set(gpus) <= {"5", "7"} and set(threads) == {2}  # one GPU each; 4 cores // 2 workers
    assert dict(os.environ) == environ  # no OMP_NUM_THREADS=1 left behind for the processes started later


def test_slurm_jobs_get_the_sbatch_options(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")  # submitit looks for srun to detect SLURM
    spec = ExecutorSpec("submitit", workers=30, threads=2, partition="gpu", account="lab", time_min=90,
                        gpus_per_job=1, mem_gb=16, log_folder=tmp_path / "logs")
    engine = SubmititEngine(jobs_module.square, spec)
    script = engine.executor._executor._make_submission_file_text("COMMAND", "uid")  # the sbatch file
    for line in ("--partition=gpu", "--account=lab", "--time=90", "--gpus-per-node=1", "--mem=16GB",
                 "--cpus-per-task=2", f"--output={tmp_path / 'logs'}/"):
        assert f"#SBATCH {line}" in script, line
    assert engine.executor._executor.parameters["array_parallelism"] == 30


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine has SLURM")
def test_submitit_without_slurm_says_how_to_run_here(tmp_path):
    with pytest.raises(ExecutorError, match="--submitit-cluster local"):
        run_jobs(ExecutorSpec("submitit", log_folder=tmp_path), jobs_module.square, [Job("x", (1,))])
