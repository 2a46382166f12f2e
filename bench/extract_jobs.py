"""Extraction across jobs (``extract.jobs``): what decides the bits, whether the jobs' store is the local one, and
what the jobs cost on one machine. The figures of docs/extraction.md, "Extraction across jobs".

    python bench/extract_jobs.py                                  # the three steps below, the default encoders
    python bench/extract_jobs.py --engines dask submitit          # also step 3
    python bench/extract_jobs.py --quick                          # the tiny WavLM on a smaller corpus (smoke test)

1. Thread determinism. Each encoder encodes the same items in batches of ``--batch-size`` in a fresh process per
   run, with ``torch.set_num_threads`` at each of ``--threads`` (set before the encoder loads), ``--runs`` times
   per count; whisper-base also at the last count with ``MKL_NUM_THREADS=1`` and with ``OMP_NUM_THREADS=1``
   (CTranslate2's MKL reads them when it loads). Reported: items whose fp32 features differ between the two
   counts, items whose float16 (stored) features differ, the largest |difference|, and whether two runs at the
   same count are identical.
2. Local vs jobs. ``extract_store`` in this process against ``extract_across_jobs`` with ``--jobs`` jobs on
   ``--workers`` spawned worker processes (a ``ProcessPoolExecutor``): wall time of each (the encoder's loading
   included) and whether the two HDF5 stores are byte for byte the same (their ``created`` time aside).
3. Executors (``--engines``). ``extract_across_jobs`` with the same jobs mapped by a dask ``LocalCluster``
   (``--workers`` worker processes, 1 thread each) and a submitit ``LocalExecutor``, in HDF5 and Zarr, each
   store compared byte for byte with a local one.

The corpus is the tests' tiny one (``tests.extract.corpus_fixtures.write_tiny_corpus``: 28 English words, 25
pictures; ``--quick``: 14 words, 14 pictures) unless ``--corpus`` names one; ``tiny-wavlm`` is the tests'
random-weight WavLM (``tests.extract.tiny_models.save_tiny_wavlm``). whisper-base is read from
``$VGSME_HOME/models``, as by ``extract-features``. Prints a table per step and writes the figures, with the
machine, to ``--out`` (default bench/results/extract_jobs.json).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cache.atomic import write_json  # noqa: E402
from cache.hardware import machine_record  # noqa: E402
from extract.corpus import load_corpus  # noqa: E402
from extract.encoders.registry import known_encoders, load_encoder  # noqa: E402
from cache.executors import restore_environ  # noqa: E402
from extract.jobs import extract_across_jobs, lead_threads  # noqa: E402
from extract.run import batches, extract_store, plan_items, reader_for  # noqa: E402
from tests.extract.corpus_fixtures import write_tiny_corpus  # noqa: E402
from tests.extract.tiny_models import save_tiny_wavlm  # noqa: E402

TINY_WAVLM = "tiny-wavlm"
DEFAULT_ENCODERS = (TINY_WAVLM, "efficientnet-lite0", "whisper-base")
ENCODER_CHOICES = (TINY_WAVLM, *known_encoders())
# whisper-base's CTranslate2 reads these when it loads; torch's thread count is set explicitly either way
ENV_VARIANTS = {"whisper-base": ({"MKL_NUM_THREADS": "1"}, {"OMP_NUM_THREADS": "1"})}
ENGINE_FORMATS = ("hdf5", "zarr")
RESULTS = REPO / "bench" / "results"
MapJobs = Callable[[Callable, list], list[tuple[bool, Any]]]


# ------------------------------------------------------------------------------------ step 1: thread counts
def encode_worker(spec: dict) -> None:
    """In a fresh process: encode every item of one modality at ``spec['threads']`` torch threads (set before
    the encoder loads, as a job does) and save the fp32 features, one array per item id, to ``spec['out']``."""
    torch.set_num_threads(spec["threads"])
    corpus = load_corpus(Path(spec["corpus"]))
    encoder = load_encoder(spec["encoder"], modality=spec["modality"], device="cpu")
    plan, _ = plan_items(corpus, spec["modality"], spec["lang"])
    read = reader_for(spec["modality"], encoder)
    arrays: dict[str, np.ndarray] = {}
    for batch in batches(plan, spec["batch_size"], {item.id for item in plan}):
        for item, features in zip(batch, encoder.encode([read(item) for item in batch])):
            arrays[item.id] = np.asarray(features, np.float32)
    np.savez(spec["out"], **arrays)


def encode_in_fresh_process(spec: dict, env: dict[str, str]) -> dict[str, np.ndarray]:
    """Run ``encode_worker`` in a new interpreter (so the thread settings and the libraries' first reads of the
    environment are this run's alone) with ``env`` added to this process's environment."""
    command = [sys.executable, str(Path(__file__).resolve()), "--encode-worker", json.dumps(spec)]
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"encoding {spec['encoder']} at {spec['threads']} thread(s) failed:\n{done.stderr[-3000:]}")
    with np.load(spec["out"]) as saved:
        return {key: saved[key] for key in saved.files}


def differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, Any]:
    """Items whose fp32 features differ, items whose float16 (as stored) features differ, the largest |a - b|."""
    if a.keys() != b.keys():
        raise SystemExit("two runs encoded different items")
    return {"items": len(a),
            "differ_fp32": sum(not np.array_equal(a[k], b[k]) for k in a),
            "differ_float16": sum(not np.array_equal(a[k].astype(np.float16), b[k].astype(np.float16)) for k in a),
            "max_abs_diff": max(float(np.abs(a[k] - b[k]).max()) for k in a)}


def thread_determinism(name: str, encoder: str, modality: str, corpus: Path, args: argparse.Namespace,
                       work: Path) -> dict[str, Any]:
    """Step 1 for one encoder: runs at each thread count, then the comparisons."""
    lang = "en" if modality == "audio" else None
    runs: dict[tuple[int, str], list[dict[str, np.ndarray]]] = {}
    variants = [{}, *ENV_VARIANTS.get(name, ())]
    for threads in args.threads:
        for env in variants if threads == args.threads[-1] else [{}]:
            label = ",".join(f"{k}={v}" for k, v in env.items())
            for run in range(1 if env else args.runs):
                out = work / f"{Path(name).name}-{threads}-{label or 'plain'}-{run}.npz"
                spec = {"encoder": encoder, "modality": modality, "corpus": str(corpus), "lang": lang,
                        "threads": threads, "batch_size": args.batch_size, "out": str(out)}
                runs.setdefault((threads, label), []).append(encode_in_fresh_process(spec, env))
    low, high = args.threads[0], args.threads[-1]
    row: dict[str, Any] = {"encoder": name, "threads": [low, high], **differences(runs[(low, "")][0], runs[(high, "")][0])}
    # per count, the most items any later run differs in from the first (None: one run, not checked)
    row["repeat_differ_fp32"] = {str(t): max((differences(runs[(t, "")][0], other)["differ_fp32"]
                                              for other in runs[(t, "")][1:]), default=None) for t in (low, high)}
    for env in variants[1:]:
        label = ",".join(f"{k}={v}" for k, v in env.items())
        row.setdefault("env_variants", {})[label] = differences(runs[(high, "")][0], runs[(high, label)][0])
    return row


def magnitude(x: float) -> str:
    return f"{x:.1e}" if x else "0"


def print_determinism(rows: list[dict], args: argparse.Namespace) -> None:
    low, high = args.threads[0], args.threads[-1]
    print(f"\n1. thread determinism: {low} vs {high} torch threads, fresh process per run, batches of {args.batch_size}")
    print(f"| encoder | items differing in fp32 | in float16 | max abs diff | same count, {args.runs} runs |")
    print("|---|---|---|---|---|")
    for r in rows:
        repeat = ("not checked (--runs 1)" if args.runs < 2 else
                  "identical" if not any(r["repeat_differ_fp32"].values()) else
                  "DIFFER: " + ", ".join(f"{t} thr {n} items" for t, n in r["repeat_differ_fp32"].items()))
        print(f"| {r['encoder']} | {r['differ_fp32']} of {r['items']} | {r['differ_float16']} of {r['items']} | "
              f"{magnitude(r['max_abs_diff'])} | {repeat} |")
        for label, d in r.get("env_variants", {}).items():
            print(f"|   {r['encoder']}, {high} threads, {label} vs without | {d['differ_fp32']} of {d['items']} | "
                  f"{d['differ_float16']} of {d['items']} | {magnitude(d['max_abs_diff'])} | |")


# --------------------------------------------------------------------------------- steps 2 and 3: stores
def store_files(path: Path) -> list[bytes]:
    """Every file of a store (the HDF5 file, or the Zarr tree, in path order) as bytes, its creation time blanked:
    the one field two extractions made at different times may differ in."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [re.sub(rb'"created": "[^"]*"', b'"created": ""', p.read_bytes()) for p in files]


def identical(a: Path, b: Path) -> bool:
    return a.name == b.name and store_files(a) == store_files(b)


def collect(futures: list, result: Callable[[Any], Any]) -> list[tuple[bool, Any]]:
    """Each job's outcome in order, a failure as its message (what ``extract_across_jobs`` expects)."""
    out = []
    for future in futures:
        try:
            out.append((True, result(future)))
        except Exception as error:  # the job's own error, reported by extract_across_jobs
            out.append((False, f"{type(error).__name__}: {error}"))
    return out


def spawned_pool(workers: int) -> MapJobs:
    def map_jobs(fn, jobs):
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return collect([pool.submit(fn, job) for job in jobs], lambda f: f.result())
    return map_jobs


def dask_cluster(workers: int) -> MapJobs:
    def map_jobs(fn, jobs):
        from distributed import Client, LocalCluster

        saved = dict(os.environ)  # a LocalCluster sets OMP_NUM_THREADS=1 & co. in this process
        try:
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                    Client(cluster) as client:
                return collect(client.map(fn, jobs, pure=False), lambda f: f.result())
        finally:
            restore_environ(saved)
    return map_jobs


def submitit_local(folder: Path) -> MapJobs:
    def map_jobs(fn, jobs):
        import submitit

        # its workers are fresh interpreters started from this environment: they must find the project
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=30)
        return collect([executor.submit(fn, job) for job in jobs], lambda s: s.result())
    return map_jobs


def local_store(corpus, modality: str, encoder: str, out: Path, fmt: str, batch_size: int) -> tuple[Path, float]:
    """A local extraction and its wall time, the encoder's loading included (as each job's)."""
    start = time.perf_counter()
    loaded = load_encoder(encoder, modality=modality, device="cpu")
    path = extract_store(corpus, modality, "en" if modality == "audio" else None, loaded, out, fmt=fmt,
                         batch_size=batch_size, progress=False)
    return path, time.perf_counter() - start


def across(corpus, modality: str, encoder: str, out: Path, fmt: str, args: argparse.Namespace,
           map_jobs: MapJobs) -> tuple[Path, float]:
    start = time.perf_counter()
    path = extract_across_jobs(corpus, modality, "en" if modality == "audio" else None, encoder, {"device": "cpu"},
                               out, fmt, args.batch_size, args.jobs, False, False, False, map_jobs)
    return path, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", choices=ENCODER_CHOICES, default=None,
                        help=f"encoders to check [default: {' '.join(DEFAULT_ENCODERS)}; --quick: {TINY_WAVLM}]")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="corpus folder with English words (default: the tests' tiny corpus, written here)")
    parser.add_argument("--threads", nargs=2, type=int, default=[1, 2], metavar=("LOW", "HIGH"),
                        help="the two torch thread counts compared in step 1")
    parser.add_argument("--runs", type=int, default=2, help="runs per thread count in step 1 (2 checks repeatability)")
    parser.add_argument("--batch-size", type=int, default=8, help="items per forward pass")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per store in steps 2-3 [default: 4; --quick: 2]")
    parser.add_argument("--workers", type=int, default=2, help="worker processes running the jobs")
    parser.add_argument("--engines", nargs="*", choices=("dask", "submitit"), default=[],
                        help="step 3: also map the jobs with these executors (HDF5 and Zarr stores)")
    parser.add_argument("--skip", nargs="*", choices=("threads", "local-vs-jobs"), default=[],
                        help="steps to leave out")
    parser.add_argument("--quick", action="store_true",
                        help="the tiny WavLM on a 14-word corpus, 2 jobs: a smoke test of the script (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS / "extract_jobs.json", help="where the JSON goes")
    parser.add_argument("--encode-worker", metavar="SPEC", default=None,
                        help="internal (step 1's fresh processes): encode as the JSON SPEC says and exit")
    args = parser.parse_args(argv)
    args.encoders = args.encoders or ([TINY_WAVLM] if args.quick else list(DEFAULT_ENCODERS))
    args.jobs = args.jobs or (2 if args.quick else 4)
    if min(args.threads) < 1 or args.runs < 1 or args.batch_size < 1 or args.jobs < 1 or args.workers < 1:
        parser.error("--threads, --runs, --batch-size, --jobs and --workers must be at least 1")
    if args.threads[0] == args.threads[1]:
        parser.error(f"--threads compares two different counts, not {args.threads[0]} with itself (e.g. --threads 1 2)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.encode_worker is not None:
        encode_worker(json.loads(args.encode_worker))
        return {}
    threads, thread_env = lead_threads()
    machine = machine_record("cpu")
    load = os.getloadavg()[0]  # the machine may be shared: times mean little when it is busy
    print(f"machine: {machine['device_name']}; {os.cpu_count()} logical CPUs; 1-minute load average {load:.1f}; "
          f"torch {torch.__version__}; this process: {threads} torch thread(s), {thread_env}", flush=True)
    report: dict[str, Any] = {"machine": machine, "cpus": os.cpu_count(), "load_average": load, "lead_threads": threads,
                              "lead_thread_env": thread_env, "args": {k: str(v) if isinstance(v, Path) else v
                                                                      for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="vgsme-bench-jobs-") as tmp:
        work = Path(tmp)
        generated = args.corpus is None
        if generated:
            small = {"familiar": 2, "novel": 1, "tokens_per_split": {"train": 3, "valid": 1, "test": 2},
                     "images_per_split": {"train": 3, "valid": 1, "test": 2}} if args.quick else {}
            args.corpus = write_tiny_corpus(work / "corpus", langs=("en",), **small)
        corpus = load_corpus(args.corpus)
        report["corpus"] = {"path": "the tests' tiny corpus" if generated else str(args.corpus),
                            "words": len(corpus.audio_of("en")), "pictures": len(corpus.images)}
        print(f"corpus: {report['corpus']['words']} English words, {report['corpus']['pictures']} pictures", flush=True)
        encoders = {name: (str(save_tiny_wavlm(work / TINY_WAVLM)) if name == TINY_WAVLM else name,
                           "audio" if name == TINY_WAVLM else known_encoders()[name]) for name in args.encoders}

        if "threads" not in args.skip:
            report["threads"] = [thread_determinism(name, encoder, modality, args.corpus, args, work)
                                 for name, (encoder, modality) in encoders.items()]
            print_determinism(report["threads"], args)

        locals_: dict[tuple[str, str], tuple[Path, float]] = {}
        for name, (encoder, modality) in encoders.items():  # before any dask cluster changes this process
            for fmt in ENGINE_FORMATS if args.engines else ENGINE_FORMATS[:1]:
                locals_[(name, fmt)] = local_store(corpus, modality, encoder, work / "local", fmt, args.batch_size)

        if "local-vs-jobs" not in args.skip:
            rows = []
            for name, (encoder, modality) in encoders.items():
                whole, local_s = locals_[(name, "hdf5")]
                path, jobs_s = across(corpus, modality, encoder, work / "pool", "hdf5", args, spawned_pool(args.workers))
                rows.append({"encoder": name, "items": len(corpus.audio_of("en")) if modality == "audio"
                             else len(corpus.images), "local_s": round(local_s, 2), "jobs_s": round(jobs_s, 2),
                             "identical": identical(whole, path)})
            report["local_vs_jobs"] = rows
            print(f"\n2. local vs {args.jobs} jobs on {args.workers} spawned workers (HDF5, batches of "
                  f"{args.batch_size}, wall time with the encoder's loading)")
            print("| encoder | items | local | jobs | byte-identical |\n|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['encoder']} | {r['items']} | {r['local_s']:.1f} s | {r['jobs_s']:.1f} s | "
                      f"{'yes' if r['identical'] else 'NO'} |", flush=True)

        if args.engines:
            mappers = {"dask": lambda: dask_cluster(args.workers), "submitit": lambda: submitit_local(work / "submitit")}
            rows = []
            for name, (encoder, modality) in encoders.items():
                for fmt in ENGINE_FORMATS:
                    for engine in args.engines:
                        path, seconds = across(corpus, modality, encoder, work / engine, fmt, args, mappers[engine]())
                        rows.append({"encoder": name, "format": fmt, "engine": engine, "seconds": round(seconds, 2),
                                     "identical": identical(locals_[(name, fmt)][0], path)})
            report["engines"] = rows
            print(f"\n3. executors: {args.jobs} jobs, {args.workers} workers, each store vs the local one")
            print("| encoder | format | engine | time | byte-identical |\n|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['encoder']} | {r['format']} | {r['engine']} | {r['seconds']:.1f} s | "
                      f"{'yes' if r['identical'] else 'NO'} |", flush=True)
    write_json(args.out, report)
    print(f"\nwritten: {args.out}")
    return report


if __name__ == "__main__":
    main()
