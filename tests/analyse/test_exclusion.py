"""Excluded concepts (config.json `exclude_concepts`) are left out of every test and recorded in every table."""
import json
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from analyse.cli import analyse
from analyse.episodes import draw_episodes
from analyse.exclusion import ExclusionError, study_exclusion
from analyse.study import find_runs, items_frame, open_store
from analyse.table import TABLE_COLUMNS, table1, to_latex, to_markdown
from tests.analyse.test_episodes import items
from tests.analyse.tiny_study import build_study, set_exclusion

EXCLUDED = ["cake", "dog"]  # one novel, one familiar concept


@pytest.fixture(scope="module")
def excluded_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("excluded")
    runs = build_study(root, exclude=EXCLUDED)
    result = CliRunner().invoke(analyse, ["all", str(runs), "--out", str(root / "report"), "-q", "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root


def test_draw_leaves_excluded_concepts_out_everywhere():
    audio, images = items()
    for test in ("familiar", "me"):
        eps = draw_episodes(audio, images, "en", test, per_concept=20, seed=0, excluded=("fam03", "nov05"))
        ids = set(eps["query_id"]) | set(eps["pos_id"]) | set(eps["neg_id"])
        assert not {"fam03", "nov05"} & set(eps["concept"])
        assert not [i for i in ids if "-fam03-" in i or "-nov05-" in i]
        assert len(eps) == 20 * (12 if test == "familiar" else 18)


def test_no_excluded_concept_in_any_episode_prediction_or_figure(excluded_study):
    episodes = excluded_study / "cache" / "synthetic" / "episodes"
    concept_of = {}
    for store in ("audio-en", "audio-fr", "image"):
        frame = items_frame(open_store((excluded_study / "cache" / "synthetic" / f"{store}.synthetic.h5",)), "x")
        concept_of.update(zip(frame["id"], frame["concept"]))
    for csv in sorted(episodes.glob("*.csv")):
        eps = pd.read_csv(csv, dtype=str)
        used = {concept_of[i] for col in ("query_id", "pos_id", "neg_id") for i in eps[col]}
        assert not set(EXCLUDED) & (used | set(eps["concept"])), csv.name
        assert json.loads(csv.with_suffix(".json").read_text())["excluded"] == EXCLUDED
    for run in find_runs([excluded_study / "runs" / "tiny"]):
        pred = pd.read_csv(run.analysis_dir / "predictions.csv", dtype=str)
        assert not set(EXCLUDED) & set(pred["concept"])
        # the denominators: 12 familiar and 18 novel concepts left, 50 episodes each
        acc = pd.read_csv(run.analysis_dir / "accuracy.csv").set_index(["test", "lang"])["n"]
        assert set(acc[acc.index.get_level_values(0) == "familiar"]) == {600}
        assert set(acc[acc.index.get_level_values(0) == "me"]) == {900}
        assert (run.analysis_dir / "embeddings.npz").exists()  # the export itself keeps every item
        for name in [n for n in ("variance.csv", "pca.csv", "tsne.csv") if (run.analysis_dir / n).exists()]:
            frame = pd.read_csv(run.analysis_dir / name)
            if "concept" in frame:
                assert not set(EXCLUDED) & set(frame["concept"]), name
            else:
                assert set(frame["n_concepts"][frame["scope"] == "all"]) <= {12, 18}, name
    translation = pd.read_csv(excluded_study / "report" / "translation.csv")
    assert set(translation["chance"].round(6)) == {round(100 / 12, 6), round(100 / 18, 6)}


def test_table_and_report_record_the_exclusion(excluded_study):
    report = excluded_study / "report"
    table = pd.read_csv(report / "table1.csv")
    assert list(table.columns) == TABLE_COLUMNS + ["excluded"] and set(table["excluded"]) == {"cake;dog"}
    note = "Excluded concepts (in no training set and no test): cake, dog."
    assert note in (report / "table1.md").read_text()
    assert note in (report / "table1.tex").read_text()
    html = (report / "report.html").read_text()
    assert note in html and "Excluded concepts: cake, dog." in html


def test_nothing_excluded_leaves_tables_as_before():
    acc = pd.DataFrame([dict(train_langs="en", width=64, seed=0, test=t, lang="en", accuracy=a) for t, a in (("familiar", 90), ("me", 60))])
    t = table1(acc)
    assert "Excluded" not in to_markdown(t) and "Excluded" not in to_latex(t)
    assert to_markdown(t, ()) == to_markdown(t) and to_latex(t, ()) == to_latex(t)
    assert r"\multicolumn{6}{l}{\footnotesize Excluded concepts (in no training set and no test): fire\_hydrant.} \\" in to_latex(t, ("fire_hydrant",))


def test_runs_must_agree_on_the_exclusion(excluded_study, tmp_path):
    runs = tmp_path / "runs"
    for run in find_runs([excluded_study / "runs" / "tiny"]):
        shutil.copytree(run.path, runs / run.name)
    set_exclusion(runs / "en-w64-s0", [])
    with pytest.raises(ExclusionError, match=r"none: en-w64-s0; cake, dog: en\+fr-w64-s0"):
        study_exclusion(find_runs([runs]))
    for command in ("table", "report", "compare", "me", "episodes"):
        out = ["--out", str(tmp_path / "out")] if command in ("table", "report", "compare") else []
        result = CliRunner().invoke(analyse, [command, str(runs), *out])
        assert result.exit_code == 1 and "exclude different concepts" in result.output, (command, result.output)
        assert "Traceback" not in result.output


def test_saved_episodes_of_another_exclusion_are_refused(excluded_study, tmp_path):
    run = tmp_path / "en-w64-s0"
    shutil.copytree(excluded_study / "runs" / "tiny" / "en-w64-s0", run)
    set_exclusion(run, ["cake"])
    result = CliRunner().invoke(analyse, ["me", str(run), "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 1
    assert "excluded: saved ('cake', 'dog'), wanted ('cake',)" in result.output and "--redraw" in result.output
