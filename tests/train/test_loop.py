"""The training loop on tiny separable stores: it learns, it is deterministic, it resumes after kill -9."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import cache
from tests.synthetic import FAMILIAR, synthetic_items, write_synthetic_store
from train.embed import embed_store
from train.loop import LoadedStores, train_run, train_sweep
from train.model import TwoTower
from train.runs import RunConfig, RunConfigError, RunFolder


def _metrics(path) -> list[dict]:
    return RunFolder.open(path).metrics

CONCEPTS = list(FAMILIAR) + ["ball", "cake"]
AUDIO_DIM, IMAGE_DIM = 16, 24


def write_tiny_cache(folder: Path, langs=("en", "fr"), per_concept: int = 9, noise: float = 0.5) -> Path:
    """Stores named as `cache.layout` expects: audio-<lang>.synthetic.h5 and image.synthetic.h5.

    Each concept has a random prototype per modality; an item is its prototype plus Gaussian noise, so the
    classes are separable but not trivially (a head must pool several noisy frames). Splits cycle
    train, train, valid (test is not needed for training).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    proto = {"audio": rng.standard_normal((len(CONCEPTS), AUDIO_DIM)),
             "image": rng.standard_normal((len(CONCEPTS), IMAGE_DIM))}
    n = len(CONCEPTS) * per_concept
    for lang in langs:
        items = synthetic_items(n, "audio", lang=lang, concepts=CONCEPTS, splits=("train", "train", "valid"))
        feats = [proto["audio"][i % len(CONCEPTS)] + noise * rng.standard_normal((int(rng.integers(2, 9)), AUDIO_DIM))
                 for i in range(n)]
        write_synthetic_store(folder / f"audio-{lang}.synthetic.h5", "audio", items, feats, lang=lang)
    items = synthetic_items(n, "image", concepts=CONCEPTS, splits=("train", "train", "valid"))
    feats = [proto["image"][i % len(CONCEPTS)] + noise * rng.standard_normal((4, IMAGE_DIM)) for i in range(n)]
    write_synthetic_store(folder / "image.synthetic.h5", "image", items, feats)
    return folder


def tiny_config(folder: Path, langs=("en", "fr"), **options) -> RunConfig:
    defaults = dict(width=64, epochs=4, batch_size=8, seed=0, precision="fp32")
    return RunConfig(langs=list(langs), audio_stores=[[str(folder / f"audio-{lang}.synthetic.h5")] for lang in langs],
                     image_store=[str(folder / "image.synthetic.h5")], audio_dim=AUDIO_DIM, image_dim=IMAGE_DIM,
                     **{**defaults, **options})


# Tiny steps are dominated by thread synchronisation on a busy 2-core machine: one thread (the kill-test
# subprocess sets one too, so both halves of a resumed run compute alike).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("cache"))


def test_loss_falls_and_familiar_accuracy_rises(tiny_cache, tmp_path):
    config = tiny_config(tiny_cache, epochs=6, lr_max=2e-3)  # a higher peak lr: a few dozen steps in all
    run_dir = train_run(config, tmp_path / "run", LoadedStores("cpu"), progress=False)
    metrics = _metrics(run_dir)
    assert [row["epoch"] for row in metrics] == list(range(1, 7))
    assert metrics[-1]["train_loss"] < 0.2 * metrics[0]["train_loss"]
    assert metrics[-1]["val_loss"] < 0.2 * metrics[0]["val_loss"]
    assert metrics[0]["val_familiar_acc"] < 0.9 and metrics[-1]["val_familiar_acc"] >= 0.95
    assert all(row["logit_scale"] == 100.0 for row in metrics)
    config_json = json.loads((run_dir / "config.json").read_text())
    assert config_json["status"] == "complete" and config_json["logit_mode"] == "fixed100"
    assert config_json["vocabulary"] == sorted(FAMILIAR)  # novel concepts are never trained on
    assert len(config_json["provenance"]) == 3

    folder = RunFolder.open(run_dir)
    model = folder.load_model()
    assert folder.best_epoch == min(metrics, key=lambda r: r["val_loss"])["epoch"]
    # embed_store: from disk and from memory alike, unit vectors, the requested order
    store = cache.open_store(tiny_cache / "audio-en.synthetic.h5")
    idx = np.array([5, 0, 17, 3])
    from_disk = embed_store(model, store, idx)
    from_memory = embed_store(model, store.load(), idx)
    assert from_disk.shape == (4, 64) and from_disk.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(from_disk, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(from_disk, from_memory, atol=1e-6)
    np.testing.assert_allclose(from_disk[1:2], embed_store(model, store, [0]), atol=1e-6)
    images = cache.open_store(tiny_cache / "image.synthetic.h5")
    assert embed_store(TwoTower.from_run(run_dir, "last"), images, np.arange(7)).shape == (7, 64)


def test_same_seed_same_metrics_other_seed_differs(tiny_cache, tmp_path):
    stores = LoadedStores("cpu")
    runs = [train_run(tiny_config(tiny_cache, ("en",), seed=s, epochs=2, precision="bf16"), tmp_path / name, stores,
                      progress=False) for s, name in [(3, "a"), (3, "b"), (4, "c")]]
    a, b, c = (_metrics(r) for r in runs)
    drop = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    assert drop(a) == drop(b)
    assert drop(a) != drop(c)


def test_shared_negatives_and_equal_steps_and_cap_run(tiny_cache, tmp_path):
    stores = LoadedStores("cpu")
    config = tiny_config(tiny_cache, ("en",), negatives_mode="shared", equal_steps=True, logit_mode="cap", epochs=2)
    run_dir = train_run(config, tmp_path / "run", stores, progress=False)
    saved = json.loads((run_dir / "config.json").read_text())
    # 13 concepts × 6 train items = 78 anchors, twice per epoch for the equal-steps control
    assert saved["steps_per_epoch"] == -(-2 * 78 // 8) and config.folder_name() == "en-w64-s0-eq"
    assert all(0 < row["logit_scale"] <= 100 for row in _metrics(run_dir))


def test_complete_run_is_skipped_and_other_config_refused(tiny_cache, tmp_path):
    stores = LoadedStores("cpu")
    config = tiny_config(tiny_cache, ("en",), epochs=1)
    run_dir = train_run(config, tmp_path / "run", stores, progress=False)
    before = (run_dir / "best.safetensors").stat().st_mtime_ns
    train_run(config, run_dir, stores, progress=False)
    assert (run_dir / "best.safetensors").stat().st_mtime_ns == before
    with pytest.raises(RunConfigError, match="width"):
        train_run(tiny_config(tiny_cache, ("en",), epochs=1, width=128), run_dir, stores, progress=False)
    train_sweep([tiny_config(tiny_cache, ("en",), epochs=1, width=128)], tmp_path, name="run", force=True,
                progress=False, stores=stores)
    assert json.loads((run_dir / "config.json").read_text())["width"] == 128


RUN_IN_SUBPROCESS = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_loop import tiny_config
from train.loop import LoadedStores, train_run
from pathlib import Path
train_run(tiny_config(Path({cache!r}), epochs={epochs}), Path({run!r}), LoadedStores("cpu"), progress=False)
"""


def test_kill_9_then_rerun_ends_with_the_same_metrics(tiny_cache, tmp_path):
    epochs = 6
    reference = _metrics(train_run(tiny_config(tiny_cache, epochs=epochs), tmp_path / "reference",
                                       LoadedStores("cpu"), progress=False))
    run_dir = tmp_path / "killed"
    script = RUN_IN_SUBPROCESS.format(tests=str(Path(__file__).parent), cache=str(tiny_cache), epochs=epochs,
                                      run=str(run_dir))
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run_dir / "state.pt").exists():
        assert process.poll() is None, "the training subprocess ended before its first epoch"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = json.loads((run_dir / "config.json").read_text())
    assert interrupted["status"] == "running"
    # state.pt is the commit point (metrics.csv and the checkpoints follow it): killed between epochs 1 and 6
    assert 1 <= len(torch.load(run_dir / "state.pt", weights_only=False)["metrics"]) < epochs
    resumed = _metrics(train_run(tiny_config(tiny_cache, epochs=epochs), run_dir, LoadedStores("cpu"),
                                     progress=False))
    drop = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    assert drop(resumed) == drop(reference)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_fresh_loads_train_bit_for_bit_alike(tiny_cache, tmp_path, precision):
    """The gather (cache.memory, single-threaded) keeps training exact per seed: the same run, its stores
    loaded afresh each time and torch on two threads, gives identical metrics and weights."""
    torch.set_num_threads(2)
    runs = [train_run(tiny_config(tiny_cache, ("en", "fr"), epochs=2, precision=precision), tmp_path / name,
                      LoadedStores("cpu"), progress=False) for name in ("a", "b")]
    drop = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
    assert drop(_metrics(runs[0])) == drop(_metrics(runs[1]))
    assert (runs[0] / "last.safetensors").read_bytes() == (runs[1] / "last.safetensors").read_bytes()
