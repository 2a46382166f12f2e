"""``extract-features``: options, default locations, user errors, and a real ``kill -9`` then resume."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from cache.store import journal_path, open_store
from extract.cli import extract_features
from tests.extract.corpus_fixtures import write_tiny_corpus

REPO = Path(__file__).resolve().parents[2]
# per language: 2 familiar concepts × 5 words + 1 novel × 2 = 12 words; 2 × 7 + 1 × 2 = 16 pictures
SMALL = {"familiar": 2, "novel": 1, "tokens_per_split": {"train": 2, "valid": 1, "test": 2}}
N_AUDIO, N_IMAGES = 12, 16


@pytest.fixture
def corpus(vgsme_home) -> Path:
    """The tiny corpus installed as a named corpus of the test's workspace."""
    return write_tiny_corpus(vgsme_home / "corpora" / "tiny", langs=("en", "fr"), **SMALL)


def run(*args: str):
    return CliRunner().invoke(extract_features, [*args, "--quiet"], catch_exceptions=False)


def test_every_option_has_help_text():
    for option in extract_features.params:
        assert option.help, f"--{option.name} has no help"
    text = CliRunner().invoke(extract_features, ["--help"]).output
    for flag in ("--lang", "--modality", "--all", "--corpus", "--encoder", "--audio-encoder", "--image-encoder",
                 "--layer", "--format", "--out", "--device", "--batch-size", "--shard", "--skip-bad", "--force"):
        assert flag in text


def test_lang_writes_the_default_store_location_and_a_rerun_is_a_no_op(corpus, models, vgsme_home):
    result = run("--corpus", "tiny", "--lang", "fr", "--encoder", str(models / "tiny-wavlm"), "--batch-size", "8")
    assert result.exit_code == 0, result.output
    expected = vgsme_home / "cache" / "tiny" / "audio-fr.tiny-wavlm.h5"
    assert result.stdout.strip() == str(expected)
    with open_store(expected) as store:
        assert set(store.items.lang) == {"fr"} and len(store) == N_AUDIO
    stamp = expected.stat().st_mtime_ns
    again = run("--corpus", "tiny", "--lang", "fr", "--encoder", str(models / "tiny-wavlm"), "--batch-size", "8")
    assert again.exit_code == 0 and again.stdout.strip() == str(expected) and expected.stat().st_mtime_ns == stamp


def test_modality_image_with_zarr_and_an_explicit_store_path(corpus, models, tmp_path):
    out = tmp_path / "pictures.zarr"
    result = run("--corpus", str(corpus), "--modality", "image", "--encoder", str(models / "tiny-resnet"), "--out", str(out))
    assert result.exit_code == 0, result.output
    with open_store(out) as store:
        assert store.modality == "image" and len(store) == N_IMAGES


def test_all_does_every_language_then_the_images(corpus, models, vgsme_home):
    result = run("--corpus", "tiny", "--all", "--audio-encoder", str(models / "tiny-wavlm"),
                 "--image-encoder", str(models / "tiny-resnet"), "--format", "zarr")
    assert result.exit_code == 0, result.output
    folder = vgsme_home / "cache" / "tiny"
    assert result.stdout.split() == [str(folder / name) for name in (
        "audio-en.tiny-wavlm.zarr", "audio-fr.tiny-wavlm.zarr", "image.tiny-resnet.zarr")]


def test_user_errors_are_one_line_messages(corpus, models):
    cases = [
        (["--corpus", "tiny"], "say what to extract"),
        (["--corpus", "tiny", "--lang", "de"], "not in the corpus"),
        (["--corpus", "tiny", "--modality", "image", "--lang", "en"], "drop --lang"),
        (["--corpus", "nowhere", "--lang", "en"], "not found"),
        (["--corpus", "tiny", "--lang", "en", "--shard", "3/2"], "K/N"),
        (["--corpus", "tiny", "--lang", "en", "--encoder", str(models / "tiny-resnet")], "image model"),
        (["--corpus", "tiny", "--all", "--encoder", "whisper-base"], "--audio-encoder"),
        (["--corpus", "tiny", "--lang", "en", "--out", "x.h5", "--lang", "fr"], "give a folder"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(extract_features, args)
        assert result.exit_code in (1, 2), (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_bad_file_stops_with_its_id_and_skip_bad_lists_it(corpus, models, vgsme_home):
    (corpus / "audio" / "en-dog-train-0.wav").write_bytes(b"")
    args = ["--corpus", "tiny", "--lang", "en", "--encoder", str(models / "tiny-wavlm")]
    stopped = CliRunner().invoke(extract_features, args)
    assert stopped.exit_code == 1 and "en-dog-train-0" in stopped.output
    result = run(*args, "--skip-bad")
    assert result.exit_code == 0, result.output
    with open_store(result.stdout.strip()) as store:
        assert store.skipped.ids.tolist() == ["en-dog-train-0"] and len(store) == N_AUDIO - 1


def test_default_offline_encoder_names_the_store(corpus, vgsme_home):
    result = run("--corpus", "tiny", "--lang", "en", "--batch-size", "32")
    assert result.exit_code == 0, result.output
    path = vgsme_home / "cache" / "tiny" / "audio-en.whisper-base.h5"
    assert result.stdout.strip() == str(path)
    with open_store(path) as store:
        assert store.dim == 512 and store.provenance.encoder == "whisper-base"
        seconds = sum(store.lengths) / 50
        assert 0.3 * len(store) < seconds < 0.7 * len(store)  # 0.3-0.6 s words at 50 frames/s


# The child runs the real CLI; its encoder sleeps 0.25 s per batch (output unchanged) so that the kill
# reliably lands between commits, after some and before the last.
SLOW_CLI = """
import sys, time
import extract.encoders.hf as hf
encode = hf.HFAudioEncoder.encode
hf.HFAudioEncoder.encode = lambda self, batch: (time.sleep(0.25), encode(self, batch))[1]
from extract.cli import extract_features
extract_features(sys.argv[1:])
"""


def store_bytes(path: Path) -> dict[str, bytes]:
    """Features, offsets, lengths and every metadata column of an HDF5 store, as raw bytes."""
    out: dict[str, bytes] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()].tobytes()) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_kill_9_then_rerun_gives_a_byte_identical_store(corpus, models, tmp_path, vgsme_home, caplog):
    args = ["--corpus", "tiny", "--lang", "en", "--encoder", str(models / "tiny-wavlm"), "--batch-size", "2",
            "--device", "cpu", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    store = vgsme_home / "cache" / "tiny" / "audio-en.tiny-wavlm.h5"
    child = subprocess.Popen([sys.executable, "-c", SLOW_CLI, *args], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    committed = 0
    while time.monotonic() < deadline and child.poll() is None:
        committed = len(list(journal_path(store).glob("0*.npz")))
        if committed >= 2:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the extraction finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL and not store.exists()
    assert committed >= 2

    with caplog.at_level(logging.INFO, logger="cache.writer"):
        resumed = run(*args[:-1])  # the rerun, with the same arguments
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.strip() == str(store)
    assert "resuming" in caplog.text  # it continued from the journal, not from scratch

    whole = run(*args[:-1], "--out", str(tmp_path / "whole"))
    assert whole.exit_code == 0, whole.output
    assert store_bytes(store) == store_bytes(Path(whole.stdout.strip()))
