"""``extract-features``: a thin click shell over :func:`extract.run.extract_store`."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import click

from cache.clitools import CONTEXT_SETTINGS, Command, split_values, user_errors, verbosity_options
from cache.executors import ExecutorSpec, default_workers, executor_options
from cache.hardware import DEVICE_HELP, PRECISION_HELP, PRECISIONS
from cache.layout import SUFFIX_FORMAT, cache_dir
from cache.vocab import MODALITIES
from extract.corpus import load_corpus, resolve_corpus
from extract.encoders.registry import (
    DEFAULT_AUDIO_ENCODER,
    DEFAULT_IMAGE_ENCODER,
    PAPER_AUDIO_ENCODER,
    PAPER_IMAGE_ENCODER,
    load_encoder,
)
from extract.jobs import executor_map, extract_across_jobs
from extract.run import extract_store


def parse_shard(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise click.BadParameter(f"{value!r}: expected K/N with 1 <= K <= N, e.g. 2/4")
    return int(match[1]), int(match[2])


def plan_stores(corpus_languages: tuple[str, ...], langs: tuple[str, ...], modality: str | None, do_all: bool,
              ) -> list[tuple[str, str | None]]:
    """The (modality, language) stores asked for, audio first."""
    if do_all:
        if langs or modality:
            raise click.UsageError("--all already means every language and the images: drop --lang/--modality")
        return [("audio", lang) for lang in corpus_languages] + [("image", None)]
    if modality == "image":
        if langs:
            raise click.UsageError("images are extracted once for all languages: drop --lang with --modality image")
        return [("image", None)]
    if not langs:
        raise click.UsageError("say what to extract: --lang LANG (audio), --modality image, or --all")
    unknown = [lang for lang in langs if lang not in corpus_languages]
    if unknown:
        raise click.UsageError(f"language(s) {', '.join(unknown)} not in the corpus (it has: {', '.join(corpus_languages)})")
    return [("audio", lang) for lang in langs]


def parse_layers(values: list[str]) -> list[int] | str | None:
    """`--layers` values: `all`, or numbers and ranges (`0 6 12`, `0-12`, `0..12`); None when not given."""
    if not values:
        return None
    if [v.lower() for v in values] == ["all"]:
        return "all"
    chosen: list[int] = []
    for value in values:
        match = re.fullmatch(r"(\d+)(?:(?:-|\.\.)(\d+))?", value.strip())
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise click.UsageError(f"--layers {value!r}: give `all`, layer numbers or ranges low-high "
                                   "(e.g. --layers 0 6 12, --layers 0-12)")
        chosen += list(range(int(match[1]), int(match[2] if match[2] is not None else match[1]) + 1))
    return chosen


@click.command(cls=Command, context_settings={**CONTEXT_SETTINGS, "show_default": True})
@click.option("--lang", "langs", multiple=True, metavar="LANG",
              help="Extract the audio of these languages (several allowed: --lang en fr, --lang en,fr).")
@click.option("--modality", type=click.Choice(MODALITIES), default=None,
              help="audio (needs --lang) or image (once for all languages).")
@click.option("--all", "do_all", is_flag=True, help="Every language of the corpus, then the images.")
@click.option("--corpus", default="demo",
              help="Corpus name (under $VGSME_HOME/corpora) or path to a corpus folder.")
@click.option("--encoder", default=None,
              help=f"Encoder for the chosen modality: a short name ({DEFAULT_AUDIO_ENCODER}, {DEFAULT_IMAGE_ENCODER}, "
                   "whisper-base-hf (Whisper-base in transformers: hidden layers, GPU); "
                   f"the paper's {PAPER_AUDIO_ENCODER}, {PAPER_IMAGE_ENCODER}), a Hugging Face hub id or a local "
                   f"model folder. Default: {DEFAULT_AUDIO_ENCODER} for audio, {DEFAULT_IMAGE_ENCODER} for images.")
@click.option("--audio-encoder", default=DEFAULT_AUDIO_ENCODER, help="Audio encoder when --encoder is not given (e.g. with --all).")
@click.option("--image-encoder", default=DEFAULT_IMAGE_ENCODER, help="Image encoder when --encoder is not given (e.g. with --all).")
@click.option("--layer", type=int, default=None,
              help="Hidden state to store (0 = input embeddings; default: the final output). Not with --all.")
@click.option("--layers", "layers", multiple=True, metavar="all|N...",
              help="Store several hidden states in one store, along a layer axis (audio, Hugging Face encoders): "
                   "`all` (every hidden state, 0 = input embeddings) or numbers (`--layers 0 6 12`, `0-12`); "
                   "whisper-base-hf has them too; "
                   "for learned weighted sums and layer sweeps (train-heads --audio-layer). Not with --layer.")
@click.option("--format", "fmt", type=click.Choice(["hdf5", "zarr"]), default=None,
              help="Store backend. [default: hdf5, or the suffix of --out]")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="A store path (.h5/.zarr) when one store is written, or a folder for the stores. "
                   "[default: $VGSME_HOME/cache/<corpus>/]")
@click.option("--device", default="auto", help=f"Where the encoder runs: {DEVICE_HELP}.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto",
              help=f"Compute precision of the encoder, recorded in each store (a store made in another precision "
                   f"is refused as different): {PRECISION_HELP}. For extraction auto keeps fp32 on a CPU: bf16 "
                   "is faster there but moves the features far more than the float16 store does "
                   "(docs/extraction.md). whisper-base runs in CTranslate2, which has no bf16 on CPUs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16,
              help="Items per forward pass and per committed batch (audio batches are length-sorted).")
@click.option("--shard", callback=parse_shard, default=None, metavar="K/N",
              help="Extract only shard K of N (round-robin) into its own store; readers open the N shards as one.")
@click.option("--skip-bad", is_flag=True,
              help="Leave out bad items instead of stopping: missing, unreadable, truncated, empty or too-short "
                   "media, segments outside their file, items the encoder fails on or gives NaN/Inf for. "
                   "Each is listed with its reason in the store's skipped table.")
@click.option("--force", is_flag=True,
              help="Rebuild a store that was made from other inputs (encoder, layer, precision, corpus) instead of "
                   "refusing.")
@click.option("--jobs", "n_jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="With an --executor other than local: cut each store into N parts, one job each (job j encodes "
                   "the batches j, j+N, ... that a local run forms, so the assembled store is byte-identical to a "
                   "local one; docs/extraction.md) [default: --workers, else one per GPU, else one per core].")
@executor_options
@verbosity_options
@user_errors
def extract_features(langs, modality, do_all, corpus, encoder, audio_encoder, image_encoder, layer, layers, fmt, out,
                     device, precision, batch_size, shard, skip_bad, force, progress, n_jobs,
                     executor: ExecutorSpec) -> None:
    """Run frozen encoders once over a corpus and write float16 feature stores.

    \b
    extract-features --lang fr            French audio of the demo corpus, default encoder
    extract-features --modality image     the images (shared by all languages)
    extract-features --all                every language and the images
    extract-features --lang en --encoder wavlm-base-plus --device cuda   the paper's audio encoder

    An interrupted run resumes when rerun with the same options; a complete store that matches is left as is.
    With --executor each store is extracted as --jobs parts on that engine (docs/scale-out.md), giving the
    same bytes; a failed or killed job is resumed by rerunning the command.
    A bad item stops the run naming it, its file and the reason (or is skipped with --skip-bad).
    Prints the path of each store.
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars would bury ours
    if do_all and encoder:
        raise click.UsageError("with --all choose encoders with --audio-encoder / --image-encoder")
    if do_all and layer is not None:
        raise click.UsageError("--layer applies to one encoder: extract audio and images separately to use it")
    layer_list = parse_layers(split_values(layers))
    if layer is not None and layer_list is not None:
        raise click.UsageError("--layer takes one hidden state and --layers several: give one of them")
    if layer_list is not None and (do_all or modality == "image"):
        raise click.UsageError("--layers is for audio stores (image stores hold one layer): use it with --lang")
    if executor.kind == "local" and n_jobs is not None:
        raise click.UsageError("--jobs cuts a store into jobs for an --executor (processes, dask, submitit): "
                               "give one, or drop --jobs")
    if executor.kind != "local" and shard is not None:
        raise click.UsageError("--shard K/N extracts one shard here; with --executor the store is cut into --jobs "
                               "parts and assembled: drop --shard")
    root = resolve_corpus(corpus)
    loaded = load_corpus(root, check_media=not skip_bad)
    stores = plan_stores(loaded.languages, tuple(split_values(langs)), modality, do_all)
    if out is not None and out.suffix in SUFFIX_FORMAT and len(stores) > 1:
        raise click.UsageError(f"--out {out} names one store but {len(stores)} are to be written: give a folder")
    target = out if out is not None else cache_dir(loaded.name)
    if executor.kind != "local":
        folder = target.parent if target.suffix in SUFFIX_FORMAT else target
        executor = executor.with_defaults(log_folder=folder / "jobs")
        count = n_jobs or executor.workers or default_workers()
        for store_modality, lang in stores:
            name = encoder or (audio_encoder if store_modality == "audio" else image_encoder)
            options = {"layer": layer, "layers": layer_list, "device": device, "precision": precision}
            click.echo(str(extract_across_jobs(loaded, store_modality, lang, name, options, target, fmt, batch_size,
                                               count, skip_bad, force, progress, executor_map(executor, progress))))
        return
    encoders = {}
    for store_modality, lang in stores:
        name = encoder or (audio_encoder if store_modality == "audio" else image_encoder)
        if name not in encoders:
            encoders[name] = load_encoder(name, modality=store_modality, layer=layer, device=device, precision=precision,
                                          layers=layer_list)
        path = extract_store(loaded, store_modality, lang, encoders[name], target, fmt=fmt, batch_size=batch_size,
                             shard=shard, skip_bad=skip_bad, force=force, progress=progress)
        click.echo(str(path))


if __name__ == "__main__":
    extract_features()
