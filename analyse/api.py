"""A small Python API for notebooks: a study's results as tidy pandas DataFrames, without file paths.

    import analyse
    study = analyse.load_study("demo")   # $VGSME_HOME/runs/demo; its report folder $VGSME_HOME/reports/demo
    study.runs()          # one row per run: run, train_langs, width, seed, ..., excluded
    study.table1()        # Table 1 (percent), as `analyse table` wrote it
    study.predictions()   # every run's per-episode decisions, with the run's labels
    study.comparisons()   # bilingual vs monolingual tests; study.metrics(): per-epoch training metrics
    run = analyse.load_run("workspace/runs/demo/en-w128-s0"); run.accuracy()

It only reads what `analyse` (and `train-heads`) wrote; it never computes, embeds or writes. A missing
file raises `ResultMissing`, whose message names the command that makes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analyse.exclusion import run_exclusion
from analyse.study import RunInfo, StudyError, find_runs, read_run, study_name
from cache.layout import reports_dir, runs_dir

ID_COLUMNS = {"query_id": str, "pos_id": str, "neg_id": str, "lang": str, "concept": str}


class ResultMissing(ValueError):
    """A result file the API was asked for has not been written yet; the message names the command."""


def read_metrics(run: RunInfo) -> pd.DataFrame:
    """One run's per-epoch training metrics, through the run folder's owner (`train.runs.RunFolder`)."""
    frame = run.metrics_frame()
    if frame.empty:
        raise ResultMissing(f"{run.path} has no training metrics yet; train it with train-heads")
    return frame


def _read_csv(path: Path, command: str, dtype: dict | None = None) -> pd.DataFrame:
    if not path.exists():
        raise ResultMissing(f"{path} is missing: run `{command}` first")
    return pd.read_csv(path, dtype=dtype)


def _labelled(frame: pd.DataFrame, run: RunInfo) -> pd.DataFrame:
    """`frame` with the run's labels (run, train_langs, width, seed) as its first columns."""
    return pd.concat([pd.DataFrame(run.labels(), index=frame.index), frame], axis=1)


@dataclass(frozen=True)
class Run:
    """One analysed run: its facts and the tables `analyse` wrote into its `analysis/` folder."""

    info: RunInfo
    command: str = ""  # the `analyse ...` targets that make this run's files (for messages)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def config(self) -> dict:
        return self.info.config

    def _hint(self, step: str) -> str:
        return f"analyse {step} {self.command or self.info.path}"

    def predictions(self) -> pd.DataFrame:
        """Every episode's decision (test, lang, episode, concept, ids, scores, correct), with run labels."""
        path = self.info.analysis_dir / "predictions.csv"
        return _labelled(_read_csv(path, self._hint("all"), ID_COLUMNS), self.info)

    def accuracy(self) -> pd.DataFrame:
        """Accuracy in percent per (test, lang), with the number of episodes and the run labels."""
        return _labelled(_read_csv(self.info.analysis_dir / "accuracy.csv", self._hint("all"), {"lang": str}), self.info)

    def metrics(self) -> pd.DataFrame:
        """Per-epoch training metrics (epoch, train_loss, val_loss, val_familiar_acc, ...), with run labels."""
        return _labelled(read_metrics(self.info), self.info)


def load_run(path: str | Path) -> Run:
    """The run in `path` (a run folder holding config.json; training must be complete)."""
    return Run(read_run(Path(path)))


@dataclass(frozen=True)
class Study:
    """The complete runs of a study and its report folder; every method returns a fresh DataFrame."""

    name: str
    run_list: tuple[Run, ...]
    report_dir: Path
    command: str  # the targets of the `analyse` commands that make this study's files

    def _hint(self, step: str) -> str:
        return f"analyse {step} {self.command}"

    def run(self, name: str) -> Run:
        """One run by folder name (e.g. `en+fr-w64-s0`)."""
        for run in self.run_list:
            if run.name == name:
                return run
        raise StudyError(f"study {self.name!r} has no run {name!r}; its runs: {', '.join(r.name for r in self.run_list)}")

    def runs(self) -> pd.DataFrame:
        """One row per run: run, train_langs, width, seed, langs, equal_steps, status, excluded, path."""
        rows = [{**r.info.labels(), "langs": "+".join(r.info.langs), "equal_steps": r.info.equal_steps,
                 "status": r.config.get("status"), "excluded": ";".join(run_exclusion(r.info)), "path": str(r.info.path)}
                for r in self.run_list]
        return pd.DataFrame(rows)

    def table1(self) -> pd.DataFrame:
        """Table 1: familiar and ME mean ± SE over seeds (percent) per training set and test language."""
        return _read_csv(self.report_dir / "table1.csv", self._hint("all"), {"train_langs": str, "test_lang": str})

    def comparisons(self, test: str = "me") -> pd.DataFrame:
        """The bilingual-vs-monolingual comparisons on `test` (me, or familiar after `analyse compare --test familiar`)."""
        name = "comparisons.csv" if test == "me" else f"comparisons-{test}.csv"
        step = "all" if test == "me" else f"compare --test {test}"
        return _read_csv(self.report_dir / name, self._hint(step), {"bilingual": str, "monolingual": str, "test_lang": str})

    def predictions(self) -> pd.DataFrame:
        """All runs' predictions stacked, each row labelled with its run (run, train_langs, width, seed)."""
        return pd.concat([r.predictions() for r in self.run_list], ignore_index=True)

    def accuracy(self) -> pd.DataFrame:
        """All runs' accuracy tables stacked (percent), with run labels."""
        return pd.concat([r.accuracy() for r in self.run_list], ignore_index=True)

    def metrics(self) -> pd.DataFrame:
        """All runs' per-epoch training metrics stacked, with run labels."""
        return pd.concat([r.metrics() for r in self.run_list], ignore_index=True)


def load_study(name_or_path: str | Path, report_dir: str | Path | None = None) -> Study:
    """A study by name ($VGSME_HOME/runs/NAME) or by the path of its folder of runs.

    A string without `/` is a name when $VGSME_HOME/runs/NAME exists, else a path. The report folder is
    $VGSME_HOME/reports/<study> unless `report_dir` says otherwise (what `analyse --out` wrote to).
    """
    text = str(name_or_path)
    by_name = not isinstance(name_or_path, Path) and "/" not in text and runs_dir(text).is_dir()
    infos = find_runs([], text) if by_name else find_runs([Path(text)])
    name = text if by_name else study_name(infos, None)
    report = Path(report_dir) if report_dir is not None else reports_dir(name)
    command = f"--study {name}" if by_name else text
    if report_dir is not None:
        command += f" --out {report}"
    return Study(name, tuple(Run(info, command) for info in infos), report, command)
