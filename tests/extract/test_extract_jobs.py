"""One store extracted across jobs: byte-identical to a local extraction, resumable, failures named."""
from __future__ import annotations

import multiprocessing
import os
import re
import signal
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

import extract.encoders.hf as hf
from cache.store import ProvenanceMismatch, StoreWriter, journal_path
from extract.corpus import load_corpus
from extract.encoders.registry import load_encoder
from extract.jobs import ExtractionJob, extract_across_jobs, run_extraction_job, work_dir
from extract.run import ExtractionError, extract_store
from tests.extract.corpus_fixtures import write_tiny_corpus
from tests.extract.tiny_models import save_tiny_wavlm

BATCH, JOBS = 3, 3  # 14 English words: 5 grid batches, jobs of 2, 2 and 1 batches


@pytest.fixture
def corpus_root(tmp_path) -> Path:
    return write_tiny_corpus(tmp_path / "tiny", langs=("en",), familiar=2, novel=1,
                             tokens_per_split={"train": 3, "valid": 1, "test": 2})


@pytest.fixture
def wavlm_dir(tmp_path) -> Path:
    return save_tiny_wavlm(tmp_path / "models" / "tiny-wavlm")


def corrupt_one_word(corpus_root: Path) -> str:
    """Make one word's file unreadable; return its id."""
    item = next(a for a in load_corpus(corpus_root).audio_of("en") if a.start is None)
    item.path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really a wav file at all")
    return item.id


def store_files(path: Path) -> dict[str, bytes]:
    """Every file of a store (the HDF5 file, or the Zarr tree) as bytes, its creation time blanked: the one
    field two extractions made at different times may differ in."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {p.relative_to(path.parent).as_posix(): re.sub(rb'"created": "[^"]*"', b'"created": ""', p.read_bytes())
            for p in files}


def in_process(fn, jobs):
    out = []
    for job in jobs:
        try:
            out.append((True, fn(job)))
        except Exception as error:
            out.append((False, f"{type(error).__name__}: {error}"))
    return out


def process_pool(fn, jobs, initializer=None):
    """What an executor does: each job in a fresh (spawned) worker process, failures as messages."""
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"),
                             initializer=initializer) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        out = []
        for future in futures:
            try:
                out.append((True, future.result()))
            except Exception as error:
                out.append((False, f"{type(error).__name__}: {error}"))
        return out


def no_jobs(fn, jobs):
    raise AssertionError(f"no job should run, got {len(jobs)}")


def across(corpus, encoder, out, map_jobs, fmt="hdf5", skip_bad=False, force=False, batch_size=BATCH):
    return extract_across_jobs(corpus, "audio", "en", str(encoder), {"device": "cpu"}, out, fmt, batch_size, JOBS,
                               skip_bad, force, False, map_jobs)


def local(corpus, encoder, out, fmt="hdf5", skip_bad=False):
    encoder = load_encoder(str(encoder), device="cpu")
    return extract_store(corpus, "audio", "en", encoder, out, fmt=fmt, batch_size=BATCH, skip_bad=skip_bad,
                         progress=False)


def dask_like_pool(fn, jobs):
    return process_pool(fn, jobs, initializer=start_as_dask_starts_its_workers)


def start_as_dask_starts_its_workers():
    """One thread, as dask's workers start: OMP/MKL_NUM_THREADS=1 (distributed.nanny.pre-spawn-environ)."""
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    torch.set_num_threads(1)


# Features depend on the thread counts, so the store is the local one (made here with 2 torch threads) only if
# the jobs run with this process's: torch's, and MKL_NUM_THREADS, which whisper-base's CTranslate2 reads when
# it loads (each alone changes every whisper-base feature).
@pytest.mark.parametrize("fmt, encoder, map_jobs", [("hdf5", "whisper-base", dask_like_pool),
                                                    ("zarr", "tiny-wavlm", in_process)])
def test_jobs_give_the_local_store_byte_for_byte_with_a_skipped_item(corpus_root, wavlm_dir, tmp_path, fmt, encoder,
                                                                     map_jobs):
    encoder = str(wavlm_dir) if encoder == "tiny-wavlm" else encoder
    bad = corrupt_one_word(corpus_root)
    corpus = load_corpus(corpus_root, check_media=False)
    whole = local(corpus, encoder, tmp_path / "local", fmt, skip_bad=True)
    path = across(corpus, encoder, tmp_path / "jobs", map_jobs, fmt, skip_bad=True)
    assert path == tmp_path / "jobs" / whole.name and not work_dir(path).exists()
    assert list(store_files(path)) == [p.replace("local/", "jobs/", 1) for p in store_files(whole)]
    assert list(store_files(path).values()) == list(store_files(whole).values())
    assert f"{bad}".encode() in b"".join(store_files(path).values())  # the skipped item is listed
    assert across(corpus, encoder, tmp_path / "jobs", no_jobs, fmt, skip_bad=True) == path  # complete: no jobs


# In the spawned worker: job 1 is killed (SIGKILL) at its second forward pass, after one committed batch.
def job_killed_at_its_second_batch(job: ExtractionJob):
    if job.index == 0:
        encode, calls = hf.HFAudioEncoder.encode, []

        def encode_then_die(self, batch):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return encode(self, batch)

        hf.HFAudioEncoder.encode = encode_then_die
    return run_extraction_job(job)


def test_a_worker_killed_mid_part_is_resumed_by_the_rerun(corpus_root, wavlm_dir, tmp_path, monkeypatch):
    corpus = load_corpus(corpus_root)
    with pytest.raises(ExtractionError) as caught:
        across(corpus, wavlm_dir, tmp_path, lambda fn, jobs: process_pool(job_killed_at_its_second_batch, jobs))
    assert "job 1 of 3" in str(caught.value) and "rerunning the same command resumes" in str(caught.value)
    target = tmp_path / "audio-en.tiny-wavlm.h5"
    killed = work_dir(target) / "job-1-of-3.h5"
    assert not target.exists() and not killed.exists() and len(list(journal_path(killed).glob("0*.npz"))) == 1

    encoded = []
    encode = hf.HFAudioEncoder.encode
    monkeypatch.setattr(hf.HFAudioEncoder, "encode", lambda self, batch: (encoded.append(len(batch)),
                                                                          encode(self, batch))[1])
    path = across(corpus, wavlm_dir, tmp_path, in_process)
    assert len(encoded) < 5  # the killed job's committed batch (and any finished part) was not encoded again
    monkeypatch.setattr(hf.HFAudioEncoder, "encode", encode)
    assert list(store_files(path).values()) == list(store_files(local(corpus, wavlm_dir, tmp_path / "local")).values())


def test_a_failed_job_is_named_and_the_rerun_runs_only_it(corpus_root, wavlm_dir, tmp_path):
    corpus = load_corpus(corpus_root)

    def second_job_lost(fn, jobs):
        return [(False, "worker lost: node n7 died") if job.index == 1 else (True, fn(job)) for job in jobs]

    with pytest.raises(ExtractionError) as caught:
        across(corpus, wavlm_dir, tmp_path, second_job_lost)
    message = str(caught.value)
    assert "job 2 of 3" in message and "node n7 died" in message and "1 of 3 jobs" in message
    assert "job 1 of 3" not in message

    ran = []
    path = across(corpus, wavlm_dir, tmp_path, lambda fn, jobs: (ran.extend(j.index for j in jobs),
                                                                in_process(fn, jobs))[1])
    assert ran == [1]  # complete parts are not run again
    assert list(store_files(path).values()) == list(store_files(local(corpus, wavlm_dir, tmp_path / "local")).values())


def test_user_errors_surface_as_a_local_run_says_them(corpus_root, wavlm_dir, tmp_path):
    bad = corrupt_one_word(corpus_root)
    corpus = load_corpus(corpus_root, check_media=False)
    with pytest.raises(ExtractionError) as at_home:
        local(corpus, wavlm_dir, tmp_path / "local")
    with pytest.raises(ExtractionError) as in_jobs:
        across(corpus, wavlm_dir, tmp_path / "jobs", in_process)
    item_line = str(at_home.value).splitlines()[0]
    assert bad in item_line and "unreadable audio" in item_line
    assert str(in_jobs.value).splitlines()[0] == item_line and "--skip-bad" in str(in_jobs.value)
    with pytest.raises(ExtractionError, match="no audio for language 'de'"):
        extract_across_jobs(corpus, "audio", "de", str(wavlm_dir), {"device": "cpu"}, tmp_path, None, BATCH, JOBS,
                            False, False, False, no_jobs)


def test_a_changed_request_refuses_stale_parts_until_force(corpus_root, wavlm_dir, tmp_path):
    corpus = load_corpus(corpus_root)

    def last_job_lost(fn, jobs):
        return [(False, "lost") if job.index == 2 else (True, fn(job)) for job in jobs]

    with pytest.raises(ExtractionError):
        across(corpus, wavlm_dir, tmp_path, last_job_lost)  # parts 1 and 2 complete, part 3 missing
    with pytest.raises(ProvenanceMismatch, match=r"job-1-of-3.h5 .*\n.*preprocessing.grid_part"):
        across(corpus, wavlm_dir, tmp_path, no_jobs, batch_size=4)  # another grid: the parts are stale

    save_tiny_wavlm(wavlm_dir, seed=1)  # other weights under the same name
    with pytest.raises(ProvenanceMismatch, match="encoder_fingerprint"):
        across(corpus, wavlm_dir, tmp_path, no_jobs)
    path = across(corpus, wavlm_dir, tmp_path, in_process, force=True)
    assert list(store_files(path).values()) == list(store_files(local(corpus, wavlm_dir, tmp_path / "local")).values())


def test_a_worker_whose_encoder_differs_from_the_plan_is_refused_before_encoding(corpus_root, wavlm_dir, tmp_path):
    corpus = load_corpus(corpus_root)
    planned = {}

    def capture(fn, jobs):
        planned.update(jobs[0].planned)
        return [(False, "not run") for _ in jobs]

    with pytest.raises(ExtractionError):
        across(corpus, wavlm_dir, tmp_path, capture)
    save_tiny_wavlm(wavlm_dir, seed=1)  # this "machine" holds other weights under the same name
    job = ExtractionJob(corpus_root, "audio", "en", str(wavlm_dir), None, "cpu", "auto", tmp_path / "audio-en.h5",
                        BATCH, 0, JOBS, False, False, threads=1, planned=planned)
    with pytest.raises(ExtractionError, match=r"job 1 of 3 .* not the one the extraction was planned with.*\n"
                                              r"  encoder_fingerprint: stored"):
        run_extraction_job(job)
    assert not job.part.exists() and not journal_path(job.part).exists() and job.error_record.is_file()



def test_an_interrupted_assembly_resumes_without_running_the_jobs_again(corpus_root, wavlm_dir, tmp_path,
                                                                        monkeypatch):
    corpus = load_corpus(corpus_root)
    append, calls = StoreWriter.append, []

    def append_then_die(self, features):
        calls.extend([1] if self.path.parent == tmp_path else [])  # the final store's, not a part's
        if len(calls) == 3:  # its third batch: the lead is killed
            raise KeyboardInterrupt
        return append(self, features)

    monkeypatch.setattr(StoreWriter, "append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        across(corpus, wavlm_dir, tmp_path, in_process)
    monkeypatch.setattr(StoreWriter, "append", append)
    target = tmp_path / "audio-en.tiny-wavlm.h5"
    assert not target.exists() and len(list(journal_path(target).glob("0*.npz"))) == 2
    path = across(corpus, wavlm_dir, tmp_path, no_jobs)  # every part is complete: only the assembly goes on
    assert list(store_files(path).values()) == list(store_files(local(corpus, wavlm_dir, tmp_path / "local")).values())


def test_an_image_store_across_jobs_is_the_local_one(corpus_root, models, tmp_path):
    corpus = load_corpus(corpus_root)
    resnet = str(models / "tiny-resnet")
    whole = extract_store(corpus, "image", None, load_encoder(resnet, device="cpu"), tmp_path / "local",
                          batch_size=BATCH, progress=False)
    path = extract_across_jobs(corpus, "image", None, resnet, {"device": "cpu"}, tmp_path / "jobs", None, BATCH, JOBS,
                               False, False, False, in_process)
    assert list(store_files(path).values()) == list(store_files(whole).values())
