"""`analyse`: the tests, tables, statistics, figures and report of a study, one command each.

Every command takes run folders, folders of runs, and/or `--study NAME` ($VGSME_HOME/runs/NAME). Per-run
results go to `<run>/analysis/`; study-wide results to `--out` (default $VGSME_HOME/reports/<study>/).
"""
from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import click
from tqdm import tqdm

from analyse.compare import CompareOptions
from analyse.episodes import DEFAULT_PER_CONCEPT, DEFAULT_SEED, TESTS
from analyse.study import RunInfo, find_runs, first_seed_runs, study_name
from cache.layout import reports_dir


def _runs_options(fn):
    """The arguments every command shares: which runs."""
    options = [
        click.argument("targets", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path)),
        click.option("--study", help="Analyse $VGSME_HOME/runs/STUDY (added to any TARGETS)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _out_option(fn):
    return click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                        help="Folder for the study-wide files [default: $VGSME_HOME/reports/<study>].")(fn)


def _device_option(fn):
    return click.option("--device", default="cpu", show_default=True,
                        help="Torch device for embedding test items (cpu, cuda, cuda:1).")(fn)


def _episode_options(fn):
    fn = click.option("--per-concept", default=DEFAULT_PER_CONCEPT, show_default=True,
                      help="Episodes per concept (only used when the episodes are first drawn).")(fn)
    return click.option("--episode-seed", default=DEFAULT_SEED, show_default=True,
                        help="Seed of the shared episode draw.")(fn)


def _errors_as_click(fn):
    """User errors (ValueError and friends) end the command with a message, not a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, KeyError) as err:
            raise click.ClickException(str(err)) from err
    return wrapper


def _resolve(targets, study) -> tuple[list[RunInfo], str]:
    runs = find_runs(list(targets), study)
    return runs, study_name(runs, study)


def _out(out: Path | None, name: str) -> Path:
    return out if out is not None else reports_dir(name)


def _say(label: str, paths) -> None:
    for p in paths if isinstance(paths, (list, tuple)) else [paths]:
        click.echo(f"{label}: {p}")


def _progress(runs, desc: str):
    return tqdm(runs, desc=desc, unit="run", leave=False, disable=len(runs) < 2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress messages.")
def analyse(verbose: bool) -> None:
    """Familiar and ME tests, Table 1, comparisons, variance, embeddings, translation, report."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@analyse.command()
@_runs_options
@_episode_options
@click.option("--redraw", is_flag=True, help="Draw the episodes anew (after a corpus change); rescore every run afterwards.")
@_errors_as_click
def episodes(targets, study, episode_seed, per_concept, redraw):
    """Draw (once) or check the shared familiar and ME episodes of the runs' languages."""
    from analyse.episodes import episode_paths, episodes_for_run
    from analyse.study import episodes_dir

    runs = find_runs(list(targets), study)
    done = set()
    for run in runs:
        for lang in run.langs:
            for test in TESTS:
                key = (episodes_dir(run), lang, test)
                if key not in done:
                    done.add(key)
                    frame = episodes_for_run(run, lang, test, episode_seed, per_concept, redraw=redraw)
                    _say(f"{lang} {test} ({len(frame)} episodes)", episode_paths(*key)[0])


@analyse.command()
@_runs_options
@_device_option
@click.option("--force", is_flag=True, help="Re-embed even when embeddings of the current checkpoint exist.")
@_errors_as_click
def export(targets, study, device, force):
    """Write every test item's embedding: <run>/analysis/embeddings.npz and items.csv."""
    from analyse.export import run_embeddings

    runs, _ = _resolve(targets, study)
    for run in _progress(runs, "embedding"):
        run_embeddings(run, device, force=force)
        _say(run.name, [run.analysis_dir / "embeddings.npz", run.analysis_dir / "items.csv"])


def _score(targets, study, device, episode_seed, per_concept, tests):
    from analyse.tests import score_run

    runs, _ = _resolve(targets, study)
    for run in _progress(runs, "scoring"):
        _, accuracy = score_run(run, tests, device, episode_seed, per_concept)
        summary = ", ".join(f"{r.test} {r.lang} {r.accuracy:.1f} %" for r in accuracy.itertuples() if r.test in tests)
        _say(f"{run.name} ({summary})", run.analysis_dir / "predictions.csv")


@analyse.command()
@_runs_options
@_device_option
@_episode_options
@_errors_as_click
def familiar(targets, study, device, episode_seed, per_concept):
    """Familiar test: query and both images from familiar concepts; writes predictions.csv, accuracy.csv."""
    _score(targets, study, device, episode_seed, per_concept, ("familiar",))


@analyse.command()
@_runs_options
@_device_option
@_episode_options
@_errors_as_click
def me(targets, study, device, episode_seed, per_concept):
    """ME test: novel query and positive image, familiar negative; writes predictions.csv, accuracy.csv."""
    _score(targets, study, device, episode_seed, per_concept, ("me",))


@analyse.command()
@_runs_options
@_out_option
@_errors_as_click
def table(targets, study, out):
    """Table 1 (mean ± SE over seeds) as table1.csv, .md and .tex."""
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
              help="Resamples per test: draws of the hierarchical bootstrap (headline) and of the trial-level permutation test.")
@click.option("--seed", default=0, show_default=True, help="Seed of the permutations and bootstraps.")
@_errors_as_click
def compare(targets, study, out, test_name, resamples, seed):
    """Each bilingual model vs the monolingual model of its test language: a seeds-and-trials bootstrap, permutation tests."""
    from analyse.compare import study_compare

    runs, name = _resolve(targets, study)
    paths = study_compare(runs, _out(out, name), test_name, CompareOptions(n_resamples=resamples, seed=seed))
    _say("comparisons", list(paths.values()))


@analyse.command()
@_runs_options
@_out_option
@_device_option
@click.option("--per-concept", default=30, show_default=True, help="Most items per (concept, language) in the subsample.")
@click.option("--seed", default=0, show_default=True, help="Seed of the subsample and the bootstrap.")
@_errors_as_click
def variance(targets, study, out, device, per_concept, seed):
    """Trace of the covariance of familiar / novel, audio / image embeddings; bar figure (Fig. 4)."""
    from analyse.variance import study_variance

    runs, name = _resolve(targets, study)
    _say("variance", list(study_variance(runs, _out(out, name), device, per_concept, seed).values()))


@analyse.command()
@_runs_options
@_device_option
@click.option("--all-seeds", is_flag=True, help="Draw every run, not only the first seed of each configuration.")
@click.option("--perplexity", default=30.0, show_default=True, help="t-SNE perplexity (lowered for small sets).")
@click.option("--seed", default=0, show_default=True, help="t-SNE seed (and of its subsample).")
@click.option("--tsne-per-concept", default=20, show_default=True, help="Most audio items per (concept, language) in the t-SNE.")
@_errors_as_click
def embeddings(targets, study, device, all_seeds, perplexity, seed, tsne_per_concept):
    """PCA of audio + image embeddings, t-SNE of audio, modality gap (Fig. 3)."""
    from analyse.embeddings import run_projections

    runs, _ = _resolve(targets, study)
    chosen = runs if all_seeds else first_seed_runs(runs)
    for run in _progress(chosen, "projections"):
        _say(run.name, list(run_projections(run, device, perplexity, seed, tsne_per_concept=tsne_per_concept).values()))


@analyse.command()
@_runs_options
@_out_option
@_device_option
@_errors_as_click
def translation(targets, study, out, device):
    """Nearest-centroid translation probe between a bilingual model's languages, and a raw-feature baseline."""
    from analyse.translation import study_translation

    runs, name = _resolve(targets, study)
    paths = study_translation(runs, _out(out, name), device)
    if not paths:
        raise click.ClickException("no run with two languages among the targets: the probe needs a bilingual model")
    _say("translation", list(paths.values()))


@analyse.command()
@_runs_options
@_out_option
@_errors_as_click
def report(targets, study, out):
    """One self-contained HTML page of the study from what the other commands wrote."""
    from analyse.report.writer import write_report

    runs, name = _resolve(targets, study)
    _say("report", write_report(name, runs, _out(out, name)))


@analyse.command(name="all")
@_runs_options
@_out_option
@_device_option
@_episode_options
@_errors_as_click
def all_(targets, study, out, device, episode_seed, per_concept):
    """Everything, in order: export, familiar + ME, table, compare, variance, embeddings, translation, report.

    PCA pictures are drawn for the first seed of each configuration, t-SNE for one bilingual model (EN–NL
    when present, as in the paper); `analyse embeddings` draws t-SNE for any others."""
    from analyse.compare import study_compare
    from analyse.embeddings import run_projections
    from analyse.export import run_embeddings
    from analyse.report.writer import write_report
    from analyse.table import study_table
    from analyse.tests import score_run
    from analyse.translation import study_translation
    from analyse.variance import study_variance

    started = time.perf_counter()
    runs, name = _resolve(targets, study)
    out_dir = _out(out, name)
    for run in tqdm(runs, desc="embed + test", unit="run", leave=False):
        run_embeddings(run, device)
        score_run(run, TESTS, device, episode_seed, per_concept)
    written = {**study_table(runs, out_dir), **study_compare(runs, out_dir)}
    written.update(study_variance(runs, out_dir, device))
    pictured = first_seed_runs(runs)
    headline = next((r for r in pictured if len(r.langs) > 1), pictured[0])  # EN–NL when present, as in the paper
    for run in tqdm(pictured, desc="projections", unit="run", leave=False):
        run_projections(run, device, tsne=run is headline)  # t-SNE is the slow part: one model only
    written.update(study_translation(runs, out_dir, device))
    written["report"] = write_report(name, runs, out_dir)
    for label, path in written.items():
        _say(label, path)
    click.echo((out_dir / "table1.md").read_text())
    click.echo(f"analysed {len(runs)} runs in {time.perf_counter() - started:.0f} s; report: {written['report']}")
