"""`vgsme-demo-corpus`: build the offline demo corpus under $VGSME_HOME/corpora/demo."""
from __future__ import annotations

import logging
from pathlib import Path

import click

from cache.layout import corpus_dir
from extract.demo.artwork import ArtworkMissing
from extract.demo.build import BuildParams, DemoBuildError, build_demo_corpus, items_per_concept
from extract.demo.concepts import LANGUAGES
from extract.demo.voices import SilentToken, SpeechToolsMissing


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Corpus folder to build. Default: $VGSME_HOME/corpora/demo ($VGSME_HOME defaults to ./workspace).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of every random choice (voices, rate, pitch, styles, scenes); the same seed gives the "
                   "same files, byte for byte.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiplier of the corpus size: 1 gives 40 spoken tokens per concept and language and 60 "
                   "pictures per concept; 0.1 a tiny corpus for tests; 5 a bigger study (at least 3 of each).")
@click.option("--langs", default=",".join(LANGUAGES), show_default=True,
              help="Comma-separated languages to speak the words in (any of en, fr, nl).")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Worker processes for synthesis and drawing.")
@click.option("--force", is_flag=True,
              help="Rebuild even if a complete corpus is already at --out (needed to change its --seed, "
                   "--scale or --langs in place).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def demo_corpus(out: Path | None, seed: int, scale: float, langs: str, workers: int, force: bool, quiet: bool) -> None:
    """Build the demo corpus offline: 32 concepts spoken in en/fr/nl by synthetic voices (MBROLA, Piper,
    espeak-ng) and drawn from open emoji artwork sets, with train/valid/test splits, credits and licences,
    a contact sheet and an audio listing. Rerunning on a complete corpus does nothing."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    out = out or corpus_dir("demo")
    params = BuildParams(seed=seed, scale=scale, langs=tuple(x.strip() for x in langs.split(",") if x.strip()))
    try:
        result = build_demo_corpus(out, params, workers=workers, force=force, progress=not quiet)
    except (DemoBuildError, SpeechToolsMissing, SilentToken, ArtworkMissing) as e:
        raise click.ClickException(str(e)) from None
    if result.built:
        n_tokens, n_images = items_per_concept(scale)
        click.echo(f"built {result.root}: {result.n_audio} spoken words ({n_tokens} per concept and language), "
                   f"{result.n_images} pictures ({n_images} per concept) in {result.seconds:.0f} s", err=True)
    else:
        click.echo(f"{result.root} is already complete with these parameters: nothing to do", err=True)
