"""`extract-features --executor`: dask and submitit (local cluster) give the store a local run writes, byte
for byte; a failed job is named and the rerun resumes; options that do not go together are refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from cache.store import open_store
from extract.cli import extract_features
from extract.corpus import load_corpus
from tests.extract.corpus_fixtures import write_tiny_corpus
from tests.extract.test_extract_jobs import corrupt_one_word, store_files

SMALL = {"familiar": 2, "novel": 1, "tokens_per_split": {"train": 3, "valid": 1, "test": 2}}


@pytest.fixture
def corpus(vgsme_home) -> Path:
    return write_tiny_corpus(vgsme_home / "corpora" / "tiny", langs=("en",), **SMALL)


def extract(*args: str):
    return CliRunner().invoke(extract_features, [*args, "--quiet"], catch_exceptions=False)


@pytest.mark.parametrize("engine, fmt", [(["--executor", "dask", "--workers", "2"], "hdf5"),
                                         (["--executor", "submitit", "--submitit-cluster", "local", "--workers", "2"],
                                          "zarr")])
def test_an_engine_gives_the_local_store_byte_for_byte(engine, fmt, corpus, models, tmp_path):
    """A LocalCluster made by the command itself (dask), and submitit's local cluster."""
    bad = corrupt_one_word(corpus)
    common = ["--corpus", "tiny", "--lang", "en", "--encoder", str(models / "tiny-wavlm"), "--batch-size", "3",
              "--device", "cpu", "--format", fmt, "--skip-bad"]
    local = extract(*common, "--out", str(tmp_path / "local"))
    assert local.exit_code == 0, local.output
    spread = extract(*common, *engine, "--jobs", "3", "--out", str(tmp_path / "jobs"))
    assert spread.exit_code == 0, spread.output
    local_store, jobs_store = Path(local.stdout.strip()), Path(spread.stdout.strip())
    assert local_store.name == jobs_store.name and not (jobs_store.parent / (jobs_store.name + ".jobs")).exists()
    assert store_files(local_store) == {k.replace("jobs/", "local/", 1): v for k, v in store_files(jobs_store).items()}
    with open_store(jobs_store) as store:
        assert bad in set(store.skipped.ids)


def shorten_one_word(corpus_root: Path) -> str:
    """Make one word a few samples long: the corpus check passes it, the worker's encoder cannot take it."""
    item = next(a for a in load_corpus(corpus_root).audio_of("en") if a.start is None)
    soundfile.write(item.path, np.zeros(8, np.float32), 16_000)
    return item.id


def test_a_failed_job_is_named_and_the_rerun_finishes(corpus, models, tmp_path):
    bad = shorten_one_word(corpus)
    common = ["--corpus", "tiny", "--lang", "en", "--encoder", str(models / "tiny-wavlm"), "--batch-size", "3",
              "--device", "cpu", "--executor", "processes", "--workers", "2", "--jobs", "3", "--out", str(tmp_path)]
    failed = CliRunner().invoke(extract_features, common + ["--quiet"])
    assert failed.exit_code == 1 and bad in failed.output  # the bad item, in a local run's words
    assert "--skip-bad" in failed.output
    done = extract(*common, "--skip-bad")
    assert done.exit_code == 0, done.output


@pytest.mark.parametrize("args, message", [
    (["--jobs", "2"], "--jobs cuts a store into jobs for an --executor"),
    (["--executor", "dask", "--shard", "1/2"], "drop --shard"),
    (["--dask-scheduler", "tcp://localhost:8786"], "--dask-scheduler"),
])
def test_options_that_do_not_go_together_are_refused(args, message, corpus, models):
    result = CliRunner().invoke(extract_features, ["--corpus", "tiny", "--lang", "en", "--encoder",
                                                   str(models / "tiny-wavlm"), *args])
    assert result.exit_code == 2 and message in result.output
