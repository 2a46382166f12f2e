"""`RunFolder`: the one reader and writer of a run folder (config, status, metrics, checkpoints, fingerprints)."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cache.hashing import sha256_file
from train.loop import LoadedStores, train_run
from train.model import TwoTower
from train.runs import METRIC_COLUMNS, NotARunFolder, RunConfig, RunConfigError, RunFolder, RunFolderError

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import tiny_config, write_tiny_cache  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished 2-epoch run on en+fr, and its cache."""
    root = tmp_path_factory.mktemp("run-folder")
    cache = write_tiny_cache(root / "cache")
    run_dir = train_run(tiny_config(cache, epochs=2), root / "runs" / "en+fr-w64-s0", LoadedStores("cpu"),
                        progress=False)
    return run_dir, cache


def test_open_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(NotARunFolder, match="not a run folder.*train-heads"):
        RunFolder.open(tmp_path)
    (tmp_path / "config.json").write_text("{half a file")
    with pytest.raises(NotARunFolder, match="cannot be read"):
        RunFolder.open(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"langs": ["en"], "width": 64}))
    with pytest.raises(NotARunFolder, match="lacks.*seed"):
        RunFolder.open(tmp_path)
    assert issubclass(NotARunFolder, ValueError)
    assert not RunFolder.is_run_folder(tmp_path / "nowhere")


def test_accessors_metrics_and_best_epoch(trained):
    run_dir, cache = trained
    run = RunFolder.open(run_dir)
    assert run.status == "complete" and run.name == "en+fr-w64-s0"
    assert run.langs == ("en", "fr") and run.width == 64 and run.seed == 0 and not run.equal_steps
    assert run.train_langs == "en+fr" and run.exclude_concepts == []
    assert run.config["exclude_concepts"] == []  # always recorded
    assert run.audio_stores["fr"] == (cache / "audio-fr.synthetic.h5",)
    assert run.image_store == (cache / "image.synthetic.h5",)
    assert run.analysis_dir == run_dir / "analysis"
    assert [row["epoch"] for row in run.metrics] == [1, 2]
    frame = run.metrics_frame()
    assert list(frame.columns) == list(METRIC_COLUMNS) and len(frame) == 2
    assert run.best_epoch == int(frame.loc[frame["val_loss"].idxmin(), "epoch"])
    assert run.best_row["val_loss"] == frame["val_loss"].min()
    assert run.labels() == {"run": "en+fr-w64-s0", "train_langs": "en+fr", "width": 64, "seed": 0}


def test_checkpoints_weights_fingerprint_and_model(trained):
    run_dir, cache = trained
    run = RunFolder.open(run_dir)
    assert run.checkpoint_path("last") == run_dir / "last.safetensors"
    with pytest.raises(RunFolderError, match="best"):
        run.checkpoint_path("middle")
    assert run.weights_fingerprint() == sha256_file(run_dir / "best.safetensors")
    model = run.load_model("last")
    assert isinstance(model, TwoTower) and not model.training
    assert TwoTower.from_run(run_dir, "last").state_dict()["log_scale"] == model.state_dict()["log_scale"]


def test_store_fingerprints_recorded_and_fresh(trained):
    run_dir, cache = trained
    run = RunFolder.open(run_dir)
    recorded = run.recorded_store_fingerprints()
    assert sorted(recorded) == sorted(str(cache / n) for n in ("audio-en.synthetic.h5", "audio-fr.synthetic.h5",
                                                               "image.synthetic.h5"))
    assert all(len(fp) == 64 for fp in recorded.values())
    assert run.current_store_fingerprints() == recorded and run.stale_stores() == []


def test_a_missing_store_is_reported(tmp_path, trained):
    run_dir, cache = trained
    config = json.loads((run_dir / "config.json").read_text())
    gone = str(tmp_path / "gone.h5")
    config.update(image_store=[gone], store_fingerprints={**config["store_fingerprints"], gone: "0" * 64})
    (tmp_path / "config.json").write_text(json.dumps(config))
    changes = RunFolder.open(tmp_path).stale_stores()
    assert [c.key for c in changes] == [gone] and "cannot be opened" in changes[0].describe()


def test_create_is_atomic_and_status_checked(tmp_path):
    folder = RunFolder(tmp_path / "new")
    assert not folder.exists
    with pytest.raises(RunFolderError, match="status"):
        folder.create({"status": "half"})
    assert not (tmp_path / "new" / "config.json").exists()
    folder.create({"langs": ["en"], "width": 64, "seed": 0, "audio_stores": [["a.h5"]], "image_store": ["i.h5"],
                   "status": "running"})
    folder.mark_failed("the training loss became nan at epoch 1, step 2")
    reread = RunFolder.open(tmp_path / "new")
    assert reread.status == "failed" and "nan" in reread.failure
    assert reread.metrics == [] and reread.best_epoch is None and reread.metrics_frame().empty
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["config.json"]  # no temporary file left


def test_exclude_concepts_sorted_and_part_of_the_identity(trained):
    run_dir, cache = trained
    config = RunConfig(langs=["en"], audio_stores=[["a"]], image_store=["i"], audio_dim=1, image_dim=1,
                       exclude_concepts=["nautilus", "dog", "nautilus"])
    assert config.exclude_concepts == ["dog", "nautilus"]
    with pytest.raises(RunConfigError, match="exclude_concepts"):
        RunFolder.open(run_dir).check_same_run(tiny_config(cache, epochs=2, exclude_concepts=["dog"]))
    RunFolder.open(run_dir).check_same_run(tiny_config(cache, epochs=2))


def test_excluded_concepts_are_in_no_training_or_validation_episode(trained, tmp_path):
    _, cache = trained
    from train.loop import prepare_data

    data = prepare_data(tiny_config(cache, ("en",), exclude_concepts=["dog", "ball"]), LoadedStores("cpu"))
    assert "dog" not in data.train.vocabulary and "dog" not in data.valid.vocabulary
    stores = LoadedStores("cpu")
    audio, images = (stores.store([str(cache / name)]) for name in ("audio-en.synthetic.h5", "image.synthetic.h5"))
    for sampler in (data.train, data.valid):
        episodes = sampler.draw(sampler.anchors, np.random.default_rng(0))
        assert not (audio.items.concept[episodes.audio.reshape(-1)] == "dog").any()
        assert not (images.items.concept[episodes.image.reshape(-1)] == "dog").any()
    run_dir = train_run(tiny_config(cache, ("en",), epochs=1, exclude_concepts=["dog"]), tmp_path / "run",
                        LoadedStores("cpu"), progress=False)
    saved = RunFolder.open(run_dir)
    assert saved.exclude_concepts == ["dog"] and "dog" not in saved.config["vocabulary"]
    with pytest.raises(RunConfigError, match="nautilus"):
        prepare_data(tiny_config(cache, ("en",), exclude_concepts=["nautilus"]), LoadedStores("cpu"))


def test_metrics_frame_matches_the_csv(trained):
    run_dir, _ = trained
    pd.testing.assert_frame_equal(RunFolder.open(run_dir).metrics_frame(), pd.read_csv(run_dir / "metrics.csv"),
                                  check_dtype=False)


def test_weights_fingerprint_follows_the_file(trained, tmp_path):
    run_dir, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    run = RunFolder.open(copy)
    before = run.weights_fingerprint()
    (copy / "best.safetensors").write_bytes(b"retrained")
    assert run.weights_fingerprint() == sha256_file(copy / "best.safetensors") != before
    (copy / "best.safetensors").unlink()
    with pytest.raises(RunFolderError, match="has not finished an epoch"):
        run.weights_fingerprint()


def test_a_resumed_run_removes_what_a_write_killed_mid_way_left(tmp_path):
    from click.testing import CliRunner

    from train.cli import train_heads

    cache = write_tiny_cache(tmp_path / "cache")
    args = ["--cache", str(cache), "--langs", "en", "--width", "64", "--epochs", "2", "--batch-size", "8",
            "--device", "cpu", "--out", str(tmp_path / "runs"), "--quiet"]
    first = CliRunner().invoke(train_heads, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    run_dir = next((tmp_path / "runs").iterdir())
    leftover = run_dir / ".last.safetensors.x1y2.tmp"  # as cache.atomic names a write in progress
    leftover.write_bytes(b"half a checkpoint")
    again = CliRunner().invoke(train_heads, args, catch_exceptions=False)
    assert again.exit_code == 0 and not leftover.exists()
