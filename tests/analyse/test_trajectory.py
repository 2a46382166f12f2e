"""Learning trajectories and the untrained baseline on a tiny study trained with --save-epochs (2 epochs, width 64)."""
import json
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import analyse.trajectory as trajectory
from analyse.cli import analyse
from analyse.episodes import TESTS, episodes_for_run
from analyse.export import StaleAnalysisError
from analyse.study import RunInfo
from analyse.trajectory import STUDY_COLUMNS, collect_trajectories, run_trajectory, score_checkpoint
from train.exposure import DEFAULTS
from train.loop import LoadedStores, train_run
from train.runs import RunConfig

from tests.analyse.tiny_study import AUDIO_DIM, IMAGE_DIM, write_cache

LANGS = (("en",), ("en", "fr"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """en and en+fr runs, seeds 0 and 1, 2 epochs with --save-epochs, analysed once with `analyse all`."""
    root = tmp_path_factory.mktemp("trajectory")
    cache = write_cache(root / "cache" / "synthetic")
    stores = LoadedStores("cpu")
    runs = root / "runs" / "tiny"
    for langs in LANGS:
        for seed in (0, 1):
            config = RunConfig(langs=list(langs), audio_stores=[[str(cache / f"audio-{lang}.synthetic.h5")] for lang in langs],
                               image_store=[str(cache / "image.synthetic.h5")], audio_dim=AUDIO_DIM, image_dim=IMAGE_DIM,
                               width=64, epochs=2, batch_size=16, seed=seed, precision="fp32", save_epochs=True)
            train_run(config, runs / config.folder_name(), stores, progress=False)
    result = CliRunner().invoke(analyse, ["all", str(runs), "--out", str(root / "report"), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root


def runs_of(root, name="tiny"):
    return sorted((RunInfo.open(p) for p in (root / "runs" / name).iterdir()), key=lambda r: r.name)


def test_trajectory_csv_has_every_epoch_test_and_language(study):
    frame = pd.read_csv(study / "report" / "trajectory.csv", dtype={"lang": str, "train_langs": str})
    assert list(frame.columns) == STUDY_COLUMNS
    assert len(frame) == 3 * len(TESTS) * (2 * 1 + 2 * 2)  # epochs 0-2 × tests × (en runs: en; en+fr runs: en, fr)
    assert set(frame["epoch"]) == {0, 1, 2} and not frame.duplicated(["run", "epoch", "test", "lang"]).any()
    assert frame["accuracy"].between(0, 100).all()
    assert (study / "report" / "trajectory.png").stat().st_size > 10_000
    assert 'id="trajectory"' in (study / "report" / "report.html").read_text()


def test_each_epoch_equals_scoring_its_checkpoint_directly(study):
    for run in runs_of(study):
        frame = pd.read_csv(run.analysis_dir / "trajectory.csv", dtype={"lang": str}).set_index(["epoch", "test", "lang"])
        # the best epoch's weights are best.safetensors: its row is the final analysis's accuracy
        final = pd.read_csv(run.analysis_dir / "accuracy.csv", dtype={"lang": str})
        for r in final.itertuples():
            assert frame.loc[(run.best_epoch, r.test, r.lang), "accuracy"] == pytest.approx(r.accuracy)
        episodes = [episodes_for_run(run, lang, test) for lang in run.langs for test in TESTS]
        precision = json.loads((run.analysis_dir / "trajectory.json").read_text())["0"]["precision"]  # `auto`'s choice
        last = score_checkpoint(run, "last", episodes, precision=precision)
        for r in last.itertuples():
            assert frame.loc[(2, r.test, r.lang), "accuracy"] == pytest.approx(r.accuracy)
        start = score_checkpoint(run, 0, episodes, precision=precision)
        for r in start.itertuples():
            assert frame.loc[(0, r.test, r.lang), "accuracy"] == pytest.approx(r.accuracy)


def test_cache_is_reused_and_only_a_changed_epoch_rescored(study, tmp_path, monkeypatch):
    shutil.copytree(study / "runs" / "tiny" / "en-w64-s0", tmp_path / "en-w64-s0")
    run = RunInfo.open(tmp_path / "en-w64-s0")
    calls = []
    real = trajectory.embed_run
    monkeypatch.setattr(trajectory, "embed_run", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    precision = json.loads((run.analysis_dir / "trajectory.json").read_text())["0"]["precision"]  # `auto`'s choice
    before = run_trajectory(run, precision=precision)
    assert calls == []  # the copied cache is current: nothing rescored
    weights = load_file(run.epoch_checkpoint_path(1))
    save_file({k: v * 0 for k, v in weights.items()}, run.epoch_checkpoint_path(1))  # epoch 1 changed
    with pytest.raises(StaleAnalysisError, match="analyse trajectory"):
        collect_trajectories([run])
    after = run_trajectory(run, precision=precision)
    assert calls == [1]
    unchanged = before["epoch"] != 1
    pd.testing.assert_frame_equal(after[unchanged].reset_index(drop=True), before[unchanged].reset_index(drop=True))
    assert (after.loc[after["epoch"] == 1, "accuracy"] == 0).all()  # all-zero heads tie everything: wrong
    assert len(collect_trajectories([run])) == len(before)
    run_trajectory(run, precision="fp32" if precision == "bf16" else "bf16")
    assert calls == [1, 0, 1, 2]  # another precision: every epoch rescored


def test_table1_gains_untrained_rows_only_when_epochs_exist(study, tmp_path):
    table = pd.read_csv(study / "report" / "table1.csv", dtype={"train_langs": str, "test_lang": str})
    untrained = table[table["train_langs"] == "untrained"]
    assert list(untrained["test_lang"]) == ["en", "fr"] and (untrained["n_seeds"] == 2).all()
    start = pd.read_csv(study / "report" / "trajectory.csv", dtype={"lang": str}).query("epoch == 0")
    # seed s of en and en+fr starts from the same heads: the same epoch-0 score on en
    assert start[start["lang"] == "en"].groupby(["seed", "test"])["accuracy"].nunique().eq(1).all()
    expected = start[(start["lang"] == "en") & (start["test"] == "me")].groupby("seed")["accuracy"].mean().mean()
    assert untrained.iloc[0]["me_mean"] == pytest.approx(expected)
    assert table.groupby("test_lang").head(1)["train_langs"].eq("untrained").all()  # first row of each test language
    assert "| Untrained: EN | EN | 64 |" in (study / "report" / "table1.md").read_text()
    # the same runs without their epochs: Table 1 is the trained rows only
    plain = tmp_path / "runs"
    for run in runs_of(study):
        shutil.copytree(run.path, plain / run.name)
        shutil.rmtree(plain / run.name / "epochs")
        config = plain / run.name / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "save_epochs": False}))
    result = CliRunner().invoke(analyse, ["table", str(plain), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    without = pd.read_csv(tmp_path / "out" / "table1.csv", dtype={"train_langs": str, "test_lang": str})
    pd.testing.assert_frame_equal(without, table[table["train_langs"] != "untrained"].reset_index(drop=True))
    result = CliRunner().invoke(analyse, ["trajectory", str(plain), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "--save-epochs" in result.output and "Traceback" not in result.output


def test_exposure_csv_gains_untrained_rows(study, tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        shutil.copytree(study / "runs" / "tiny" / f"en-w64-s{seed}", runs / f"en-w64-s{seed}")
        copy = runs / f"en-w64-s{seed + 2}-data50"  # a new seed: Table 1 must not see one model's seed twice
        shutil.copytree(study / "runs" / "tiny" / f"en-w64-s{seed}", copy)
        config = copy / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "seed": seed + 2,
                                      "exposure": {**DEFAULTS, "data_fraction": 0.5}}))
    result = CliRunner().invoke(analyse, ["exposure", str(runs), "--out", str(tmp_path / "out"), "--resamples", "100"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    table = pd.read_csv(tmp_path / "out" / "exposure.csv", dtype={"value": str})
    assert list(table["value"]) == ["0.5", "1", "untrained"] and not table["reference"].iloc[2]
    start = pd.read_csv(study / "report" / "trajectory.csv", dtype={"lang": str}).query("epoch == 0 and train_langs == 'en'")
    row = table.iloc[2]
    assert row["n_seeds"] == 4 and row["me_mean"] == pytest.approx(start.loc[start["test"] == "me", "accuracy"].mean())
    tests = pd.read_csv(tmp_path / "out" / "exposure-tests.csv", dtype={"value_a": str, "value_b": str})
    assert "untrained" not in set(tests["value_a"]) | set(tests["value_b"])


def test_a_gap_in_the_saved_epochs_is_refused(study, tmp_path):
    shutil.copytree(study / "runs" / "tiny" / "en-w64-s0", tmp_path / "en-w64-s0")
    (tmp_path / "en-w64-s0" / "epochs" / "epoch-001.safetensors").unlink()
    result = CliRunner().invoke(analyse, ["trajectory", str(tmp_path / "en-w64-s0"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "epoch(s) [1]" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "trajectory.csv").exists()
