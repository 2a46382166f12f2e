"""`analyse layers`: a layer sweep and a weighted-sum run on a tiny layered store, analysed end to end."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analyse.cli import analyse
from tests.analyse.tiny_study import AUDIO_DIM, CONCEPTS, IMAGE_DIM, SPLITS
from tests.synthetic import synthetic_items, synthetic_provenance, write_synthetic_store
from train.loop import LoadedStores, train_run
from train.runs import RunConfig

LAYERS = (0, 1, 2)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """audio-en with hidden states 0..2 (layer 1 carries the concepts), the store of layer 1 alone, images;
    runs at layers 0, 1, 2, the weighted sum (seed 0), and on the single store of layer 1; analysed once."""
    root = tmp_path_factory.mktemp("layers")
    cache = root / "cache" / "synthetic"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(0)
    proto = {"audio": rng.standard_normal((len(CONCEPTS), AUDIO_DIM)),
             "image": rng.standard_normal((len(CONCEPTS), IMAGE_DIM))}
    n = len(CONCEPTS) * len(SPLITS)
    layered = []
    for i in range(n):
        x = rng.standard_normal((int(rng.integers(2, 5)), len(LAYERS), AUDIO_DIM))
        x[:, 1] += 2 * proto["audio"][i % len(CONCEPTS)]
        layered.append(x.astype(np.float32))
    items = synthetic_items(n, "audio", lang="en", splits=SPLITS)
    write_synthetic_store(cache / "audio-en.synthetic.L0-2.h5", "audio", items, layered,
                          provenance=synthetic_provenance("audio", AUDIO_DIM).replace(layers=LAYERS))
    write_synthetic_store(cache / "audio-en.synthetic.L1.h5", "audio", items, [x[:, 1] for x in layered],
                          provenance=synthetic_provenance("audio", AUDIO_DIM, layer=1))
    write_synthetic_store(cache / "image.synthetic.h5", "image", synthetic_items(n, "image", splits=SPLITS),
                          [proto["image"][i % len(CONCEPTS)] + rng.standard_normal((4, IMAGE_DIM)) for i in range(n)])
    runs, stores = root / "runs" / "tiny", LoadedStores("cpu")
    for store, layer in [("L0-2", 0), ("L0-2", 1), ("L0-2", 2), ("L0-2", "weighted"), ("L1", None)]:
        config = RunConfig(langs=["en"], audio_stores=[[str(cache / f"audio-en.synthetic.{store}.h5")]],
                           image_store=[str(cache / "image.synthetic.h5")], audio_dim=AUDIO_DIM, image_dim=IMAGE_DIM,
                           width=64, epochs=2, batch_size=16, seed=0, precision="fp32", lr_max=2e-3,
                           audio_layer=layer, audio_store_layers=list(LAYERS) if store == "L0-2" else None)
        train_run(config, runs / (config.folder_name() if store == "L0-2" else "single-L1"), stores, progress=False)
    result = CliRunner().invoke(analyse, ["all", str(runs), "--out", str(root / "report")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root


def test_analyse_all_tabulates_each_layer_and_plots_the_layer_weights(study):
    out, runs = study / "report", study / "runs" / "tiny"
    table = pd.read_csv(out / "layers.csv", dtype={"layer": str})
    assert list(table["layer"]) == ["0", "1", "2", "weighted"] and (table["n_seeds"] == 1).all()
    assert set(table["train_langs"]) == {"en"} and set(table["test_lang"]) == {"en"}
    for r in table.itertuples():
        folder = runs / ("en-w64-s0-Lw" if r.layer == "weighted" else f"en-w64-s0-L{r.layer}")
        accuracy = pd.read_csv(folder / "analysis" / "accuracy.csv").set_index("test")["accuracy"]
        assert r.familiar_mean == pytest.approx(accuracy["familiar"]) and r.me_mean == pytest.approx(accuracy["me"])
    # the layer that carries the concepts is the one the heads learn from
    assert table.set_index("layer").loc["1", "familiar_mean"] > table.set_index("layer").loc["0", "familiar_mean"] + 20

    weights = pd.read_csv(out / "layer_weights.csv")
    saved = json.loads((runs / "en-w64-s0-Lw" / "layer_weights.json").read_text())
    assert list(weights["layer"]) == saved["layers"] == list(LAYERS) and list(weights["weight"]) == saved["weights"]
    for figure in (out / "layers.png", out / "layer_weights.png", runs / "en-w64-s0-Lw" / "analysis" / "layer_weights.png"):
        assert figure.stat().st_size > 5_000, figure
    page = (out / "report.html").read_text()
    assert 'id="layers"' in page and "learned layer weights" in page and "L0-2" in page
    table1 = pd.read_csv(out / "table1.csv", dtype=str)
    assert {"en-l0", "en-l1", "en-l2", "en-lw", "en"} <= set(table1.iloc[:, 0].str.lower())  # never pooled


def test_a_layer_run_is_analysed_on_the_layer_it_was_trained_on(study):
    """The run on layer 1 of the layered store and the run on the store of layer 1 alone have the same
    weights (tests/train/test_audio_layer.py), so the analyses must give them the same predictions."""
    runs = study / "runs" / "tiny"
    layered = pd.read_csv(runs / "en-w64-s0-L1" / "analysis" / "predictions.csv")
    single = pd.read_csv(runs / "single-L1" / "analysis" / "predictions.csv")
    pd.testing.assert_frame_equal(layered, single)
    a = np.load(runs / "en-w64-s0-L1" / "analysis" / "embeddings.npz")["embeddings"]
    b = np.load(runs / "single-L1" / "analysis" / "embeddings.npz")["embeddings"]
    assert np.array_equal(a, b)


def test_analyse_layers_alone_and_without_layer_runs(study, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(analyse, ["layers", str(study / "runs" / "tiny"), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (out / "layers.csv").exists() and "layer weighted: en w64 test en: ME" in result.output
    plain = tmp_path / "plain"
    shutil.copytree(study / "runs" / "tiny" / "single-L1", plain / "single-L1")
    refused = CliRunner().invoke(analyse, ["layers", str(plain), "--out", str(tmp_path / "none")])
    assert refused.exit_code == 1 and "no run of the study chose an encoder layer" in refused.output
    assert "Traceback" not in refused.output and not (tmp_path / "none" / "layers.csv").exists()


def test_layers_md_quotes_layers_csv_in_layer_order(study):
    """layers.md (what the README quotes) has one row per layers.csv row, in layer order, weighted sum last."""
    out = study / "report"
    table = pd.read_csv(out / "layers.csv", dtype={"layer": str})
    lines = (out / "layers.md").read_text().splitlines()
    assert lines[0].startswith("| Layer |") and len(lines) == 2 + len(table)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[0] for row in rows] == ["0", "1", "2", "weighted sum"]
    for row, r in zip(rows, table.itertuples()):
        assert row[1:4] == ["EN", "EN", "64"] and row[6] == "1"
        assert row[4] == f"{r.familiar_mean:.1f}" and row[5] == f"{r.me_mean:.1f}"  # one seed: no ± s.e.


def test_the_weighted_sum_has_its_own_tick_not_a_line_on_the_chance_line(study, monkeypatch):
    """On the demo the weighted sum's ME was about 50 %: drawn as a horizontal line it hid under chance."""
    import cache.atomic
    from analyse.layers import plot_layers

    drawn = {}
    monkeypatch.setattr(cache.atomic, "save_figure", lambda path, fig, **kw: drawn.setdefault("fig", fig))
    summary = pd.read_csv(study / "report" / "layers.csv", dtype={"layer": str})
    plot_layers(summary, study / "unused.png")
    ax = drawn["fig"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "weighted\nsum"]
    weighted = summary.set_index("layer").loc["weighted"]
    points = {tuple(np.round(line.get_xydata()[0], 6)) for line in ax.lines if len(line.get_xydata()) == 1}
    assert (3.0, round(weighted["me_mean"], 6)) in points and (3.0, round(weighted["familiar_mean"], 6)) in points
