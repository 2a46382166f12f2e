"""`vgsme-demo-corpus`: build the offline demo corpus under $VGSME_HOME/corpora/demo."""
from __future__ import annotations

from pathlib import Path

import click

from cache.clitools import Command, split_values, user_errors, verbosity_options
from cache.layout import corpus_dir
from extract.demo.build import BuildParams, build_demo_corpus, items_per_concept
from extract.demo.concepts import LANGUAGES


@click.command(cls=Command)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Corpus folder to build. Default: $VGSME_HOME/corpora/demo ($VGSME_HOME defaults to ./workspace).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of every random choice (voices, rate, pitch, styles, scenes); the same seed gives the "
                   "same files, byte for byte.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiplier of the corpus size: 1 gives 40 spoken tokens per concept and language and 60 "
                   "pictures per concept; 0.1 a tiny corpus for tests; 5 a bigger study (at least 3 of each).")
@click.option("--langs", multiple=True, default=LANGUAGES, show_default=True,
              help="Languages to speak the words in (any of en, fr, nl; several allowed: --langs en fr, "
                   "--langs en,fr).")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Worker processes for synthesis and drawing.")
@click.option("--force", is_flag=True,
              help="Rebuild even if a complete corpus is already at --out (needed to change its --seed, "
                   "--scale or --langs in place).")
@verbosity_options
@user_errors
def demo_corpus(out: Path | None, seed: int, scale: float, langs: tuple[str, ...], workers: int, force: bool,
                progress: bool) -> None:
    """Build the demo corpus offline: 32 concepts spoken in en/fr/nl by synthetic voices (MBROLA, Piper,
    espeak-ng) and drawn from open emoji artwork sets, with train/valid/test splits, credits and licences,
    a contact sheet and an audio listing. Rerunning on a complete corpus does nothing."""
    out = out or corpus_dir("demo")
    params = BuildParams(seed=seed, scale=scale, langs=tuple(split_values(langs)))
    result = build_demo_corpus(out, params, workers=workers, force=force, progress=progress)
    if result.built:
        n_tokens, n_images = items_per_concept(scale)
        click.echo(f"built {result.root}: {result.n_audio} spoken words ({n_tokens} per concept and language), "
                   f"{result.n_images} pictures ({n_images} per concept) in {result.seconds:.0f} s", err=True)
    else:
        click.echo(f"{result.root} is already complete with these parameters: nothing to do", err=True)


if __name__ == "__main__":
    demo_corpus()
