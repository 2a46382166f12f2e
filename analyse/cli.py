"""`analyse`: the tests, tables, statistics, figures and report of a study, one command each.

Every command takes run folders, folders of runs, and/or `--study NAME` ($VGSME_HOME/runs/NAME). Per-run
results go to `<run>/analysis/`; study-wide results to `--out` (default $VGSME_HOME/reports/<study>/).
Each command parses its options and calls one library function (`analyse.pipeline` or a module's
`study_*` function); `analyse all` calls the same functions in order. Accuracies print as percent.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from analyse.episodes import DEFAULT_PER_CONCEPT, DEFAULT_SEED, TESTS
from analyse.study import RunInfo, find_runs, study_name
from analyse.variance import DEFAULT_PER_CONCEPT as VARIANCE_ITEMS_PER_CONCEPT
from cache.clitools import Group, user_errors, verbosity_options
from cache.hardware import DEVICE_HELP, PRECISION_HELP, PRECISIONS, resolve_device, resolve_precision
from cache.layout import reports_dir

log = logging.getLogger(__name__)


def _runs_options(fn):
    """The arguments every command shares: which runs."""
    options = [
        click.argument("targets", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path)),
        click.option("--study", help="Analyse $VGSME_HOME/runs/STUDY (added to any TARGETS: run folders, or folders "
                                     "of runs)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _out_option(fn):
    return click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                        help="Folder for the study-wide files [default: $VGSME_HOME/reports/<study>].")(fn)


def _embedding_options(fn):
    """Where and how test items are embedded: resolved once, passed down as plain names."""
    fn = click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                      help=f"Precision of the embedding forward pass: {PRECISION_HELP}.")(fn)
    return click.option("--device", default="auto", show_default=True,
                        help=f"Torch device for embedding test items: {DEVICE_HELP}.")(fn)


def _episode_options(fn):
    fn = click.option("--per-concept", default=DEFAULT_PER_CONCEPT, show_default=True,
                      help="Episodes per concept (only used when the episodes are first drawn).")(fn)
    return click.option("--episode-seed", default=DEFAULT_SEED, show_default=True,
                        help="Seed of the shared episode draw.")(fn)


def _hardware(device: str, precision: str) -> tuple[str, str]:
    """`--device` and `--precision` resolved (never `auto`), the precision's reason logged."""
    device = resolve_device(device)
    resolved = resolve_precision(precision, device)
    log.info("embedding on %s in %s (%s)", device, resolved.name, resolved.reason)
    return device, resolved.name


def _resolve(targets, study) -> tuple[list[RunInfo], str]:
    runs = find_runs(list(targets), study)
    return runs, study_name(runs, study)


def _out(out: Path | None, name: str) -> Path:
    return out if out is not None else reports_dir(name)


def _say(label: str, paths) -> None:
    for p in paths if isinstance(paths, (list, tuple)) else [paths]:
        click.echo(f"{label}: {p}")


def _accuracy_line(accuracy, tests: tuple[str, ...]) -> str:
    """`familiar en 98.5 %, me en 61.2 %`: a run's accuracies, in percent."""
    return ", ".join(f"{r.test} {r.lang} {r.accuracy:.1f} %" for r in accuracy.itertuples() if r.test in tests)


@click.group(cls=Group)
def analyse() -> None:
    """Familiar and ME tests, Table 1, comparisons, variance, embeddings, translation, report."""


@analyse.command()
@_runs_options
@_episode_options
@click.option("--redraw", is_flag=True, help="Draw the episodes anew (after a corpus change); rescore every run afterwards.")
@verbosity_options
@user_errors
def episodes(targets, study, episode_seed, per_concept, redraw, progress):
    """Draw (once) or check the shared familiar and ME episodes of the runs' languages."""
    from analyse.pipeline import draw_study_episodes

    for drawn in draw_study_episodes(find_runs(list(targets), study), episode_seed, per_concept, redraw=redraw):
        _say(f"{drawn.lang} {drawn.test} ({drawn.n_episodes} episodes)", drawn.path)


@analyse.command()
@_runs_options
@_embedding_options
@click.option("--force", is_flag=True, help="Re-embed even when embeddings of the current checkpoint exist.")
@verbosity_options
@user_errors
def export(targets, study, device, precision, force, progress):
    """Write every test item's embedding: <run>/analysis/embeddings.npz and items.csv."""
    from analyse.pipeline import export_study

    runs, _ = _resolve(targets, study)
    device, precision = _hardware(device, precision)
    for run, paths in export_study(runs, device, precision, force=force, progress=progress):
        _say(run.name, paths)


def _score(targets, study, device, precision, episode_seed, per_concept, tests, progress):
    from analyse.pipeline import score_study

    runs, _ = _resolve(targets, study)
    device, precision = _hardware(device, precision)
    for run, accuracy in score_study(runs, tests, device, precision, episode_seed, per_concept, progress=progress):
        _say(f"{run.name} ({_accuracy_line(accuracy, tests)})", run.analysis_dir / "predictions.csv")


@analyse.command()
@_runs_options
@_embedding_options
@_episode_options
@verbosity_options
@user_errors
def familiar(targets, study, device, precision, episode_seed, per_concept, progress):
    """Familiar test: query and both images from familiar concepts; writes predictions.csv, accuracy.csv."""
    _score(targets, study, device, precision, episode_seed, per_concept, ("familiar",), progress)


@analyse.command()
@_runs_options
@_embedding_options
@_episode_options
@verbosity_options
@user_errors
def me(targets, study, device, precision, episode_seed, per_concept, progress):
    """ME test: novel query and positive image, familiar negative; writes predictions.csv, accuracy.csv."""
    _score(targets, study, device, precision, episode_seed, per_concept, ("me",), progress)


@analyse.command()
@_runs_options
@_out_option
@verbosity_options
@user_errors
def table(targets, study, out, progress):
    """Table 1 (mean ± SE over seeds, percent) as table1.csv, .md and .tex."""
    from analyse.table import study_table

    runs, name = _resolve(targets, study)
    paths = study_table(runs, _out(out, name))
    _say("Table 1", list(paths.values()))
    click.echo(paths["table1_md"].read_text())


@analyse.command()
@_runs_options
@_out_option
@click.option("--test", "test_name", type=click.Choice(TESTS), default="me", show_default=True, help="Which test to compare on.")
@click.option("--resamples", default=9999, show_default=True, type=click.IntRange(min=1),
              help="Resamples per test: draws of the hierarchical bootstrap (headline) and of the trial-level "
              "permutation test.")
@click.option("--seed", default=0, show_default=True, help="Seed of the permutations and bootstraps.")
@verbosity_options
@user_errors
def compare(targets, study, out, test_name, resamples, seed, progress):
    """Each bilingual model vs the monolingual model of its test language: a seeds-and-trials bootstrap
    (headline) and a trial-level permutation test."""
    from analyse.compare import CompareOptions
    from analyse.pipeline import compare_study

    runs, name = _resolve(targets, study)
    paths = compare_study(runs, _out(out, name), test_name, CompareOptions(n_resamples=resamples, seed=seed))
    _say("comparisons", list(paths.values()))


@analyse.command()
@_runs_options
@_out_option
@click.option("--resamples", default=9999, show_default=True, type=click.IntRange(min=1),
              help="Draws of the hierarchical bootstrap that compares neighbouring values of a condition.")
@click.option("--bootstrap", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Draws of the bootstrap over seeds behind each value's 95 % interval.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstraps.")
@verbosity_options
@user_errors
def exposure(targets, study, out, resamples, bootstrap, seed, progress):
    """Familiar and ME accuracy against each exposure condition that varies among the runs (ratio, budget,
    L2 onset, data fraction, vocabulary size), neighbouring values compared with a seeds-and-trials bootstrap."""
    import pandas as pd

    from analyse.exposure import ExposureOptions
    from analyse.pipeline import exposure_study

    runs, name = _resolve(targets, study)
    paths = exposure_study(runs, _out(out, name), ExposureOptions(n_resamples=resamples, n_bootstrap=bootstrap, seed=seed))
    _say("exposure", list(paths.values()))
    for r in pd.read_csv(paths["exposure"], dtype={"value": str, "train_langs": str, "test_lang": str}).itertuples():
        click.echo(f"{r.condition} {r.value}: {r.train_langs} w{r.width} test {r.test_lang}: ME {r.me_mean:.1f} %, "
                   f"familiar {r.familiar_mean:.1f} % ({r.n_seeds} seeds)")


@analyse.command()
@_runs_options
@_out_option
@verbosity_options
@user_errors
def layers(targets, study, out, progress):
    """Familiar and ME accuracy per encoder layer for runs trained with `train-heads --audio-layer` (a layer
    sweep: layers.csv, layers.png), and the learned weights of `--audio-layer weighted` runs
    (layer_weights.csv, layer_weights.png, <run>/analysis/layer_weights.png). Needs `analyse familiar` and
    `analyse me` (or `analyse all`) first."""
    import pandas as pd

    from analyse.pipeline import layers_study

    runs, name = _resolve(targets, study)
    paths = layers_study(runs, _out(out, name))
    _say("layers", list(paths.values()))
    for r in pd.read_csv(paths["layers"], dtype={"layer": str, "train_langs": str, "test_lang": str}).itertuples():
        click.echo(f"layer {r.layer}: {r.train_langs} w{r.width} test {r.test_lang}: ME {r.me_mean:.1f} %, "
                   f"familiar {r.familiar_mean:.1f} % ({r.n_seeds} seeds)")


@analyse.command()
@_runs_options
@_out_option
@_embedding_options
@_episode_options
@verbosity_options
@user_errors
def trajectory(targets, study, out, device, precision, episode_seed, per_concept, progress):
    """Score every epoch saved by `train-heads --save-epochs` (epoch 0: the untrained heads) on the final
    analysis's familiar and ME episodes: <run>/analysis/trajectory.csv, trajectory.csv and trajectory.png."""
    import pandas as pd

    from analyse.pipeline import trajectory_study

    runs, name = _resolve(targets, study)
    device, precision = _hardware(device, precision)
    paths = trajectory_study(runs, _out(out, name), device, precision, episode_seed, per_concept, progress=progress)
    _say("trajectory", list(paths.values()))
    data = pd.read_csv(paths["trajectory"], dtype={"train_langs": str, "lang": str, "test": str})
    last = data.groupby("run")["epoch"].transform("max")
    for at, rows in (("untrained", data[data["epoch"] == 0]), ("last epoch", data[data["epoch"] == last])):
        means = rows.groupby(["train_langs", "width", "test", "lang"])["accuracy"].mean()
        click.echo(f"{at}: " + ", ".join(f"{m.upper()} w{w} {t} {lang} {a:.1f} %" for (m, w, t, lang), a in means.items()))


@analyse.command()
@_runs_options
@_out_option
@_embedding_options
@click.option("--items-per-concept", default=VARIANCE_ITEMS_PER_CONCEPT, show_default=True,
              help="Most test items per (concept, language) in the subsample the variances are computed on.")
@click.option("--seed", default=0, show_default=True, help="Seed of the subsample and the bootstrap.")
@verbosity_options
@user_errors
def variance(targets, study, out, device, precision, items_per_concept, seed, progress):
    """Trace of the covariance of familiar / novel, audio / image embeddings; bar figure (Fig. 4)."""
    from analyse.variance import study_variance

    runs, name = _resolve(targets, study)
    device, precision = _hardware(device, precision)
    paths = study_variance(runs, _out(out, name), device, items_per_concept, seed, precision=precision, progress=progress)
    _say("variance", list(paths.values()))


@analyse.command()
@_runs_options
@_embedding_options
@click.option("--all-seeds", is_flag=True, help="Draw every run, not only the first seed of each configuration.")
@click.option("--perplexity", default=30.0, show_default=True, help="t-SNE perplexity (lowered for small sets).")
@click.option("--seed", default=0, show_default=True, help="t-SNE seed (and of its subsample).")
@click.option("--tsne-per-concept", default=20, show_default=True, help="Most audio items per (concept, language) in the t-SNE.")
@verbosity_options
@user_errors
def embeddings(targets, study, device, precision, all_seeds, perplexity, seed, tsne_per_concept, progress):
    """PCA of audio + image embeddings, t-SNE of audio, modality gap (Fig. 3)."""
    from analyse.embeddings import study_projections

    runs, _ = _resolve(targets, study)
    device, precision = _hardware(device, precision)
    drawn = study_projections(runs, device, perplexity, seed, tsne_per_concept, all_seeds=all_seeds,
                              precision=precision, progress=progress)
    for run_name, paths in drawn.items():
        _say(run_name, list(paths.values()))


@analyse.command()
@_runs_options
@_out_option
@_embedding_options
@verbosity_options
@user_errors
def translation(targets, study, out, device, precision, progress):
    """Nearest-centroid translation probe between a bilingual model's languages, and a raw-feature baseline."""
    from analyse.translation import study_translation

    runs, name = _resolve(targets, study)
    if all(len(r.langs) < 2 for r in runs):
        raise click.ClickException("no run with two languages among the targets: the probe needs a bilingual model")
    device, precision = _hardware(device, precision)
    _say("translation", list(study_translation(runs, _out(out, name), device, precision=precision, progress=progress).values()))


@analyse.command()
@_runs_options
@_out_option
@verbosity_options
@user_errors
def report(targets, study, out, progress):
    """One self-contained HTML page of the study from what the other commands wrote."""
    from analyse.report.writer import write_report

    runs, name = _resolve(targets, study)
    _say("report", write_report(name, runs, _out(out, name)))


@analyse.command(name="all")
@_runs_options
@_out_option
@_embedding_options
@_episode_options
@verbosity_options
@user_errors
def all_(targets, study, out, device, precision, episode_seed, per_concept, progress):
    """Everything, in order: export, familiar + ME, trajectory (runs with saved epochs), table, compare,
    variance, embeddings, translation, exposure (runs with a non-default exposure), layers (runs trained with
    --audio-layer), report.

    PCA pictures are drawn for the first seed of each configuration, t-SNE for one bilingual model (EN–NL
    when present, as in the paper); `analyse embeddings` draws t-SNE for any others."""
    from analyse.pipeline import analyse_all

    started = time.perf_counter()
    runs, name = _resolve(targets, study)
    device, precision = _hardware(device, precision)
    out_dir = _out(out, name)
    written = analyse_all(runs, name, out_dir, device, precision, episode_seed, per_concept, progress=progress)
    for label, path in written.items():
        _say(label, path)
    click.echo(written["table1_md"].read_text())
    click.echo(f"analysed {len(runs)} runs in {time.perf_counter() - started:.0f} s; report: {written['report']}")


if __name__ == "__main__":
    analyse()
