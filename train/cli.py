"""`train-heads`: train the pooling heads on cached features, one run or a sweep (a thin shell over train.loop)."""
from __future__ import annotations

import os

# Before torch loads OpenMP: worker threads that wait by sleeping rather than spinning. On a 2-core machine
# that other jobs keep busy, spinning threads made a training step 5-10x slower (bench/train_step.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
import torch  # noqa: E402

from cache import layout  # noqa: E402
from cache.hardware import PRECISION_HELP, PRECISIONS  # noqa: E402
from train.loop import LoadedStores, choose_precision, resolve_device, train_sweep  # noqa: E402
from train.model import LOGIT_MODES, TwoTower  # noqa: E402
from train.runs import RunConfigError, load_run, parse_seeds, plan_runs  # noqa: E402
from train.sampler import NEGATIVE_MODES  # noqa: E402

# Options that take several space-separated values (`--langs en fr`), as well as commas (`--langs en,fr`).
GREEDY_OPTIONS = ("--langs", "--configs", "--seeds", "--widths", "--width")


class GreedyCommand(click.Command):
    """Rewrites `--langs en fr` into `--langs en --langs fr` before click parses (click takes one value per
    occurrence); values continue until the next token that starts with `-`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rewritten, current = [], None
        for token in args:
            if token in GREEDY_OPTIONS:
                current = token
                continue
            if token.startswith("-"):
                current = None
            elif current is not None:
                rewritten += [current, token]
                continue
            rewritten.append(token)
        return super().parse_args(ctx, rewritten)


def split_values(values: tuple[str, ...]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


@click.command(cls=GreedyCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--langs", multiple=True, metavar="LANG...",
              help="Languages of ONE run (two = a bilingual run), e.g. `--langs en fr`.")
@click.option("--configs", multiple=True, metavar="CONFIG...",
              help="Several language configurations, e.g. `--configs en fr nl en+fr en+nl fr+nl`.")
@click.option("--seeds", default=("0",), multiple=True, show_default=True, metavar="SEEDS",
              help="Seeds: ranges and lists, e.g. `0-4`, `0 1 2`, `0,3`.")
@click.option("--widths", "--width", "widths", default=("256",), multiple=True, show_default=True, metavar="W...",
              help="Width W = embedding size E (multiples of 64; the paper: 128 256 512).")
@click.option("--corpus", default="demo", show_default=True, help="Corpus whose cache holds the stores.")
@click.option("--cache", "cache_folder", type=click.Path(file_okay=False, path_type=Path),
              help="Cache folder to find stores in [default: $VGSME_HOME/cache/<corpus>].")
@click.option("--audio-store", "audio_store_opts", multiple=True, metavar="LANG=PATH[,PATH...]",
              help="Audio store of a language (shards separated by commas); repeat per language.")
@click.option("--image-store", metavar="PATH[,PATH...]", help="Image store (shards separated by commas).")
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
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help=f"Autocast precision, fp32 master weights either way: {PRECISION_HELP}. The resolved one is "
              "printed and recorded in config.json.")
@click.option("--reference", is_flag=True, help="Reference mode, to check the fast path: embed every sampled "
              "occurrence separately (own dropout masks) in fp32 through the full transformer layer, as the "
              "authors' code does (several times slower; recorded in config.json).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--study", default="main", show_default=True, help="Runs go to $VGSME_HOME/runs/<study>/.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to put the run folders in, instead of $VGSME_HOME/runs/<study>.")
@click.option("--name", help="Folder name of a single run (default <langs>-w<width>-s<seed>).")
@click.option("--force", is_flag=True, help="Retrain runs that are complete (their folders are replaced).")
@click.option("--threads", type=click.IntRange(1), help="torch CPU threads [default: torch's choice, one per "
              "core]; 1 is faster when other jobs keep the cores busy.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_heads(langs, configs, seeds, widths, corpus, cache_folder, audio_store_opts, image_store, audio_encoder,
                image_encoder, epochs, batch_size, lr_max, negatives_mode, logit_mode, equal_steps, precision, device, study,
                out, name, force, threads, quiet, reference) -> None:
    """Train the audio and image pooling heads on cached features; print each run folder."""
    logging.basicConfig(level=logging.WARNING)
    if threads:
        torch.set_num_threads(threads)
    try:
        lang_sets = language_sets(split_values(langs), split_values(configs))
        cache_folder = cache_folder or layout.cache_dir(corpus)
        audio_stores = {lang: resolve_store(cache_folder, "audio", lang, audio_encoder, audio_store_opts)
                        for lang in sorted({lang for s in lang_sets for lang in s})}
        image_paths = (image_store.split(",") if image_store
                       else [str(p) for p in layout.find_stores(cache_folder, "image", encoder=image_encoder)])
        device = resolve_device(device)
        chosen = choose_precision(precision, device, reference)
        click.echo(f"precision: {chosen.name} ({chosen.reason})", err=True)
        stores = LoadedStores(device)
        audio_dims = {lang: stores.store(paths).dim for lang, paths in audio_stores.items()}
        if len(set(audio_dims.values())) > 1:
            raise RunConfigError(f"the audio stores have different dims {audio_dims}: pick one encoder with "
                                 "--audio-encoder")
        runs = plan_runs(lang_sets, [int(w) for w in split_values(widths)], parse_seeds(",".join(seeds)),
                         audio_stores, image_paths, audio_dims.popitem()[1], stores.store(image_paths).dim,
                         epochs=epochs, batch_size=batch_size, lr_max=lr_max, negatives_mode=negatives_mode,
                         logit_mode=logit_mode, precision=chosen.name, equal_steps=equal_steps, device=device,
                         reference=reference)
        for width in dict.fromkeys(run.width for run in runs):
            count = TwoTower(runs[0].audio_dim, runs[0].image_dim, width).parameter_count()
            click.echo(f"W={width}: {count:,} parameters (audio D={runs[0].audio_dim}, image D={runs[0].image_dim})",
                       err=True)
        train_sweep(runs, out or layout.runs_dir(study), name, force, progress=not quiet,
                    on_done=lambda path: click.echo(summary(path)), stores=stores)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error


def language_sets(langs: list[str], configs: list[str]) -> list[list[str]]:
    if bool(langs) == bool(configs):
        raise RunConfigError("give the languages of one run with --langs (e.g. --langs en fr) or several "
                             "configurations with --configs (e.g. --configs en fr en+fr), not both or neither")
    return [langs] if langs else [config.split("+") for config in configs]


def resolve_store(cache_folder: Path, modality: str, lang: str, encoder: str | None,
                  explicit: tuple[str, ...]) -> list[str]:
    """The store paths of a language: from `--audio-store LANG=PATH` when given, else found in the cache."""
    for option in explicit:
        key, sep, paths = option.partition("=")
        if not sep:
            raise RunConfigError(f"--audio-store {option!r}: write it as LANG=PATH (e.g. en=cache/audio-en.x.h5)")
        if key == lang:
            return paths.split(",")
    return [str(p) for p in layout.find_stores(cache_folder, modality, lang, encoder=encoder)]


def summary(path: Path) -> str:
    """`<folder>  best epoch N: val loss …, familiar acc …` for the line printed after each run."""
    run = load_run(path)
    best = min(run.metrics, key=lambda row: row["val_loss"])
    seconds = sum(row["seconds"] for row in run.metrics)
    return (f"{path}  best epoch {best['epoch']}/{len(run.metrics)}: val loss {best['val_loss']:.4f}, "
            f"familiar acc {best['val_familiar_acc']:.3f}; last acc {run.metrics[-1]['val_familiar_acc']:.3f}; "
            f"{seconds:.1f} s")
