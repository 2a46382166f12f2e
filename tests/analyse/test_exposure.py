"""`analyse exposure`: known answers on constructed predictions, and the command on a tiny trained study."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analyse.cli import analyse
from analyse.exposure import (model_langs, DEFAULTS, SUMMARY_COLUMNS, TEST_COLUMNS, ExposureError, ExposureOptions, exposure_of,
                              exposure_summary, neighbour_tests, placed_runs, placements, render, seed_interval)

FAST = ExposureOptions(n_resamples=2000, n_bootstrap=1000)


def predictions(correct_by_value: dict[str, np.ndarray], condition="data_fraction", test="me", lang="en") -> pd.DataFrame:
    """Per-trial predictions of one model (en, width 64) at several values of one condition; rows = seeds."""
    rows = []
    for value, correct in correct_by_value.items():
        for seed, c in enumerate(correct):
            rows.append(pd.DataFrame(dict(condition=condition, value=value, value_order=float(value),
                                          reference=value == "1", train_langs="en", width=64, seed=seed, test=test,
                                          lang=lang, episode=np.arange(len(c)), query_id=[f"q{i}" for i in range(len(c))],
                                          pos_id="p", neg_id="n", correct=c)))
    return pd.concat(rows, ignore_index=True)


def seeds_with_accuracy(percent: list[float], n_trials=200) -> np.ndarray:
    """One row per seed whose first `percent` % trials are correct."""
    return np.vstack([(np.arange(n_trials) < round(p * n_trials / 100)).astype(int) for p in percent])


def test_rendering_and_placement_of_the_contract_fields():
    assert exposure_of({}, "run") == DEFAULTS  # older runs: the defaults
    assert render("ratio", [75, 25]) == "75:25" and render("ratio", None) == "sum" and render("vocab_size", None) == "all"
    assert render("data_fraction", 0.25) == "0.25" and render("l2_onset", 3) == "3"
    reference = placements({"exposure": dict(DEFAULTS)}, "run")
    assert [p.condition for p in reference] == list(DEFAULTS) and all(p.reference for p in reference)
    bilingual = {"langs": ["en", "fr"]}
    (one,) = placements({**bilingual, "exposure": {"ratio": [75, 25]}}, "run")
    assert (one.condition, one.value, one.reference) == ("ratio", "75:25", False)
    assert placements({**bilingual, "exposure": {"ratio": [75, 25], "data_fraction": 0.5}}, "run") is None  # two fields
    # a ratio swept under the matched budget: the budget is the sweep's setting, the ratio its condition
    (matched,) = placements({**bilingual, "exposure": {"ratio": [75, 25], "budget": "matched"}}, "run")
    assert (matched.condition, matched.value) == ("ratio", "75:25")
    (budget,) = placements({**bilingual, "exposure": {"budget": "matched"}}, "run")  # alone, it is the condition
    assert (budget.condition, budget.value) == ("budget", "matched")
    with pytest.raises(ExposureError, match="mono: bad exposure value.*ratio"):
        exposure_of({"langs": ["en"], "exposure": {"ratio": [75, 25]}}, "mono")  # a share per language
    with pytest.raises(ExposureError, match="r1: bad exposure value.*data.fraction 1.5"):
        exposure_of({"exposure": {"data_fraction": 1.5}}, "r1")
    with pytest.raises(ExposureError, match="unknown exposure field.*speed"):
        exposure_of({"exposure": {"speed": 2}}, "r1")


def fake_run(name, train_langs="en+fr", width=64, **exposure):
    config = {"langs": train_langs.split("+"), **({"exposure": exposure} if exposure else {})}
    return SimpleNamespace(path=name, langs=config["langs"], equal_steps=False, width=width, config=config)


def test_placed_runs_pair_each_condition_with_its_reference_runs(caplog):
    runs = [fake_run("bi-ref"), fake_run("mono-ref", "en"), fake_run("bi-75", ratio=[75, 25]),
            fake_run("bi-both", ratio=[75, 25], data_fraction=0.5), fake_run("mono-half", "en", data_fraction=0.5),
            fake_run("bi-75m", ratio=[75, 25], budget="matched"), fake_run("bi-50m", ratio=[50, 50], budget="matched")]
    with caplog.at_level("WARNING"):
        placed = placed_runs(runs)
    assert sorted((run.path, p.condition, p.value) for run, p in placed) == [
        ("bi-50m", "ratio", "50:50"), ("bi-75", "ratio", "75:25"), ("bi-75m", "ratio", "75:25"),
        ("bi-ref", "ratio", "sum"), ("mono-half", "data_fraction", "0.5"),
        ("mono-ref", "data_fraction", "1")]  # each reference serves the conditions varied at its languages only
    assert {model_langs(run) for run, _ in placed if run.path.endswith("m")} == {"en+fr-matched"}  # its own model
    assert "bi-both" in caplog.text and "ratio and data_fraction" in caplog.text
    with pytest.raises(ExposureError, match="no exposure runs"):
        placed_runs([fake_run("a"), fake_run("b", "en", **DEFAULTS)])


def test_seed_interval_known_answer():
    # two seeds 60 and 70, moved to 65 ± 5·√2 before resampling: the draws' means are 57.93, 65 and 72.07
    low, high = seed_interval(np.array([60.0, 70.0]), np.random.default_rng(0), 4000)
    assert low == pytest.approx(65 - 5 * np.sqrt(2)) and high == pytest.approx(65 + 5 * np.sqrt(2))
    assert seed_interval(np.array([60.0, 60.0, 60.0]), np.random.default_rng(0), 100) == (60.0, 60.0)
    assert all(np.isnan(seed_interval(np.array([60.0]), np.random.default_rng(0), 100)))


def test_summary_means_standard_errors_and_intervals():
    data = pd.concat([predictions({"0.5": seeds_with_accuracy([60, 64, 68]), "1": seeds_with_accuracy([70, 70, 70])}),
                      predictions({"0.5": seeds_with_accuracy([99, 97, 98]), "1": seeds_with_accuracy([100, 100, 100])},
                                  test="familiar")])
    out = exposure_summary(data, FAST)
    assert list(out.columns) == SUMMARY_COLUMNS and list(out["value"]) == ["0.5", "1"]
    half = out.iloc[0]
    assert half["n_seeds"] == 3 and half["me_mean"] == pytest.approx(64.0) and half["familiar_mean"] == pytest.approx(98.0)
    assert half["me_se"] == pytest.approx(4.0 / np.sqrt(3))  # std(60, 64, 68; ddof=1) = 4
    assert half["me_ci_low"] < 64 < half["me_ci_high"] and 56 <= half["me_ci_low"] and half["me_ci_high"] <= 72
    full = out.iloc[1]
    assert full["me_se"] == 0 and (full["me_ci_low"], full["me_ci_high"]) == (70.0, 70.0) and bool(full["reference"])
    again = exposure_summary(data, FAST)
    pd.testing.assert_frame_equal(out, again)  # seeded
    near_top = exposure_summary(predictions({"1": seeds_with_accuracy([99, 100])}), FAST).iloc[0]
    assert near_top["me_ci_high"] == 100.0 and near_top["me_ci_low"] == pytest.approx(99.5 - 0.5 * np.sqrt(2))
    with pytest.raises(ExposureError, match="share seed 0"):
        exposure_summary(pd.concat([data, data[data["seed"] == 0]]), FAST)


def test_neighbour_tests_find_a_planted_drop_and_not_a_null_one():
    rng = np.random.default_rng(1)
    n = 600
    base = (rng.random(n) < 0.7).astype(int)
    jitter = lambda m: np.vstack([np.where(rng.random(n) < 0.03, 1 - m, m) for _ in range(3)])  # noqa: E731
    lost = base.copy()
    lost[rng.choice(np.flatnonzero(base), size=90, replace=False)] = 0  # 15 pp fewer correct at fraction 0.25
    data = predictions({"0.25": jitter(lost), "0.5": jitter(base), "1": jitter(base)})
    out = neighbour_tests(data, FAST)
    assert list(out.columns) == TEST_COLUMNS
    assert [(r.value_a, r.value_b) for r in out.itertuples()] == [("0.25", "0.5"), ("0.5", "1")]  # neighbours only
    planted, null = out.iloc[0], out.iloc[1]
    assert planted["diff_pp"] > 10 and planted["ci_low_pp"] > 0 and planted["p_hier"] < 0.01 and bool(planted["significant"])
    assert planted["decision"] == "higher, significant" and planted["n_trials"] == n and planted["n_seeds_a"] == 3
    assert abs(null["diff_pp"]) < 3 and not bool(null["significant"])
    assert (out["p_holm"] >= out["p_hier"]).all()


def test_neighbour_tests_refuse_unshared_episodes_and_skip_single_seeds():
    data = predictions({"0.5": seeds_with_accuracy([60, 62]), "1": seeds_with_accuracy([70, 72])})
    moved = data.copy()
    moved.loc[moved["value"] == "1", "query_id"] = "other"
    with pytest.raises(ExposureError, match="different episodes"):
        neighbour_tests(moved, FAST)
    single = data[(data["value"] == "1") | (data["seed"] == 0)]
    row = neighbour_tests(single, FAST).iloc[0]
    assert np.isnan(row["p_hier"]) and row["decision"].startswith("not tested") and not row["significant"]


# ------------------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny trained study (en, two seeds) scored once, and copies of its runs that pose as exposure runs."""
    from tests.analyse.tiny_study import build_study

    root = tmp_path_factory.mktemp("exposure")
    runs = build_study(root, langs=(("en",),), seeds=(0, 1))
    result = CliRunner().invoke(analyse, ["all", str(runs), "--out", str(root / "plain")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    for k, fraction in enumerate((0.5, 0.25)):
        for seed in (0, 1):
            # new seed numbers: Table 1 of `analyse all` must not see one model's seed twice (here its row's name
            # does not carry the exposure, as train-heads' folder names and train_langs do)
            copy = runs / f"en-w64-s{seed + 2 + 2 * k}-data{100 * fraction:g}"
            shutil.copytree(runs / f"en-w64-s{seed}", copy)
            config = copy / "config.json"
            exposure = {**DEFAULTS, "data_fraction": fraction}
            config.write_text(json.dumps({**json.loads(config.read_text()), "seed": seed + 2 + 2 * k, "exposure": exposure}))
            if fraction == 0.25:  # plant an effect: these runs miss the first 300 ME trials
                path = copy / "analysis" / "predictions.csv"
                frame = pd.read_csv(path, dtype=str)
                frame.loc[(frame["test"] == "me") & (frame["episode"].astype(int) < 300), "correct"] = "0"
                frame.to_csv(path, index=False)
    return root


def test_cli_exposure_writes_the_table_tests_and_figure(study):
    out = study / "report"
    result = CliRunner().invoke(analyse, ["exposure", str(study / "runs" / "tiny"), "--out", str(out), "--resamples", "500"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    table = pd.read_csv(out / "exposure.csv", dtype={"value": str})
    assert list(table["value"]) == ["0.25", "0.5", "1"] and set(table["condition"]) == {"data_fraction"}
    assert (table["n_seeds"] == 2).all() and (table["me_ci_low"] <= table["me_mean"]).all()
    # the copies have the weights of the reference runs: the same accuracies, except where the effect was planted
    accuracy = pd.concat([pd.read_csv(study / "runs" / "tiny" / f"en-w64-s{s}" / "analysis" / "accuracy.csv") for s in (0, 1)])
    assert table["me_mean"].iloc[2] == pytest.approx(accuracy.loc[accuracy["test"] == "me", "accuracy"].mean())
    assert table["me_mean"].iloc[1] == table["me_mean"].iloc[2] and table["me_mean"].iloc[0] < table["me_mean"].iloc[1] - 10
    assert table["familiar_mean"].nunique() == 1
    tests = pd.read_csv(out / "exposure-tests.csv", dtype={"value_a": str, "value_b": str}).set_index(["test", "value_a", "value_b"])
    assert sorted(tests.index) == [("familiar", "0.25", "0.5"), ("familiar", "0.5", "1"), ("me", "0.25", "0.5"), ("me", "0.5", "1")]
    planted = tests.loc[("me", "0.25", "0.5")]
    assert planted["diff_pp"] > 10 and planted["significant"] and planted["decision"] == "higher, significant"
    assert (tests.drop(("me", "0.25", "0.5"))["diff_pp"] == 0).all() and tests["significant"].sum() == 1
    assert (out / "exposure.png").stat().st_size > 10_000 and "exposure.csv" in result.output
    assert f"data_fraction 0.25: en w64 test en: ME {table['me_mean'].iloc[0]:.1f} %" in result.output
    report = CliRunner().invoke(analyse, ["report", str(study / "runs" / "tiny"), "--out", str(out)])
    assert report.exit_code == 0, report.output
    page = (out / "report.html").read_text()
    assert 'id="exposure"' in page and "data fraction" in page.lower()


def test_cli_exposure_without_exposure_runs_is_a_message(study, tmp_path):
    plain = tmp_path / "runs"
    for seed in (0, 1):
        shutil.copytree(study / "runs" / "tiny" / f"en-w64-s{seed}", plain / f"en-w64-s{seed}")
    result = CliRunner().invoke(analyse, ["exposure", str(plain), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "no exposure runs" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "exposure.csv").exists()
    assert "--resamples" in CliRunner().invoke(analyse, ["exposure", "--help"]).output


def test_analyse_all_adds_exposure_only_when_the_study_has_exposure_runs(study):
    plain = study / "plain"
    assert not (plain / "exposure.csv").exists() and 'id="exposure"' not in (plain / "report.html").read_text()
    result = CliRunner().invoke(analyse, ["all", str(study / "runs" / "tiny"), "--out", str(study / "all")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    for name in ("exposure.csv", "exposure-tests.csv", "exposure.png"):
        assert (study / "all" / name).exists(), name
    assert 'id="exposure"' in (study / "all" / "report.html").read_text()
