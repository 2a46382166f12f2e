"""One job runner for every stage: run `fn(*job.args)` for each job here, in local processes, on Dask or SLURM.

Extraction and training hand their work to `run_jobs` as a list of `Job`s and get one `JobOutcome` per job
back, in input order, whatever ran them. A job never raises into the caller: its exception becomes a failed
outcome carrying the worker's message, and a worker that dies (killed, out of memory) fails the jobs it was
running instead of hanging the sweep. Resuming is the jobs' own business (a run folder's state.pt, a store's
journal), so rerunning the same command after a failure redoes only what is missing.

The engines are the tools the field already uses: `concurrent.futures.ProcessPoolExecutor` (spawn context,
one GPU per worker), a `dask.distributed` client (a scheduler's address or a `LocalCluster`) and submitit
(SLURM job arrays, or its local cluster). All four go through one loop that keeps at most `capacity` jobs in
flight and prints `jobs: 3 done, 2 running, 1 failed of 12` on each change.
"""
from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import functools
import logging
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import click
from tqdm import tqdm

log = logging.getLogger(__name__)

EXECUTORS = ("local", "processes", "dask", "submitit")
SUBMITIT_CLUSTERS = ("slurm", "local")
# The click parameter names `executor_options` adds (commands that vet their options by name list them).
EXECUTOR_PARAMS = ("executor", "workers", "dask_scheduler", "submitit_cluster", "slurm_partition", "slurm_account",
                   "job_time", "job_gpus", "job_mem", "job_logs")
# A local submitit job's wall-clock limit when --job-time is not given (submitit's own default is 2 minutes).
LOCAL_JOB_MINUTES = 7 * 24 * 60
POLL_S = 0.5  # how often the submitit engine looks at its jobs' states


class ExecutorError(ValueError):
    """An executor asked for with options that do not go together, or an engine that cannot start."""


@dataclass(frozen=True)
class ExecutorSpec:
    """Where and how the jobs of one command run. `None` means the engine's default (see `docs/scale-out.md`).

    `threads` is torch's CPU threads per job: by default a job that shares this machine with `workers` others
    gets cores // workers, and a job on a remote worker or SLURM node keeps torch's own choice.
    """

    kind: str = "local"
    workers: int | None = None  # jobs at once: pool size, LocalCluster workers, SLURM array parallelism
    threads: int | None = None
    dask_scheduler: str | None = None  # a running scheduler's address; None: a LocalCluster for the command
    submitit_cluster: str | None = None  # slurm (default with submitit) | local
    partition: str | None = None
    account: str | None = None
    time_min: int | None = None  # wall-clock limit of one job
    gpus_per_job: int | None = None
    mem_gb: float | None = None
    log_folder: Path | None = None  # submitit's job files and logs

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ExecutorError(f"--executor {self.kind!r}: use one of {', '.join(EXECUTORS)}")
        for name, value in (("--workers", self.workers), ("--threads", self.threads), ("--job-time", self.time_min),
                            ("--job-gpus", self.gpus_per_job)):
            if value is not None and value < (0 if name == "--job-gpus" else 1):
                raise ExecutorError(f"{name} {value}: give a positive whole number")
        if self.submitit_cluster not in (None, *SUBMITIT_CLUSTERS):
            raise ExecutorError(f"--submitit-cluster {self.submitit_cluster!r}: use slurm or local")
        allowed = {"local": set(), "processes": {"--workers"}, "dask": {"--workers", "--dask-scheduler", "--job-mem"},
                   "submitit": {"--workers", "--submitit-cluster", "--job-time", "--job-gpus", "--job-mem",
                                "--job-logs"} | ({"--slurm-partition", "--slurm-account"}
                                                 if self.cluster == "slurm" else set())}[self.kind]
        given = {"--workers": self.workers, "--dask-scheduler": self.dask_scheduler,
                 "--submitit-cluster": self.submitit_cluster, "--slurm-partition": self.partition,
                 "--slurm-account": self.account, "--job-time": self.time_min, "--job-gpus": self.gpus_per_job,
                 "--job-mem": self.mem_gb, "--job-logs": self.log_folder}
        misplaced = [name for name, value in given.items() if value is not None and name not in allowed]
        if misplaced:
            raise ExecutorError(f"{', '.join(misplaced)} {'does' if len(misplaced) == 1 else 'do'} not apply to "
                                f"--executor {self.kind}" + (f" with --submitit-cluster {self.cluster}"
                                                             if self.kind == "submitit" else "")
                                + f" (it takes {', '.join(sorted(allowed)) or 'none of the job options'})")
        if self.kind == "dask" and self.dask_scheduler and (self.workers or self.mem_gb):
            raise ExecutorError("--workers and --job-mem size a LocalCluster; with --dask-scheduler the "
                                "scheduler's own workers run the jobs: drop them")

    @property
    def remote(self) -> bool:
        """The jobs run on other machines (SLURM nodes, a running Dask scheduler's workers): what hardware they
        have is known only there, so a job resolves `--device`/`--precision auto` itself, and a submitting
        machine without a GPU (a login node) may still send jobs to GPUs."""
        return (self.kind == "submitit" and self.cluster == "slurm") or (self.kind == "dask" and bool(self.dask_scheduler))

    @property
    def cluster(self) -> str:
        """The submitit cluster: `slurm` unless `local` was asked for."""
        return self.submitit_cluster or "slurm"

    def with_defaults(self, threads: int | None = None, log_folder: Path | None = None) -> "ExecutorSpec":
        """This spec with the command's `--threads` and its default job-log folder filled in where unset."""
        return dataclasses.replace(self, threads=self.threads or threads,
                                   log_folder=self.log_folder or (log_folder if self.kind == "submitit" else None))


@dataclass(frozen=True)
class Job:
    """One unit of work: `fn(*args)` in a worker. `label` names it in progress lines and errors."""

    label: str
    args: tuple


@dataclass(frozen=True)
class JobOutcome:
    """What became of a job: `value` is `fn`'s return value when `ok`, `error` the worker's message when not."""

    label: str
    ok: bool
    value: Any = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------------- workers

def call_job(fn: Callable, args: tuple, threads: int | None = None) -> tuple[bool, Any, str | None]:
    """Run one job in the worker and return `(ok, value, error)`: the exception stays here, as text, because a
    worker's exception class may not unpickle in the caller (and a job must never be lost to that)."""
    if threads:
        import torch  # only jobs that say how many threads they get pay for importing torch here
        torch.set_num_threads(threads)
    try:
        return True, fn(*args), None
    except Exception as error:  # noqa: BLE001 - every failure of a job is reported, none raised
        log.debug("job failed", exc_info=True)
        return False, None, describe_error(error)


def describe_error(error: BaseException) -> str:
    """A user's error (a ValueError or OSError naming the item and the fix) as it is; anything else with its
    type and the line it came from, so a bug in a remote worker can be found without its log."""
    if isinstance(error, (ValueError, OSError)):
        return str(error)
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" (at {frame.filename}:{frame.lineno} in {frame.name})" if frame else ""
    return f"{type(error).__name__}: {error}{where}"


def _pin_worker(slots, gpus: Sequence[str], threads: int | None) -> None:
    """A pool worker's initializer: one GPU per worker, round-robin, before anything in it touches CUDA."""
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    if threads:
        import torch
        torch.set_num_threads(threads)


def visible_gpus() -> list[str]:
    """The CUDA GPUs jobs may use: `CUDA_VISIBLE_DEVICES`' entries when it is set, else torch's count."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() and not gpu.strip().startswith("-")]
    if "torch" not in sys.modules and not _has_nvidia_device():
        return []
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


def _has_nvidia_device() -> bool:
    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidia0").exists()


def machine_cores() -> int:
    """The cores this process may run on (its affinity: a SLURM allocation or a taskset, not the whole node)."""
    return len(os.sched_getaffinity(0))


def default_workers() -> int:
    """One worker per visible GPU, else one per core."""
    return len(visible_gpus()) or machine_cores()


def shared_threads(spec: ExecutorSpec, workers: int) -> int:
    """Torch threads of a job sharing this machine with `workers - 1` others: `--threads`, else cores // workers."""
    return spec.threads or max(1, machine_cores() // workers)


# ---------------------------------------------------------------------------------------------------- engines

class Engine:
    """What `run_jobs` needs of an engine: start jobs, wait for some to end, close. Handles are hashable."""

    capacity: int  # jobs in flight at once

    def start(self, indices: list[int], jobs: Sequence[Job]) -> list[Any]:
        raise NotImplementedError

    def wait(self, handles: list[Any]) -> list[tuple[Any, tuple[bool, Any, str | None]]]:
        """Block until at least one of `handles` ended (or a short while passed); the ended ones with results."""
        raise NotImplementedError

    def close(self, interrupted: bool = False) -> None:
        """Free the engine; `interrupted`: stop jobs still running (the caller was interrupted)."""


class LocalEngine(Engine):
    """Today's behaviour: the jobs one after the other in this process."""

    capacity = 1

    def __init__(self, fn: Callable, spec: ExecutorSpec):
        self.fn, self.threads, self.done = fn, spec.threads, {}

    def start(self, indices, jobs):
        for i in indices:
            self.done[i] = call_job(self.fn, jobs[i].args, self.threads)
        return indices

    def wait(self, handles):
        return [(h, self.done.pop(h)) for h in handles]


WORKER_DIED = ("its worker process died (killed, or out of memory) while it ran; the jobs running beside it in "
               "the pool were stopped too. Rerun the same command to resume")


class ProcessEngine(Engine):
    """A `ProcessPoolExecutor` (spawn: no CUDA or lock state copied by fork). A pool whose worker died is
    broken for good: the jobs it was running fail, and the jobs not yet started go to a fresh pool."""

    def __init__(self, fn: Callable, spec: ExecutorSpec):
        self.fn, self.gpus = fn, visible_gpus()
        self.capacity = spec.workers or len(self.gpus) or machine_cores()
        self.threads = shared_threads(spec, self.capacity)
        self.context = multiprocessing.get_context("spawn")
        self.pool: futures.ProcessPoolExecutor | None = None

    def _new_pool(self) -> futures.ProcessPoolExecutor:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        slots = self.context.Queue()  # worker k takes slot k: its GPU
        for slot in range(self.capacity):
            slots.put(slot)
        self.pool = futures.ProcessPoolExecutor(self.capacity, mp_context=self.context, initializer=_pin_worker,
                                                initargs=(slots, self.gpus, self.threads))
        return self.pool

    def _submit(self, job: Job):
        try:
            return (self.pool or self._new_pool()).submit(call_job, self.fn, job.args)
        except futures.process.BrokenProcessPool:  # a worker died: this pool takes no more jobs
            return self._new_pool().submit(call_job, self.fn, job.args)

    def start(self, indices, jobs):
        return [self._submit(jobs[i]) for i in indices]

    def wait(self, handles):
        finished, _ = futures.wait(handles, timeout=60, return_when=futures.FIRST_COMPLETED)
        return [(f, _future_result(f)) for f in finished]

    def close(self, interrupted=False):
        if self.pool is None:
            return
        if interrupted:  # stop the workers now: a worker left training would hold its run folder's lock
            if hasattr(self.pool, "terminate_workers"):  # Python 3.14
                self.pool.terminate_workers()
            else:
                for process in list((self.pool._processes or {}).values()):
                    process.terminate()
        self.pool.shutdown(wait=not interrupted, cancel_futures=True)


def _future_result(future) -> tuple[bool, Any, str | None]:
    try:
        return future.result()
    except futures.process.BrokenProcessPool:
        return False, None, WORKER_DIED
    except Exception as error:  # noqa: BLE001 - the engine's error (a job that cannot be pickled, ...)
        return False, None, describe_error(error)


class DaskEngine(Engine):
    """A `dask.distributed` client: of the scheduler at `--dask-scheduler`, else of a `LocalCluster` of
    `workers` single-threaded worker processes made for this command and closed after it."""

    def __init__(self, fn: Callable, spec: ExecutorSpec):
        try:
            import distributed
        except ImportError:
            raise ExecutorError("--executor dask needs dask.distributed: pip install 'dask[distributed]'") from None
        self.fn, self.distributed, self.cluster = fn, distributed, None
        if spec.dask_scheduler:
            try:
                self.client = distributed.Client(spec.dask_scheduler, timeout="30s")
            except (OSError, TimeoutError) as error:
                raise ExecutorError(f"--dask-scheduler {spec.dask_scheduler}: cannot connect ({error}); start the "
                                    "scheduler first (dask scheduler) or check the address") from None
            self.capacity = max(1, sum(self.client.nthreads().values()))
            self.threads = spec.threads
        else:
            workers = spec.workers or default_workers()
            self.environ = dict(os.environ)  # a Nanny sets OMP_NUM_THREADS=1 & co. in OUR environment to spawn
            self.cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                    dashboard_address=":0",
                                                    memory_limit=f"{spec.mem_gb}GB" if spec.mem_gb else 0)
            self.client = distributed.Client(self.cluster)
            self.capacity, self.threads = workers, shared_threads(spec, workers)
            log.info("Dask LocalCluster of %d workers; dashboard: %s", workers, self.client.dashboard_link)
            gpus = visible_gpus()
            if gpus:
                self.client.register_plugin(_gpu_pinning(distributed.WorkerPlugin, gpus), name="vgsme-gpus")

    def start(self, indices, jobs):
        return [self.client.submit(call_job, self.fn, jobs[i].args, self.threads, pure=False,
                                   key=f"{_safe_key(jobs[i].label)}-{os.urandom(4).hex()}") for i in indices]

    def wait(self, handles):
        try:
            finished, _ = self.distributed.wait(handles, timeout=60, return_when="FIRST_COMPLETED")
        except self.distributed.TimeoutError:
            return []
        return [(f, _dask_result(f)) for f in finished]

    def close(self, interrupted=False):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
            restore_environ(self.environ)  # or every process this one starts later would inherit them


def restore_environ(saved: dict[str, str]) -> None:
    """Put `os.environ` back as `saved` (variables added since removed, changed ones reset)."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)


def _gpu_pinning(base: type, gpus: list[str]):
    """A Dask worker plugin giving LocalCluster worker k the GPU k mod len(gpus), before any task runs."""
    class PinGPU(base):
        def setup(self, worker) -> None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpus[int(worker.name) % len(gpus)]
    return PinGPU()


def _safe_key(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in label)[:80] or "job"


def _dask_result(future) -> tuple[bool, Any, str | None]:
    if future.status == "finished":
        return future.result()
    if future.status == "cancelled":
        return False, None, "the Dask scheduler cancelled it (its client or cluster went away); rerun to resume"
    error = future.exception()
    if type(error).__name__ == "KilledWorker":
        return False, None, ("every Dask worker that ran it died (killed, or out of memory); rerun the same "
                             "command to resume")
    return False, None, describe_error(error)


class SubmititEngine(Engine):
    """submitit's `AutoExecutor`: a SLURM job array (all submitted at once, `workers` running at a time), or
    its local cluster (one controller process per job, `workers` at a time, GPUs handed out round-robin)."""

    def __init__(self, fn: Callable, spec: ExecutorSpec):
        try:
            import submitit
        except ImportError:
            raise ExecutorError("--executor submitit needs submitit: pip install submitit") from None
        if spec.log_folder is None:
            raise ExecutorError("--executor submitit needs a folder for job files and logs (--job-logs)")
        self.fn, self.spec, self.submitit = fn, spec, submitit
        try:
            self.executor = submitit.AutoExecutor(folder=Path(spec.log_folder) / "%j", cluster=spec.cluster)
        except RuntimeError as error:  # slurm: no srun on this machine
            raise ExecutorError(f"--executor submitit: {error} Submit from the cluster's login node, or use "
                                "--submitit-cluster local to run the jobs on this machine") from None
        parameters = {"timeout_min": spec.time_min, "gpus_per_node": spec.gpus_per_job,
                      "mem_gb": spec.mem_gb, "cpus_per_task": spec.threads}
        if spec.cluster == "slurm":
            self.threads = spec.threads
            parameters.update(slurm_partition=spec.partition, slurm_account=spec.account,
                              slurm_array_parallelism=spec.workers)
            self.capacity = sys.maxsize  # SLURM holds the queue: the array is submitted whole
            self.gpus: list[int] = []
        else:
            self.capacity = spec.workers or default_workers()
            self.threads = shared_threads(spec, self.capacity)
            parameters["timeout_min"] = spec.time_min or LOCAL_JOB_MINUTES
            self.gpus = [int(g) for g in visible_gpus() if g.isdigit()] if spec.gpus_per_job else []
        self.executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
        self.started = 0
        self.live: set = set()  # submitted, not yet ended: cancelled if the command is interrupted

    def start(self, indices, jobs):
        args = [jobs[i].args for i in indices]
        if self.gpus:  # local: each job its own GPUs, round-robin (submitit alone would give all of them GPU 0)
            submitted = []
            for job_args in args:
                first = self.started * self.spec.gpus_per_job
                self.executor.update_parameters(visible_gpus=[self.gpus[(first + k) % len(self.gpus)]
                                                              for k in range(self.spec.gpus_per_job)])
                submitted.append(self.executor.submit(call_job, self.fn, job_args, self.threads))
                self.started += 1
        else:
            submitted = self.executor.map_array(call_job, [self.fn] * len(args), args, [self.threads] * len(args))
        if self.spec.cluster == "local":
            for job in submitted:  # its result file is on a local disk: no 15 s wait for a network file system
                job._results_timeout_s = 1
        self.live.update(submitted)
        return submitted

    def wait(self, handles):
        finished = [h for h in handles if h.done()]
        if not finished:
            time.sleep(POLL_S)
        self.live.difference_update(finished)
        return [(h, self._result(h)) for h in finished]

    def _result(self, job) -> tuple[bool, Any, str | None]:
        try:
            return job.result()
        except self.submitit.core.utils.FailedJobError as error:  # it failed outside `call_job` (an import)
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            why = lines[-1] if lines else type(error).__name__
        except self.submitit.core.utils.UncompletedJobError:  # no result file: the process was ended from outside
            why = f"state {job.state}; it was killed, or ran out of time or memory"
        return False, None, (f"submitit job {job.job_id} ended without a result ({why}); its log: "
                             f"{job.paths.stderr}; rerun the same command to resume")

    def close(self, interrupted=False):
        if interrupted:
            for job in self.live:
                job.cancel(check=False)


ENGINES: dict[str, Callable[[Callable, ExecutorSpec], Engine]] = {
    "local": LocalEngine, "processes": ProcessEngine, "dask": DaskEngine, "submitit": SubmititEngine}


# ---------------------------------------------------------------------------------------------------- the runner

def run_jobs(spec: ExecutorSpec, fn: Callable, jobs: Sequence[Job], progress: bool = True) -> list[JobOutcome]:
    """Run `fn(*job.args)` for every job on `spec`'s engine; one outcome per job, in input order.

    `fn` must be a top-level function of an importable module (workers unpickle it by name). A job's exception
    is its failed outcome (with the worker's message); so is a job whose worker died. Progress: one line on
    stderr per change (`jobs: 3 done, 2 running, 1 failed of 12`), a bar on a terminal.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    engine = ENGINES[spec.kind](fn, spec)
    outcomes: list[JobOutcome | None] = [None] * len(jobs)
    waiting = list(range(len(jobs)))
    in_flight: dict[Any, int] = {}
    bar = JobProgress(len(jobs), progress and spec.kind != "local")
    interrupted = True
    try:
        while waiting or in_flight:
            free = min(len(waiting), engine.capacity - len(in_flight))
            if free > 0:
                batch, waiting = waiting[:free], waiting[free:]
                in_flight.update(zip(engine.start(batch, jobs), batch))
            bar.show(outcomes, len(in_flight))
            for handle, (ok, value, error) in engine.wait(list(in_flight)):
                i = in_flight.pop(handle)
                outcomes[i] = JobOutcome(jobs[i].label, ok, value if ok else None, None if ok else error)
                if not ok:
                    log.info("job %s failed: %s", jobs[i].label, error)
        bar.show(outcomes, 0)
        interrupted = False
    finally:
        bar.close()
        engine.close(interrupted)
    return outcomes  # type: ignore[return-value]


class JobProgress:
    """`jobs: 3 done, 2 running, 1 failed of 12`: a tqdm bar on a terminal, else one line per change (stderr),
    as `cache.clitools.progress_bar` does for its bars."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.last = total, enabled, None
        self.bar = tqdm(total=total, desc="jobs", unit="job", dynamic_ncols=True, leave=False) \
            if enabled and sys.stderr.isatty() else None

    def show(self, outcomes: Iterable[JobOutcome | None], running: int) -> None:
        ended = [o for o in outcomes if o is not None]
        failed = sum(not o.ok for o in ended)
        counts = (len(ended) - failed, running, failed)
        if not self.enabled or counts == self.last:
            return
        self.last = counts
        line = f"{counts[0]} done, {counts[1]} running, {counts[2]} failed of {self.total}"
        if self.bar is not None:
            self.bar.n = len(ended)
            self.bar.set_postfix_str(line)
        else:
            print(f"jobs: {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------------- the options

def executor_options(fn: Callable) -> Callable:
    """Add the executor options (`--executor`, `--workers`, `--dask-scheduler`, `--submitit-cluster`, the job
    and SLURM options, `--job-logs`) to a click command, which gets them as ONE parameter `executor:
    ExecutorSpec`; options that do not go together are a usage error. The command fills in its own `--threads`
    and default log folder with `executor.with_defaults(...)`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, executor: str, workers, dask_scheduler, submitit_cluster, slurm_partition,
                slurm_account, job_time, job_gpus, job_mem, job_logs, **kwargs: Any) -> Any:
        try:
            spec = ExecutorSpec(executor, workers, dask_scheduler=dask_scheduler, submitit_cluster=submitit_cluster,
                                partition=slurm_partition, account=slurm_account, time_min=job_time,
                                gpus_per_job=job_gpus, mem_gb=job_mem, log_folder=job_logs)
        except ExecutorError as error:
            raise click.UsageError(str(error)) from None
        return fn(*args, executor=spec, **kwargs)

    options = [
        click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
                     help="Where the jobs run: local = one after the other in this process; processes = a pool "
                     "of local processes (one GPU each when there are GPUs); dask = a Dask cluster "
                     "(--dask-scheduler, else a LocalCluster); submitit = SLURM job arrays (or submitit's local "
                     "cluster). Results are the same; see docs/scale-out.md."),
        click.option("--workers", type=click.IntRange(1), metavar="N",
                     help="Jobs at once: pool processes, LocalCluster workers or SLURM array parallelism "
                     "[default: one per GPU, else one per core; SLURM: submitit's limit]."),
        click.option("--dask-scheduler", metavar="ADDRESS",
                     help="With --executor dask: a running scheduler, e.g. tcp://10.0.0.5:8786 [default: a "
                     "LocalCluster of --workers processes for this command]."),
        click.option("--submitit-cluster", type=click.Choice(SUBMITIT_CLUSTERS),
                     help="With --executor submitit: slurm (sbatch job arrays) or local (submitit's local "
                     "processes, to try a sweep without SLURM) [default: slurm]."),
        click.option("--slurm-partition", metavar="NAME", help="SLURM partition of the jobs (sbatch --partition)."),
        click.option("--slurm-account", metavar="NAME", help="SLURM account charged for the jobs (sbatch --account)."),
        click.option("--job-time", type=click.IntRange(1), metavar="MINUTES",
                     help="With submitit: wall-clock limit of one job, in minutes (sbatch --time) [default: the "
                     "partition's; local: 7 days]. A job stopped by it resumes when the command is rerun."),
        click.option("--job-gpus", type=click.IntRange(0), metavar="N",
                     help="With submitit: GPUs per job (sbatch --gpus-per-node) [default: none]."),
        click.option("--job-mem", type=click.FloatRange(min=0, min_open=True), metavar="GB",
                     help="Memory per job in GB: sbatch --mem with submitit, a worker's limit with a dask "
                     "LocalCluster [default: the partition's; LocalCluster: no limit]."),
        click.option("--job-logs", type=click.Path(file_okay=False, path_type=Path), metavar="FOLDER",
                     help="With submitit: folder for the jobs' files and logs, one sub-folder per job "
                     "[default: jobs/ in the output folder]."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
