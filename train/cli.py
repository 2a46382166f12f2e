"""`train-heads`: train the pooling heads on cached features, one run or a sweep (a thin shell over train.sweep)."""
from __future__ import annotations

import os

# Before torch loads OpenMP: worker threads that wait by sleeping rather than spinning. On a 2-core machine
# that other jobs keep busy, spinning threads made a training step 5-10x slower (bench/train_step.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
import torch  # noqa: E402

from cache import layout  # noqa: E402
from cache.executors import EXECUTOR_PARAMS, ExecutorSpec, executor_options  # noqa: E402
from cache.clitools import Command, split_values, user_errors, verbosity_options  # noqa: E402
from cache.hardware import DEVICE_HELP, PRECISION_HELP, PRECISIONS, resolve_device  # noqa: E402
from train.model import LOGIT_MODES  # noqa: E402
from train.exposure import BUDGETS, sweep_exposures  # noqa: E402
from train.jobs import train_on_executor  # noqa: E402
from train.layers import parse_audio_layers  # noqa: E402
from train.loop import choose_precision  # noqa: E402
from train.runs import RunConfigError, RunFolder  # noqa: E402
from train.sampler import NEGATIVE_MODES  # noqa: E402
from train.sweep import SweepPlan, SweepResult, plan_from_run, plan_sweep  # noqa: E402
from train.sweepfile import SweepFileError, given_on_command_line, read_sweep_file  # noqa: E402
from train.tensorboard import require_tensorboard  # noqa: E402

# What `--from` may be given with: where the new run goes and how it runs, never what it is.
FROM_OPTIONS = ("from_run", "out", "device", "threads", "force", "allow_changed_stores", "quiet", "verbose",
                "tensorboard", *EXECUTOR_PARAMS)


def load_sweep_file(ctx: click.Context, param: click.Parameter, value: Path | None):
    """`--sweep FILE` (eager): the file's values become the other options' defaults, so it expands exactly as
    the same options written on the command line would."""
    if value is None:
        return None
    try:
        sweep = read_sweep_file(value, ctx.command)
    except SweepFileError as error:
        raise click.ClickException(str(error)) from None
    ctx.default_map = {**(ctx.default_map or {}), **sweep.defaults}
    return sweep


@click.command(cls=Command)
@click.option("--sweep", "sweep_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), is_eager=True,
              callback=load_sweep_file, expose_value=True, metavar="FILE",
              help="Read the sweep's options from a YAML or JSON file (keys: the long option names below, e.g. "
              "`configs: [en, en+fr]`, `seeds: 0-4`, `batch-size: 60`; see docs/training.md); it is copied to the "
              "study folder as sweep.yaml. Beside it the command line takes only --out, --device, --threads, "
              "--force, --tensorboard, the executor options, -q, -v.")
@click.option("--from", "from_run", type=click.Path(exists=True, path_type=Path), metavar="RUN",
              help="Retrain a recorded run (its folder or its config.json) with every recorded value, on the stores "
              "it recorded, into --out NEW_FOLDER (needed); the same metrics on CPU. Beside it only --out, "
              "--device (default: the recorded one), --threads, --force, --allow-changed-stores, --tensorboard, "
              "the executor options, -q, -v.")
@click.option("--allow-changed-stores", is_flag=True,
              help="With --from: retrain on the recorded store paths even if their content changed since (a new "
              "run, not a reproduction); without it such a store is refused.")
@click.option("--langs", multiple=True, metavar="LANG...",
              help="Languages of ONE run (two = a bilingual run), e.g. `--langs en fr`.")
@click.option("--configs", multiple=True, metavar="CONFIG...",
              help="Several language configurations, e.g. `--configs en fr nl en+fr en+nl fr+nl`.")
@click.option("--seeds", default=("0",), multiple=True, show_default=True, metavar="SEEDS",
              help="Seeds: ranges and lists, e.g. `0-4`, `0 1 2`, `0,3`.")
@click.option("--widths", "--width", "widths", default=("256",), multiple=True, show_default=True, metavar="W...",
              help="Width W = embedding size E (multiples of 64; the paper: 128 256 512).")
@click.option("--audio-layer", "audio_layers", multiple=True, metavar="N|weighted|A..B",
              help="Encoder layer to train on, for audio stores of several layers (extract-features --layers): a "
              "hidden state N, `weighted` (a learned softmax-weighted sum of all stored layers, SUPERB style; its "
              "weights go to layer_weights.json), or several to sweep (`0..12`, `0 3 6 weighted`). Needed with "
              "such stores; not with stores of one layer [default: the store's only layer].")
@click.option("--corpus", default="demo", show_default=True, help="Corpus whose cache holds the stores.")
@click.option("--cache", "cache_folder", type=click.Path(file_okay=False, path_type=Path),
              help="Cache folder to find stores in [default: $VGSME_HOME/cache/<corpus>].")
@click.option("--audio-store", "audio_store_opts", multiple=True, metavar="LANG=PATH[,PATH...]",
              help="Audio store of a language instead of the one found in the cache (shards separated by commas), "
              "e.g. `--audio-store en=a.h5 fr=b.h5`; every LANG must be one a run trains on.")
@click.option("--image-store", metavar="PATH[,PATH...]",
              help="Image store instead of the one found in the cache (shards separated by commas).")
@click.option("--audio-encoder", help="Audio encoder to pick when the cache holds several.")
@click.option("--image-encoder", help="Image encoder to pick when the cache holds several.")
@click.option("--epochs", default=24, show_default=True, type=click.IntRange(1), help="Epochs (the paper: 24).")
@click.option("--batch-size", default=60, show_default=True, type=click.IntRange(1), help="Anchors per step.")
@click.option("--lr", "lr_max", default=2e-4, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate (after the warm-up; the schedule starts and ends at 1e-6).")
@click.option("--negatives", "negatives_mode", type=click.Choice(NEGATIVE_MODES), default="per-anchor",
              show_default=True, help="per-anchor: the paper's 11 + 11 negatives per anchor; shared: 11 + 11 per "
              "step shared by all anchors (faster; a different objective, an ablation).")
@click.option("--logit-mode", type=click.Choice(LOGIT_MODES), default="fixed100", show_default=True,
              help="fixed100: scale exactly 100, as every published run; cap: learnable, capped at 100 (the "
              "paper's text).")
@click.option("--equal-steps", is_flag=True, help="Monolingual runs pass over their data twice per epoch, "
              "matching a bilingual run's steps (the paper's control).")
@click.option("--ratio", "ratios", multiple=True, metavar="L1:L2...",
              help="Bilingual runs only: percent of each language (in --langs order, summing to 100) among an "
              "epoch's anchors, drawn afresh each epoch from each language's own anchors without replacement; only a "
              "language with too few anchors for its share repeats them, as evenly as possible (each anchor the same "
              "number of times, the rest drawn without replacement), e.g. `--ratio 75:25`; several "
              "values sweep, e.g. `--ratio 90:10 75:25 50:50 25:75 10:90` [default: every anchor of both].")
@click.option("--budget", "budgets", multiple=True, metavar="|".join(BUDGETS),
              help="Anchors per epoch of a bilingual run: sum = both languages' data (the paper's, default); "
              "matched = as many as a monolingual run of its FIRST language (the same data budget over two "
              "languages; split by --ratio, else in proportion to the languages' anchors). --equal-steps matches the other way: it doubles a monolingual run's steps to match a "
              "bilingual sum run. Both values sweep.")
@click.option("--l2-onset", "onsets", multiple=True, metavar="EPOCH...",
              help="Bilingual runs only: the epoch from which the second language's anchors join (1 = "
              "simultaneous, default); before it the run sees only the first language, so with the sum budget "
              "those epochs are smaller (the learning-rate schedule follows the actual steps).")
@click.option("--data-fraction", "fractions", multiple=True, metavar="F...",
              help="Fraction in (0, 1] of each familiar concept's training tokens kept, per language (a seeded "
              "subset: a smaller fraction is a subset of a larger one for the same seed), e.g. "
              "`--data-fraction 0.25 0.5 1` [default: 1].")
@click.option("--vocab-size", "vocab_sizes", multiple=True, metavar="N...",
              help="Train on N familiar concepts (a seeded subset, nested across N; validation uses the same ones; "
              "recorded as `vocabulary` in config.json) [default: all].")
@click.option("--save-epochs", is_flag=True, help="Also keep the weights at initialisation and after every epoch "
              "(epochs/epoch-000.safetensors, epoch-001, ...) to score learning trajectories; never used to "
              "choose the run's checkpoint (best.safetensors stays the lowest validation loss).")
@click.option("--tensorboard", is_flag=True, help="Also write TensorBoard event files into each run folder's "
              "tensorboard/ (every metrics.csv column, per epoch, written from metrics.csv; view them with "
              "`tensorboard --logdir <runs folder>`); needs `pip install tensorboard`. Not part of a run's identity: "
              "a complete run given it gets its files without being retrained.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help=f"Autocast precision, fp32 master weights either way: {PRECISION_HELP}. The resolved one is "
              "printed and recorded in config.json.")
@click.option("--reference", is_flag=True, help="Reference mode, to check the fast path: embed every sampled "
              "occurrence separately (own dropout masks) in fp32 through the full transformer layer, as the "
              "authors' code does (several times slower; recorded in config.json).")
@click.option("--device", default="auto", show_default=True, help=f"Torch device: {DEVICE_HELP}. For jobs on other "
              "machines (submitit on SLURM, dask --dask-scheduler) `auto` and --precision auto are resolved in each "
              "job, on its node.")
@click.option("--exclude-concepts", multiple=True, metavar="CONCEPT...",
              help="Concepts left out of every training and validation set (familiar or novel; the paper drops "
              "the novel `nautilus`), e.g. `--exclude-concepts nautilus`; recorded in config.json.")
@click.option("--study", default="main", show_default=True, help="Runs go to $VGSME_HOME/runs/<study>/.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to put the run folders in, instead of $VGSME_HOME/runs/<study>; with --from, the new "
              "run folder itself.")
@click.option("--name", help="Folder name of a single run (default <langs>-w<width>-s<seed>).")
@click.option("--force", is_flag=True, help="Retrain runs that are complete, or whose stores changed since they were "
              "trained (their folders are replaced); with --sweep, also replace a different sweep.yaml.")
@click.option("--threads", type=click.IntRange(1), help="torch CPU threads [default: torch's choice, one per "
              "core; with --executor, cores // workers per job]; 1 is faster when other jobs keep the cores busy. "
              "Metrics are bit-identical only at equal --threads (docs/scale-out.md).")
@executor_options
@verbosity_options
@user_errors
def train_heads(langs, configs, seeds, widths, corpus, cache_folder, audio_store_opts, image_store, audio_encoder,
                image_encoder, epochs, batch_size, lr_max, negatives_mode, logit_mode, equal_steps, precision, device, study,
                exclude_concepts, out, name, force, threads, ratios, budgets, onsets, fractions, vocab_sizes,
                save_epochs, reference, progress, sweep_file, from_run, allow_changed_stores, audio_layers,
                tensorboard, executor: ExecutorSpec) -> None:
    """Train the audio and image pooling heads on cached features; print each run folder.

    A complete run is skipped; a half-trained one resumes. A run whose stores changed since it was trained
    is refused (use --force to retrain it); a run that failed (NaN loss) is replaced when rerun with other
    options. A failed run does not stop the others: the command ends with exit status 1, naming them, and
    rerunning it resumes. With --executor each run is a job (docs/scale-out.md).
    """
    executor = executor.with_defaults(threads=threads)
    if threads:
        torch.set_num_threads(threads)
    if tensorboard:
        require_tensorboard()  # before any store is opened
    ctx = click.get_current_context()
    if from_run is not None:
        plan, runs_root, name = plan_from_options(ctx, from_run, out, device, allow_changed_stores)
        if tensorboard:  # event files are not part of a run's identity: asking for them changes no number
            plan.runs = [dataclasses.replace(config, tensorboard=True) for config in plan.runs]
        return train_plan(plan, runs_root, name, force, progress, executor)
    if allow_changed_stores:
        raise click.ClickException("--allow-changed-stores goes with --from RUN (a run's recorded stores)")
    if sweep_file is not None:
        sweep_file.check_command_line(ctx)
    if executor.remote:  # the jobs' machines decide; a job records what it resolved in its config.json
        click.echo(f"device {device}, precision {precision}: resolved in each job, on its machine", err=True)
    else:
        device = resolve_device(device)
        chosen = choose_precision(precision, device, reference)
        click.echo(f"precision: {chosen.name} ({chosen.reason})", err=True)
        precision = chosen.name
    plan = plan_sweep(split_values(langs), split_values(configs), split_values(seeds), split_values(widths),
                      cache_folder or layout.cache_dir(corpus), list(audio_store_opts),
                      split_values([image_store]) if image_store else [], audio_encoder, image_encoder,
                      device, epochs=epochs, batch_size=batch_size, lr_max=lr_max,
                      negatives_mode=negatives_mode, logit_mode=logit_mode, precision=precision,
                      reference=reference,
                      equal_steps=equal_steps, exclude_concepts=split_values(exclude_concepts),
                      exposures=sweep_exposures(split_values(ratios), split_values(budgets), split_values(onsets),
                                                split_values(fractions), split_values(vocab_sizes)),
                      save_epochs=save_epochs, audio_layers=parse_audio_layers(split_values(audio_layers)),
                      tensorboard=tensorboard)
    runs_root = out or layout.runs_dir(study)
    if sweep_file is not None:
        sweep_file.save_copy(runs_root, force, ctx.command)
    train_plan(plan, runs_root, name, force, progress, executor)


def plan_from_options(ctx: click.Context, from_run: Path, out: Path | None, device: str,
                      allow_changed_stores: bool) -> tuple[SweepPlan, Path, str]:
    """`--from RUN --out NEW_FOLDER`: the recorded run's plan, and the new folder as (parent, name)."""
    refuse_beside_from(ctx)
    if out is None:
        raise click.ClickException("--from needs --out NEW_FOLDER: the folder of the retrained run")
    if out.resolve() == (from_run.parent if from_run.is_file() else from_run).resolve():
        raise click.ClickException(f"--out {out} is the run given to --from: give a new folder")
    plan = plan_from_run(from_run, resolve_device(device) if given_on_command_line(ctx, "device") else None,
                         allow_changed_stores)
    return plan, out.parent, out.name


def train_plan(plan: SweepPlan, runs_root: Path, name: str | None, force: bool, progress: bool,
               executor: ExecutorSpec = ExecutorSpec()) -> None:
    """Train the plan's runs here or as jobs on `executor`, printing each run folder; for a sweep, `run i/N done
    (k failed)` lines (stderr) and a summary; exit status 1 at the end, naming the failed runs, when any failed."""
    first = plan.runs[0]
    for width, count in plan.parameter_counts().items():
        click.echo(f"W={width}: {count:,} parameters (audio D={first.audio_dim}, image D={first.image_dim})", err=True)
    total = len(plan.runs)

    def finished(i: int, run_dir: Path, result: SweepResult) -> None:
        if result.failed and result.failed[-1][0] == run_dir:
            click.echo(f"run {run_dir.name} failed: {result.failed[-1][1]}", err=True)
        if progress:
            click.echo(f"run {i}/{total} done ({len(result.failed)} failed)", err=True)

    callbacks = dict(on_done=lambda path: click.echo(summary(path)), on_finished=finished if total > 1 else None)
    if executor.kind == "local":
        result = plan.train(runs_root, name, force, progress=progress, **callbacks)
    else:
        executor = executor.with_defaults(log_folder=Path(runs_root) / "jobs")
        result = train_on_executor(plan, executor, runs_root, name, force, progress, **callbacks)
    if total > 1:
        click.echo(result.summary(), err=True)
    result.raise_for_failures()


def refuse_beside_from(ctx: click.Context) -> None:
    """`--from` retrains what the run recorded: an option that would change that is an error, not ignored."""
    given = [p for p in ctx.command.params if p.name not in FROM_OPTIONS and p.name != "help"
             and ctx.get_parameter_source(p.name) is not click.core.ParameterSource.DEFAULT]
    if given:
        names = ", ".join(p.opts[-1] if p.opts[-1].startswith("--") else p.opts[0] for p in given)
        raise RunConfigError(f"--from retrains the recorded configuration, which {names} would change; beside --from "
                             "give only --out, --device, --threads, --force, --allow-changed-stores, --tensorboard, "
                             "the executor options, -q or -v (to train other options, give them without --from)")


def summary(path: Path) -> str:
    """`<folder>  best epoch N/M: val loss …, familiar acc …%` for the line printed after each run."""
    run = RunFolder.open(path)
    best, metrics = run.best_row, run.metrics
    seconds = sum(row["seconds"] for row in metrics)
    return (f"{path}  best epoch {best['epoch']}/{len(metrics)}: val loss {best['val_loss']:.4f}, "
            f"familiar acc {100 * best['val_familiar_acc']:.1f} %; "
            f"last acc {100 * metrics[-1]['val_familiar_acc']:.1f} %; {seconds:.1f} s")


if __name__ == "__main__":
    train_heads()
