"""`--audio-layer`: training on one layer of a layered store, or on a learned weighted sum of its layers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cache
from tests.synthetic import FAMILIAR, synthetic_items, synthetic_provenance, write_synthetic_store
from train.embed import embed_store
from train.layers import AudioLayerError, parse_audio_layers
from train.loop import LoadedStores, train_run
from train.runs import RunConfig, RunFolder
from train.sweep import plan_sweep

CONCEPTS = list(FAMILIAR) + ["ball", "cake"]
AUDIO_DIM, IMAGE_DIM, LAYERS = 16, 24, (0, 1, 2)
LAYERED, SINGLE = "audio-en.synthetic.L0-2.h5", "audio-en.synthetic.L1.h5"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def layer_cache(tmp_path_factory) -> Path:
    """A store of hidden states 0, 1, 2 whose layer 1 carries the concepts (0 and 2: noise), the store of
    layer 1 alone (the same float32 values), and an image store."""
    folder = tmp_path_factory.mktemp("cache")
    rng = np.random.default_rng(0)
    proto = {"audio": rng.standard_normal((len(CONCEPTS), AUDIO_DIM)),
             "image": rng.standard_normal((len(CONCEPTS), IMAGE_DIM))}
    n = len(CONCEPTS) * 6
    items = synthetic_items(n, "audio", lang="en", concepts=CONCEPTS, splits=("train", "train", "valid"))
    layered = []
    for i in range(n):
        frames = int(rng.integers(2, 9))
        x = rng.standard_normal((frames, len(LAYERS), AUDIO_DIM))
        x[:, 1] = proto["audio"][i % len(CONCEPTS)] + 0.5 * x[:, 1]
        layered.append(x.astype(np.float32))
    write_synthetic_store(folder / LAYERED, "audio", items, layered,
                          provenance=synthetic_provenance("audio", AUDIO_DIM).replace(layers=LAYERS))
    write_synthetic_store(folder / SINGLE, "audio", items, [x[:, 1] for x in layered],
                          provenance=synthetic_provenance("audio", AUDIO_DIM, layer=1))
    images = synthetic_items(n, "image", concepts=CONCEPTS, splits=("train", "train", "valid"))
    write_synthetic_store(folder / "image.synthetic.h5", "image", images,
                          [proto["image"][i % len(CONCEPTS)] + 0.5 * rng.standard_normal((4, IMAGE_DIM))
                           for i in range(n)])
    return folder


def config_for(folder: Path, store: str, audio_layer=None, **options) -> RunConfig:
    values = dict(width=64, epochs=3, batch_size=8, seed=0, precision="fp32", lr_max=2e-3)
    layers = cache.open_store(folder / store).layers
    return RunConfig(langs=["en"], audio_stores=[[str(folder / store)]], image_store=[str(folder / "image.synthetic.h5")],
                     audio_dim=AUDIO_DIM, image_dim=IMAGE_DIM, audio_layer=audio_layer,
                     audio_store_layers=None if layers is None else list(layers), **{**values, **options})


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_layer_of_a_layered_store_trains_exactly_as_the_store_of_that_layer(layer_cache, tmp_path, precision):
    from_layered = train_run(config_for(layer_cache, LAYERED, 1, precision=precision), tmp_path / "a",
                             LoadedStores("cpu"), progress=False)
    from_single = train_run(config_for(layer_cache, SINGLE, None, precision=precision), tmp_path / "b",
                            LoadedStores("cpu"), progress=False)
    a, b = RunFolder.open(from_layered), RunFolder.open(from_single)
    assert without_time(a.metrics) == without_time(b.metrics) and len(a.metrics) == 3
    for name in ("best", "last"):
        wa, wb = load_file(a.checkpoint_path(name)), load_file(b.checkpoint_path(name))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.config["audio_layer"] == 1 and a.audio_read_layer == 1 and a.audio_store_layers == LAYERS
    assert a.layer_weights() is None and not a.layer_weights_path.exists()
    assert config_for(layer_cache, LAYERED, 1).folder_name() == "en-w64-s0-L1"
    assert a.train_langs == "en-L1" and b.train_langs == "en"


def test_the_weighted_sum_trains_and_its_layer_weights_are_saved(layer_cache, tmp_path):
    config = config_for(layer_cache, LAYERED, "weighted", epochs=20)
    assert config.folder_name() == "en-w64-s0-Lw" and config.weighted_layers == 3
    run = RunFolder.open(train_run(config, tmp_path / "w", LoadedStores("cpu"), progress=False))
    metrics = run.metrics
    assert metrics[-1]["val_loss"] < 0.2 * metrics[0]["val_loss"] and run.best_row["val_familiar_acc"] > 0.9
    best = load_file(run.checkpoint_path("best"))
    logits = best["audio_layer_weights.logits"]
    assert logits.shape == (3,) and not torch.equal(logits, torch.zeros(3))  # learned, from uniform
    saved = json.loads(run.layer_weights_path.read_text())
    assert saved == run.layer_weights()
    assert saved["layers"] == list(LAYERS) and saved["epoch"] == run.best_epoch
    assert np.allclose(saved["weights"], logits.softmax(-1).numpy()) and abs(sum(saved["weights"]) - 1) < 1e-6
    assert np.argmax(saved["weights"]) == 1  # the layer that carries the concepts

    model = run.load_model("best")
    store = cache.open_store(layer_cache / LAYERED)
    from_disk = embed_store(model, store, np.arange(len(store)), precision="fp32", layer=run.audio_read_layer)
    from_memory = embed_store(model, store.load(dtype=torch.float32), np.arange(len(store)), precision="fp32")
    assert from_disk.shape == (len(store), 64) and np.allclose(from_disk, from_memory, atol=1e-5)


def test_layer_choices_are_parsed_and_checked_before_training(layer_cache):
    assert parse_audio_layers([]) == [None]
    assert parse_audio_layers(["0..2", "weighted", "1"]) == [0, 1, 2, "weighted"]
    assert parse_audio_layers(["3-4", "7"]) == [3, 4, 7]
    with pytest.raises(AudioLayerError, match="--audio-layer 'top'"):
        parse_audio_layers(["top"])

    def plan(layers, store=LAYERED):
        return plan_sweep(["en"], [], ["0"], ["64"], layer_cache, [f"en={layer_cache / store}"],
                          [str(layer_cache / "image.synthetic.h5")], None, None, "cpu",
                          audio_layers=parse_audio_layers(layers), epochs=1, precision="fp32")

    runs = plan(["0..2", "weighted"]).runs
    assert [r.folder_name() for r in runs] == ["en-w64-s0-L0", "en-w64-s0-L1", "en-w64-s0-L2", "en-w64-s0-Lw"]
    assert all(r.audio_store_layers == [0, 1, 2] for r in runs)
    with pytest.raises(AudioLayerError, match=r"holds layers 0\.\.2 .*--audio-layer N"):
        plan([])
    with pytest.raises(AudioLayerError, match="not layer 5"):
        plan(["5"])
    with pytest.raises(AudioLayerError, match="holds one layer"):
        plan(["weighted"], SINGLE)
    assert [r.audio_layer for r in plan(["1"], SINGLE).runs] == [1]  # the single store's own layer
    with pytest.raises(AudioLayerError, match="needs audio stores with a layer axis"):
        config_for(layer_cache, SINGLE, "weighted")


def test_train_heads_sweeps_audio_layers_from_the_cache(layer_cache, tmp_path):
    from click.testing import CliRunner

    from train.cli import train_heads

    common = ["--langs", "en", "--cache", str(layer_cache), "--widths", "64", "--epochs", "1", "--batch-size", "8",
              "--precision", "fp32", "--out", str(tmp_path), "-q"]
    result = CliRunner().invoke(train_heads, [*common, "--audio-layer", "2", "weighted"])
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in tmp_path.iterdir() if RunFolder.is_run_folder(p))
    assert runs == ["en-w64-s0-L2", "en-w64-s0-Lw"]  # the layered store is found for --audio-layer
    assert RunFolder.open(tmp_path / "en-w64-s0-L2").audio_stores["en"] == (layer_cache / LAYERED,)
    plain = CliRunner().invoke(train_heads, [*common, "--name", "plain"])  # no --audio-layer: the store of one layer
    assert plain.exit_code == 0 and RunFolder.open(tmp_path / "plain").audio_stores["en"] == (layer_cache / SINGLE,)
    refused = CliRunner().invoke(train_heads, [*common, "--audio-store", f"en={layer_cache / LAYERED}"])
    assert refused.exit_code == 1 and "choose one with --audio-layer N" in refused.output
    assert "Traceback" not in refused.output
