"""A tiny real study (stores → train_run → analyse all): files, contents, and the report in Chromium."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analyse.cli import analyse
from analyse.export import load_embedded
from analyse.study import find_runs
from analyse.table import TABLE_COLUMNS
from tests.analyse.tiny_study import AUDIO_DIM, IMAGE_DIM, write_cache
from train.loop import LoadedStores, train_run
from train.runs import RunConfig

@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    cache = write_cache(root / "cache" / "synthetic", max_frames=6)
    stores = LoadedStores("cpu")
    runs = root / "runs" / "tiny"
    for langs in (["en"], ["fr"], ["en", "fr"]):
        for seed in (0, 1):
            config = RunConfig(langs=langs, audio_stores=[[str(cache / f"audio-{lang}.synthetic.h5")] for lang in langs],
                               image_store=[str(cache / "image.synthetic.h5")], audio_dim=AUDIO_DIM, image_dim=IMAGE_DIM,
                               width=64, epochs=1, batch_size=16, seed=seed, precision="fp32")
            train_run(config, runs / config.folder_name(), stores, progress=False)
    result = CliRunner().invoke(analyse, ["all", str(runs), "--out", str(root / "report")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root


def test_per_run_outputs(study):
    runs = find_runs([study / "runs" / "tiny"])
    assert [r.train_langs for r in runs] == ["en", "en", "fr", "fr", "en+fr", "en+fr"]
    bi = runs[-2]  # en+fr seed 0: the first seed also gets the pictures
    assert bi.seed == 0
    pred = pd.read_csv(bi.analysis_dir / "predictions.csv", dtype=str)
    assert list(pred.columns[:3]) == ["test", "lang", "episode"]
    assert {"query_id", "pos_id", "neg_id", "score_pos", "score_neg", "correct"} <= set(pred.columns)
    counts = pred.groupby(["test", "lang"]).size().to_dict()
    assert counts == {("familiar", "en"): 650, ("familiar", "fr"): 650, ("me", "en"): 950, ("me", "fr"): 950}
    # every model answered the same English ME trials
    mono = pd.read_csv(runs[0].analysis_dir / "predictions.csv", dtype=str)
    key = ["episode", "query_id", "pos_id", "neg_id"]
    assert pred.query("test == 'me' and lang == 'en'")[key].reset_index(drop=True).equals(
        mono.query("test == 'me' and lang == 'en'")[key].reset_index(drop=True))
    acc = pd.read_csv(bi.analysis_dir / "accuracy.csv")
    assert list(acc.columns) == ["test", "lang", "n", "accuracy"]
    emb, sha = load_embedded(bi.analysis_dir)
    items = pd.read_csv(bi.analysis_dir / "items.csv", keep_default_na=False)
    assert list(items.columns) == ["id", "modality", "concept", "kind", "lang", "source", "split"]
    assert set(items["split"]) == {"test"} and (items.loc[items["modality"] == "image", "lang"] == "").all()
    assert len(items) == 32 * 3 * 3 and np.allclose(np.linalg.norm(emb.vectors, axis=1), 1, atol=1e-5)
    # the decisions agree with the exported embeddings
    row = pred[pred["test"] == "me"].iloc[7]
    q, p = emb.vectors[emb.rows("audio", [row["query_id"]])[0]], emb.vectors[emb.rows("image", [row["pos_id"]])[0]]
    assert float(row["score_pos"]) == pytest.approx(float(q @ p), abs=1e-5)
    for name in ("pca.png", "tsne.png", "modality_gap.csv", "translation.csv", "variance.csv"):
        assert (bi.analysis_dir / name).exists(), name
    episodes = study / "cache" / "synthetic" / "episodes"
    assert sorted(p.name for p in episodes.iterdir()) == sorted(f"{l}.{t}.{e}" for l in ("en", "fr") for t in ("familiar", "me") for e in ("csv", "json"))


def test_study_outputs(study):
    report = study / "report"
    table = pd.read_csv(report / "table1.csv")
    assert list(table.columns) == TABLE_COLUMNS
    assert list(zip(table["train_langs"], table["test_lang"])) == [("en", "en"), ("en+fr", "en"), ("en+fr", "fr"), ("fr", "fr")] or \
        list(zip(table["train_langs"], table["test_lang"])) == [("en", "en"), ("en+fr", "en"), ("fr", "fr"), ("en+fr", "fr")]
    assert (table["n_seeds"] == 2).all()
    # Table 1 equals the per-run accuracies averaged by hand
    acc = pd.concat([pd.read_csv(p / "analysis" / "accuracy.csv").assign(run=p.name) for p in sorted((study / "runs" / "tiny").iterdir())])
    en_me = acc[(acc["test"] == "me") & (acc["lang"] == "en") & acc["run"].str.startswith("en-")]["accuracy"]
    row = table[(table["train_langs"] == "en") & (table["test_lang"] == "en")].iloc[0]
    assert row["me_mean"] == pytest.approx(en_me.mean()) and row["me_se"] == pytest.approx(en_me.std(ddof=1) / np.sqrt(2))
    comparisons = pd.read_csv(report / "comparisons.csv")
    assert sorted(zip(comparisons["test_lang"], comparisons["bilingual"])) == [("en", "en+fr"), ("fr", "en+fr")]
    assert comparisons["p_value"].between(0, 1).all() and (comparisons["p_holm"] >= comparisons["p_value"]).all()
    variance = pd.read_csv(report / "variance.csv")
    assert len(variance) == 3 * 2 * 2 * 2 and (variance["ci_low"] <= variance["mean"]).all()
    translation = pd.read_csv(report / "translation.csv")
    assert set(translation["representation"]) == {"model", "raw features"}
    for name in ("table1.md", "table1.tex", "variance.png", "training_curves.png", "report.html"):
        assert (report / name).exists(), name


def test_report_renders_in_chromium(study, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package `chromium`; `make test` installs it)")
    page = study / "report" / "report.html"
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "<script src" not in text  # self-contained
    # a copy with a script that records, after load, whether every image decoded
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", "<script>window.addEventListener('load', () => {"
                                  "document.body.setAttribute('data-images', Array.from(document.images).map(i => i.complete && i.naturalWidth > 0 ? 1 : 0).join(''));"
                                  "});</script></body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    images = re.search(r'data-images="([01]*)"', dom)
    assert images, "the load handler did not run"
    assert len(images.group(1)) >= 6 and set(images.group(1)) == {"1"}, images.group(1)
    assert dom.count("<table") >= 5 and "Table 1" in dom and "Bilingual: EN, FR" in dom and "en+fr-w64-s1" in dom
    screenshot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={screenshot}", "--window-size=1200,2400", "--hide-scrollbars", page.as_uri()],
                   capture_output=True, timeout=120)
    assert screenshot.exists() and screenshot.stat().st_size > 20_000
    print(f"report screenshot: {screenshot}")


def test_cli_errors_are_messages(study, tmp_path):
    runner = CliRunner()
    fresh = tmp_path / "runs"
    shutil.copytree(study / "runs" / "tiny" / "en-w64-s0", fresh / "en-w64-s0", ignore=shutil.ignore_patterns("analysis"))
    result = runner.invoke(analyse, ["table", str(fresh), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "accuracy.csv is missing" in result.output and "analyse familiar" in result.output
    config = fresh / "en-w64-s0" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "status": "running"}))
    result = runner.invoke(analyse, ["me", str(fresh)])
    assert result.exit_code == 1 and "not complete" in result.output
    result = runner.invoke(analyse, ["me", str(tmp_path)])
    assert result.exit_code == 1 and "holds no run folders" in result.output
    assert "--study" in runner.invoke(analyse, ["variance", "--help"]).output


def test_rescoring_one_test_keeps_the_other(study, tmp_path):
    run = study / "runs" / "tiny" / "fr-w64-s1"
    before = pd.read_csv(run / "analysis" / "predictions.csv", dtype=str)
    result = CliRunner().invoke(analyse, ["familiar", str(run)])
    assert result.exit_code == 0, result.output
    assert str(run / "analysis" / "predictions.csv") in result.output
    after = pd.read_csv(run / "analysis" / "predictions.csv", dtype=str)
    pd.testing.assert_frame_equal(before, after)  # same episodes, same cached embeddings: same decisions
    assert set(after["test"]) == {"familiar", "me"}
