"""Extraction of one store across many jobs, giving the bytes a local extraction gives.

The jobs split the fixed batch grid of ``extract.run`` (``GridPart``: job j of N encodes grid batches j,
j + N, ...), not the items, so the encoder sees exactly the batches a local run forms. Each job writes its
batches into a part store, ``<store>.jobs/job-<j>-of-<N>.h5`` (an ordinary journalled store, resumable on
its own, whose provenance names the job, the job count and the batch size). When every job has succeeded
the lead feeds the parts' features, batch by batch in grid order, into the ordinary ``StoreWriter`` of
the final store, skips what the jobs skipped, and ``finish`` packs exactly what a local run packs.

Encoder outputs depend on the thread counts (docs/extraction.md, "Extraction across jobs"): torch's, and
for whisper-base the MKL inside CTranslate2, which reads ``MKL_NUM_THREADS`` when it starts (dask sets it to
1 in its workers). So every job runs with the lead's torch thread count and the lead's thread variables.
The lead also loads the encoder once, to name and describe the store; a worker whose encoder or corpus
describes differently (another precision resolved on another machine, other weights) is refused before it
encodes anything.

How the jobs run is the caller's: ``extract_across_jobs`` takes a ``map_jobs(fn, jobs)`` that runs a
picklable top-level ``fn`` on each job (in this process, a process pool, dask, submitit) and returns one
``(ok, part_path_or_error_message)`` per job, in order; ``executor_map`` makes one from ``cache.executors``
(what ``extract-features --executor`` uses).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from cache.atomic import write_json
from cache.clitools import progress_bar
from cache.executors import ExecutorSpec, Job, run_jobs
from cache.files import remove_path
from cache.provenance import Provenance
from cache.store import FeatureStore, StoreWriter, open_store, open_writer
from extract.corpus import Corpus, load_corpus
from extract.encoders.registry import load_encoder
from extract.run import ExtractionError, GridPart, StorePlan, extract_store, grid_size, part_plan, plan_store

log = logging.getLogger(__name__)

ENCODER_OPTIONS = ("layer", "layers", "device", "precision")  # what load_encoder takes besides the name
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # read by the math libraries
# Taken when this module is imported, not when the jobs are planned: a dask LocalCluster sets
# MKL_NUM_THREADS=1 in the environment of the process that starts it, the lead's own, and keeps it set.
_LEAD_THREAD_ENV = {name: os.environ.get(name) for name in THREAD_VARIABLES}
MapJobs = Callable[[Callable[["ExtractionJob"], Path], list["ExtractionJob"]], list[tuple[bool, Any]]]


def work_dir(store: Path) -> Path:
    """The folder beside a store that holds its parts while they are made (``<store>.jobs``; never read as a
    store: ``cache.layout`` names end in .h5/.zarr)."""
    return store.with_name(store.name + ".jobs")


@dataclasses.dataclass(frozen=True)
class ExtractionJob:
    """Everything a worker needs to extract one part, in plain picklable values.

    ``store`` is the final store's path (its suffix is the final format; parts are always HDF5).
    ``threads`` and ``thread_env`` (``THREAD_VARIABLES``, None = unset) are the lead's torch thread count and
    thread variables: outputs change with them. ``planned`` is the provenance the
    lead planned the store with (``Provenance.to_dict``), or None to accept whatever the worker computes.
    ``force`` rebuilds a part made from other inputs; ``extract_across_jobs`` clears the work folder itself
    and sends False, so that a job the executor retries never discards its own progress.
    """

    corpus_root: Path
    modality: str
    lang: str | None
    encoder: str
    layer: int | None
    device: str
    precision: str
    store: Path
    batch_size: int
    index: int  # 0-based
    count: int
    skip_bad: bool
    force: bool
    threads: int
    thread_env: dict[str, str | None] = dataclasses.field(default_factory=dict)
    planned: dict[str, Any] | None = None
    layers: tuple[int, ...] | str | None = None  # several hidden states along a layer axis (--layers)

    @property
    def label(self) -> str:
        return f"job {self.index + 1} of {self.count}"

    @property
    def part(self) -> Path:
        """The part store this job writes."""
        return work_dir(self.store) / f"job-{self.index + 1}-of-{self.count}.h5"

    @property
    def error_record(self) -> Path:
        """Where a job that stopped on a user error (a ValueError) leaves its message for the lead."""
        return work_dir(self.store) / f"job-{self.index + 1}-of-{self.count}.error.json"


def lead_threads() -> tuple[int, dict[str, str | None]]:
    """This process's torch thread count and its thread variables as they were on import: what a local run
    started from the same shell encodes with, so what every job is to run with."""
    return torch.get_num_threads(), dict(_LEAD_THREAD_ENV)


@contextlib.contextmanager
def threads_of(count: int, env: Mapping[str, str | None]) -> Iterator[None]:
    """Run with torch's thread count and the thread variables set as given (restored after). The variables
    count only if set before a library reads them: whisper-base's CTranslate2 (and its MKL) is imported when
    its encoder loads, inside this block, unless an earlier job in the same worker process loaded it."""
    saved = torch.get_num_threads(), {name: os.environ.get(name) for name in THREAD_VARIABLES}
    torch.set_num_threads(count)
    _set_environment(env)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        _set_environment(saved[1])


def _set_environment(env: Mapping[str, str | None]) -> None:
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def run_extraction_job(job: ExtractionJob) -> Path:
    """Extract one job's part and return its path: a complete part is returned untouched, an interrupted one
    resumes after its last committed batch. Top-level (picklable) so that any executor can run it.

    A user error (bad items without --skip-bad, out of memory, a worker that differs from the plan) is
    recorded beside the part before it is raised, so the lead reports it word for word whatever the
    executor makes of the exception.
    """
    remove_path(job.error_record)  # an executor's earlier try of this job may have left one
    try:
        with threads_of(job.threads, job.thread_env):  # before the encoder loads: CTranslate2 reads them then
            corpus = load_corpus(job.corpus_root, check_media=False)  # the lead checked the media
            encoder = load_encoder(job.encoder, modality=job.modality, layer=job.layer, device=job.device,
                                   precision=job.precision, layers=job.layers)
            if job.planned is not None:
                computed = plan_store(corpus, job.modality, job.lang, encoder, job.store, batch_size=job.batch_size)
                differences = Provenance.from_dict(job.planned).mismatches(computed.provenance)
                if differences:
                    raise ExtractionError(
                        f"{job.label} of {job.store.name}: this worker's encoder or corpus is not the one the "
                        "extraction was planned with (stored = planned, requested = this worker):\n  "
                        + "\n  ".join(differences) + "\nGive --device and --precision explicitly and the same "
                        "weights and corpus to every machine.")
            log.info("%s of %s: %d torch thread(s), part %s", job.label, job.store.name, job.threads, job.part)
            return extract_store(corpus, job.modality, job.lang, encoder, job.part, batch_size=job.batch_size,
                                 skip_bad=job.skip_bad, force=job.force, progress=False,
                                 part=GridPart(job.index, job.count))
    except ValueError as error:
        write_json(job.error_record, {"job": job.label, "error": type(error).__name__, "message": str(error)})
        raise


def extract_across_jobs(
    corpus: Corpus,
    modality: str,
    lang: str | None,
    encoder_name: str,
    encoder_options: dict[str, Any],
    out: Path,
    fmt: str | None,
    batch_size: int,
    n_jobs: int,
    skip_bad: bool,
    force: bool,
    progress: bool,
    map_jobs: MapJobs,
) -> Path:
    """Extract one store as ``n_jobs`` jobs run by ``map_jobs`` and return its path; the store is byte for byte
    the one ``extract.run.extract_store`` writes (its ``created`` time aside).

    Arguments as ``extract_store``, except the encoder: its name and ``encoder_options`` (``layer``,
    ``layers``, ``device``, ``precision``; load_encoder's defaults for the others), loaded here to name and describe
    the store and in every worker to encode. ``n_jobs`` is capped at the number of grid batches.

    A complete store that matches is returned at once (no jobs); one made from other inputs is refused
    (``ProvenanceMismatch``) unless ``force``, which also discards the parts. Jobs whose part is complete
    are not run again. A failed job raises ``ExtractionError``: a user error with the worker's own message
    (as a local run says it), anything else naming the job(s); the finished parts are kept and the same
    call resumes. The parts are removed once the store is packed.
    """
    if n_jobs < 1:
        raise ExtractionError(f"the number of jobs must be at least 1, not {n_jobs}")
    unknown = sorted(set(encoder_options) - set(ENCODER_OPTIONS))
    if unknown:
        raise ExtractionError(f"unknown encoder option(s) {', '.join(unknown)}: use {', '.join(ENCODER_OPTIONS)}")
    options = {"layer": None, "layers": None, "device": "auto", "precision": "auto", **encoder_options}
    if isinstance(options["layers"], list):
        options["layers"] = tuple(options["layers"])
    encoder = load_encoder(encoder_name, modality=modality, **options)
    request = plan_store(corpus, modality, lang, encoder, out, fmt, batch_size)
    dim = encoder.dim
    del encoder  # the workers encode; free its memory (a GPU's included) while they run
    writer = open_writer(request.path, request.provenance, request.items, dim, request.positions, overwrite=force)
    try:
        if writer.complete:
            log.info("%s is complete and matches the request: nothing to do", request.path)
        else:
            if force:
                remove_path(work_dir(request.path))
            count = min(n_jobs, grid_size(len(request.plan), batch_size))
            threads, thread_env = lead_threads()
            jobs = [ExtractionJob(corpus.root, modality, request.provenance.lang, encoder_name, options["layer"],
                                  options["device"], options["precision"], request.path, batch_size, index, count,
                                  skip_bad, force=False, threads=threads, thread_env=thread_env,
                                  planned=request.provenance.to_dict(), layers=options["layers"])
                    for index in range(count)]
            parts = [part_plan(request, GridPart(job.index, count), batch_size, job.part) for job in jobs]
            todo = [job for job, part in zip(jobs, parts) if not part_is_complete(part, dim)]
            log.info("%s: %d job(s) over %d batches of %d, %d to run", request.path.name, count,
                     grid_size(len(request.plan), batch_size), batch_size, len(todo))
            for job in todo:  # a job that never starts this time must not be reported with an old message
                remove_path(job.error_record)
            outcomes = map_jobs(run_extraction_job, todo) if todo else []
            if len(outcomes) != len(todo):
                raise ExtractionError(f"map_jobs returned {len(outcomes)} results for {len(todo)} jobs")
            failed = [(job, value) for job, (ok, value) in zip(todo, outcomes) if not ok]
            if failed:
                raise ExtractionError(failure_message(failed, request.path, count))
            assemble(writer, request, parts, batch_size, progress)
            writer.finish()
    finally:
        writer.close()
    shutil.rmtree(work_dir(request.path), ignore_errors=True)
    return request.path


def part_is_complete(part: StorePlan, dim: int) -> bool:
    """Whether a part is already complete and made for this request; a complete part made from other inputs
    raises ``ProvenanceMismatch`` (a half-written one is checked, and resumed, by its job)."""
    if not part.path.exists():
        return False
    open_writer(part.path, part.provenance, part.items, dim, part.positions).close()  # complete, or it raises
    return True


def failure_message(failed: Sequence[tuple[ExtractionJob, Any]], store: Path, count: int) -> str:
    """The failed jobs' own user errors, word for word; the others named with what the executor said."""
    lines: list[str] = []
    crashed = 0
    for job, reported in failed:
        if job.error_record.is_file():
            message = json.loads(job.error_record.read_text())["message"]
        else:
            crashed += 1
            message = f"{job.label} ({job.part}) failed: {' '.join(str(reported).split()) or 'no message'}"
        if message not in lines:
            lines.append(message)
    if crashed:  # a user error says its own way on; a crash or a kill is resumed by a rerun
        lines.append(f"{len(failed)} of {count} jobs of {store.name} failed; the parts already written are kept "
                     "and rerunning the same command resumes them.")
    return "\n".join(lines)


def assemble(writer: StoreWriter, request: StorePlan, parts: Sequence[StorePlan], batch_size: int,
             progress: bool) -> None:
    """Feed the parts into the final store's writer as a local run would: grid batch by grid batch, its
    skipped items first, then its features in one ``append``. Resumes after the batches already fed."""
    pending = set(writer.pending.ids.tolist())
    stores: list[FeatureStore] = []
    try:
        for part in parts:
            stores.append(open_store(part.path))
            differences = stores[-1].provenance.mismatches(part.provenance)
            if differences:  # the job resumed a part of another request: never pack it
                raise ExtractionError(f"{part.path} was made from other inputs than requested:\n  "
                                      + "\n  ".join(differences) + "\nDelete it and rerun.")
        bar = progress_bar(progress, total=len(request.plan), initial=writer.done, unit="item",
                           desc=f"{request.path.name} (assembling)")
        with bar:
            for number, start in enumerate(range(0, len(request.plan), batch_size)):
                batch = [item.id for item in request.plan[start : start + batch_size] if item.id in pending]
                if not batch:
                    continue
                store = stores[number % len(stores)]
                skipped = dict(zip(store.skipped.ids.tolist(), zip(store.skipped.path, store.skipped.reason)))
                for item_id in batch:
                    if item_id in skipped:
                        writer.skip(item_id, *skipped[item_id])
                good = [item_id for item_id in batch if item_id not in skipped]
                if good:
                    features, lengths = store.read(store.items.index_of(good))
                    writer.append([features[k, : lengths[k]] for k in range(len(good))])
                bar.update(len(batch))
    finally:
        for store in stores:
            store.close()


def executor_map(spec: ExecutorSpec, progress: bool = True) -> MapJobs:
    """The ``map_jobs`` of ``extract_across_jobs`` on one of ``cache.executors``' engines: every job one
    ``Job``, each outcome ``(ok, part path or the worker's error message)``."""
    def map_jobs(fn: Callable[[ExtractionJob], Path], jobs: list[ExtractionJob]) -> list[tuple[bool, Any]]:
        outcomes = run_jobs(spec, fn, [Job(job.label, (job,)) for job in jobs], progress=progress)
        return [(outcome.ok, outcome.value if outcome.ok else outcome.error) for outcome in outcomes]

    return map_jobs
