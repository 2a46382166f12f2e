"""The study-level steps of `analyse`, one function each, and `analyse_all`, which runs them in order.

Every `analyse` subcommand is a thin shell over one of these (or over the `study_*` function of its
module), and `analyse all` calls exactly the same functions, so a subcommand and `all` can never write
different files. The functions take resolved values (a device such as `cuda:0`, a precision name such as
`bf16`, never `auto`: the CLI resolves them once with `cache.hardware`), do not print, and return what
they wrote.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analyse.compare import CompareOptions, study_compare
from analyse.embeddings import study_projections
from analyse.episodes import DEFAULT_PER_CONCEPT, DEFAULT_SEED, TESTS, episode_paths, episodes_for_run
from analyse.exclusion import study_exclusion
from analyse.exposure import ExposureOptions, has_exposure_runs, study_exposure
from analyse.export import run_embeddings
from analyse.layers import has_layer_runs, study_layers
from analyse.report.writer import write_report
from analyse.study import RunInfo, episodes_dir
from analyse.table import study_table
from analyse.tests import score_run
from analyse.trajectory import study_trajectory, trajectory_runs
from analyse.translation import study_translation
from analyse.variance import DEFAULT_PER_CONCEPT as VARIANCE_ITEMS_PER_CONCEPT
from analyse.variance import study_variance
from cache.clitools import progress_iter


@dataclass(frozen=True)
class EpisodeSet:
    """One shared episode file: its language, test, CSV path and number of episodes."""

    lang: str
    test: str
    path: Path
    n_episodes: int


def draw_study_episodes(runs: list[RunInfo], seed: int = DEFAULT_SEED, per_concept: int = DEFAULT_PER_CONCEPT,
                        redraw: bool = False) -> list[EpisodeSet]:
    """Draw (once) or check the familiar and ME episodes of every language of the runs, each file once."""
    study_exclusion(runs)
    done: dict[tuple[Path, str, str], EpisodeSet] = {}
    for run in runs:
        for lang in run.langs:
            for test in TESTS:
                key = (episodes_dir(run), lang, test)
                if key not in done:
                    frame = episodes_for_run(run, lang, test, seed, per_concept, redraw=redraw)
                    done[key] = EpisodeSet(lang, test, episode_paths(*key)[0], len(frame))
    return list(done.values())


def export_study(runs: list[RunInfo], device: str = "cpu", precision: str = "fp32", force: bool = False,
                 progress: bool = False) -> list[tuple[RunInfo, list[Path]]]:
    """Every run's test-item embeddings: `<run>/analysis/embeddings.npz` and `items.csv`."""
    written = []
    for run in progress_iter(runs, progress, desc="embedding", unit="run"):
        run_embeddings(run, device, force=force, precision=precision)
        written.append((run, [run.analysis_dir / "embeddings.npz", run.analysis_dir / "items.csv"]))
    return written


def score_study(runs: list[RunInfo], tests: tuple[str, ...] = TESTS, device: str = "cpu", precision: str = "fp32",
                episode_seed: int = DEFAULT_SEED, per_concept: int = DEFAULT_PER_CONCEPT,
                progress: bool = False) -> list[tuple[RunInfo, pd.DataFrame]]:
    """Score `tests` for every run (its `analysis/predictions.csv` and `accuracy.csv`); returns each run's
    accuracy table (test, lang, n, accuracy in percent)."""
    study_exclusion(runs)
    scored = []
    for run in progress_iter(runs, progress, desc="scoring", unit="run"):
        _, accuracy = score_run(run, tests, device, episode_seed, per_concept, precision=precision)
        scored.append((run, accuracy))
    return scored


def compare_study(runs: list[RunInfo], out_dir: Path, test: str = "me",
                  options: CompareOptions = CompareOptions()) -> dict[str, Path]:
    """The paired bilingual-vs-monolingual comparisons, over runs that agree on the excluded concepts."""
    study_exclusion(runs)
    return study_compare(runs, out_dir, test, options)


def exposure_study(runs: list[RunInfo], out_dir: Path, options: ExposureOptions = ExposureOptions()) -> dict[str, Path]:
    """Accuracy against each exposure condition that varies, and tests between its neighbouring values."""
    study_exclusion(runs)
    return study_exposure(runs, out_dir, options)


def layers_study(runs: list[RunInfo], out_dir: Path) -> dict[str, Path]:
    """Familiar and ME per encoder layer (a layer sweep) and the learned layer weights of weighted-sum runs."""
    study_exclusion(runs)
    return study_layers(runs, out_dir)


def trajectory_study(runs: list[RunInfo], out_dir: Path, device: str = "cpu", precision: str = "fp32",
                     episode_seed: int = DEFAULT_SEED, per_concept: int = DEFAULT_PER_CONCEPT,
                     progress: bool = False) -> dict[str, Path]:
    """Every saved epoch of the runs that kept them, scored on the final analysis's episodes."""
    study_exclusion(runs)
    return study_trajectory(runs, out_dir, device, precision, episode_seed, per_concept, progress=progress)


def analyse_all(runs: list[RunInfo], study: str, out_dir: Path, device: str = "cpu", precision: str = "fp32",
                episode_seed: int = DEFAULT_SEED, per_concept: int = DEFAULT_PER_CONCEPT,
                progress: bool = False) -> dict[str, Path]:
    """Everything, in order: export, familiar + ME, trajectories (when some run kept its epochs: Table 1
    and the exposure analysis then show the untrained baseline), table, compare, variance, embeddings, translation,
    exposure (when some run changed the exposure), layers (when some run chose an encoder layer), report.

    PCA pictures are drawn for the first seed of each configuration and t-SNE for one bilingual model
    (EN–NL when present, as in the paper). Returns the study-wide files by label; the per-run files are
    in each run's `analysis/`."""
    study_exclusion(runs)
    export_study(runs, device, precision, progress=progress)
    score_study(runs, TESTS, device, precision, episode_seed, per_concept, progress=progress)
    written = {}
    if trajectory_runs(runs):
        written.update(trajectory_study(runs, out_dir, device, precision, episode_seed, per_concept, progress))
    written.update({**study_table(runs, out_dir), **compare_study(runs, out_dir)})
    written.update(study_variance(runs, out_dir, device, VARIANCE_ITEMS_PER_CONCEPT, precision=precision,
                                  progress=progress))
    study_projections(runs, device, tsne_headline_only=True, precision=precision, progress=progress)
    written.update(study_translation(runs, out_dir, device, precision=precision, progress=progress))
    if has_exposure_runs(runs):
        written.update(exposure_study(runs, out_dir))
    if has_layer_runs(runs):
        written.update(layers_study(runs, out_dir))
    written["report"] = write_report(study, runs, out_dir)
    return written
