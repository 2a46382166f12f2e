"""The notebook API reads what `analyse` wrote as tidy DataFrames, and names the command when a file is missing."""
import pandas as pd
import pytest
from click.testing import CliRunner

import analyse
from analyse.api import ResultMissing
from analyse.cli import analyse as analyse_cli
from analyse.study import StudyError
from analyse.table import TABLE_COLUMNS
from tests.analyse.tiny_study import build_study


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """$VGSME_HOME with the study `tiny` (en and en+fr, seeds 0 and 1), not yet analysed."""
    root = tmp_path_factory.mktemp("home")
    build_study(root, seeds=(0, 1))
    return root


def test_missing_results_name_the_command(home, monkeypatch):
    monkeypatch.setenv("VGSME_HOME", str(home))
    study = analyse.load_study("tiny")
    with pytest.raises(ResultMissing, match=r"table1.csv is missing: run `analyse all --study tiny` first"):
        study.table1()
    with pytest.raises(ResultMissing, match=r"predictions.csv is missing: run `analyse all --study tiny` first"):
        study.predictions()
    with pytest.raises(ResultMissing, match=r"comparisons-familiar.csv is missing: run `analyse compare --test familiar --study tiny"):
        study.comparisons("familiar")
    by_path = analyse.load_study(home / "runs" / "tiny", report_dir=home / "elsewhere")
    with pytest.raises(ResultMissing, match=rf"run `analyse all {home / 'runs' / 'tiny'} --out {home / 'elsewhere'}` first"):
        by_path.table1()
    with pytest.raises(StudyError, match="no run 'xx'"):
        study.run("xx")


def test_study_tables_after_analyse_all(home, monkeypatch):
    monkeypatch.setenv("VGSME_HOME", str(home))
    result = CliRunner().invoke(analyse_cli, ["all", "--study", "tiny", "-q", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    study = analyse.load_study("tiny")
    assert study.name == "tiny" and study.report_dir == home / "reports" / "tiny"

    runs = study.runs()
    assert list(runs["run"]) == ["en-w64-s0", "en-w64-s1", "en+fr-w64-s0", "en+fr-w64-s1"]
    assert {"train_langs", "width", "seed", "langs", "status", "excluded", "path"} <= set(runs.columns)
    assert set(runs["status"]) == {"complete"} and set(runs["excluded"]) == {""}

    table = study.table1()
    assert list(table.columns) == TABLE_COLUMNS
    pd.testing.assert_frame_equal(table, pd.read_csv(home / "reports" / "tiny" / "table1.csv", dtype={"train_langs": str, "test_lang": str}))

    predictions = study.predictions()
    assert list(predictions.columns[:4]) == ["run", "train_langs", "width", "seed"]
    sizes = predictions.groupby(["run", "test", "lang"]).size()
    assert sizes[("en+fr-w64-s1", "me", "fr")] == 950 and sizes[("en-w64-s0", "familiar", "en")] == 650
    assert predictions["query_id"].map(type).eq(str).all()
    # the tables agree with each other: Table 1's ME mean is the mean of the runs' prediction accuracies
    en_me = predictions.query("train_langs == 'en' and test == 'me'").groupby("seed")["correct"].mean().mean()
    assert table.query("train_langs == 'en'")["me_mean"].item() == pytest.approx(100 * en_me)
    accuracy = study.accuracy()
    assert set(accuracy["accuracy"].between(0, 100)) == {True} and len(accuracy) == 2 * 2 + 2 * 4

    comparisons = study.comparisons()
    assert sorted(zip(comparisons["test_lang"], comparisons["bilingual"])) == [("en", "en+fr")]

    metrics = study.metrics()
    assert {"run", "seed", "epoch", "train_loss", "val_loss"} <= set(metrics.columns) and len(metrics) == 4  # 1 epoch each

    run = analyse.load_run(home / "runs" / "tiny" / "en+fr-w64-s0")
    assert run.name == "en+fr-w64-s0" and run.config["langs"] == ["en", "fr"]
    pd.testing.assert_frame_equal(run.predictions(), study.run("en+fr-w64-s0").predictions())
    assert set(run.accuracy()["test"]) == {"familiar", "me"}
