"""From `train-heads` options to trained runs: find the stores, plan one `RunConfig` per run, train them.

`plan_sweep` does every check that needs no training (languages, seeds, widths, stores, dims, the
`--audio-store` languages), so a sweep with a typo fails in a second, before its first run starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cache import layout
from train.loop import LoadedStores, train_sweep
from train.model import TwoTower
from train.runs import RunConfig, RunConfigError, parse_seeds, plan_runs


@dataclass
class SweepPlan:
    """The runs to train and the stores they share (opened once, loaded into memory once)."""

    runs: list[RunConfig]
    stores: LoadedStores

    def parameter_counts(self) -> dict[int, int]:
        """Parameters of the model of each width, in the order the widths were asked."""
        first = self.runs[0]
        return {width: TwoTower(first.audio_dim, first.image_dim, width).parameter_count()
                for width in dict.fromkeys(run.width for run in self.runs)}

    def train(self, runs_root: Path, name: str | None = None, force: bool = False, progress: bool = True,
              on_done: Callable[[Path], None] | None = None) -> list[Path]:
        """Train every run under `runs_root` (see `train.loop.train_sweep`); returns the run folders."""
        return train_sweep(self.runs, runs_root, name, force, progress=progress, on_done=on_done, stores=self.stores)


def language_sets(langs: list[str], configs: list[str]) -> list[list[str]]:
    """The languages of each run: `--langs en fr` is one bilingual run, `--configs en en+fr` two runs."""
    if bool(langs) == bool(configs):
        raise RunConfigError("give the languages of one run with --langs (e.g. --langs en fr) or several "
                             "configurations with --configs (e.g. --configs en fr en+fr), not both or neither")
    sets = [langs] if langs else [config.split("+") for config in configs]
    for langs_of_run in sets:
        if not all(langs_of_run) or len(set(langs_of_run)) != len(langs_of_run):
            raise RunConfigError(f"languages {'+'.join(langs_of_run)!r}: each language once, joined by + "
                                 "(e.g. en+fr)")
    return sets


def parse_audio_store_options(options: list[str], langs: set[str]) -> dict[str, list[str]]:
    """`--audio-store LANG=PATH[,PATH...]` values by language; a language no run trains is an error."""
    explicit: dict[str, list[str]] = {}
    for option in options:
        key, sep, paths = option.partition("=")
        if not sep or not key or not paths:
            raise RunConfigError(f"--audio-store {option!r}: write it as LANG=PATH (e.g. en=cache/audio-en.x.h5)")
        if key not in langs:
            raise RunConfigError(f"--audio-store {option!r}: no run trains on {key!r} (the runs' languages: "
                                 f"{', '.join(sorted(langs))})")
        explicit[key] = explicit.get(key, []) + paths.split(",")
    return explicit


def plan_sweep(langs: list[str], configs: list[str], seeds: str, widths: list[str], cache_folder: Path,
               audio_store_options: list[str], image_store: list[str], audio_encoder: str | None,
               image_encoder: str | None, device: str, **options) -> SweepPlan:
    """The runs of the options (one per language set × width × seed) and their opened stores.

    Stores come from `--audio-store` / `--image-store` when given, else from `cache_folder` (one per
    language and the image store; `audio_encoder` / `image_encoder` pick one when it holds several).
    `options` are the other `RunConfig` fields (epochs, lr_max, exclude_concepts, ...) and `exposures`
    (`train.exposure.sweep_exposures`: the runs are their product with language sets, widths and seeds).
    """
    lang_sets = language_sets(langs, configs)
    seed_list = parse_seeds(",".join(seeds))
    try:
        width_list = [int(w) for w in widths]
    except ValueError:
        raise RunConfigError(f"--widths {' '.join(widths)}: widths are whole numbers (multiples of 64)") from None
    bad = [w for w in width_list if w <= 0 or w % 64]
    if bad:
        raise RunConfigError(f"--widths {' '.join(map(str, bad))}: a width is a positive multiple of 64 "
                             "(the heads have width/64 attention heads; the paper: 128 256 512)")
    all_langs = {lang for s in lang_sets for lang in s}
    explicit = parse_audio_store_options(audio_store_options, all_langs)
    audio_stores = {lang: explicit.get(lang) or [str(p) for p in layout.find_stores(cache_folder, "audio", lang,
                                                                                     encoder=audio_encoder)]
                    for lang in sorted(all_langs)}
    image_paths = image_store or [str(p) for p in layout.find_stores(cache_folder, "image", encoder=image_encoder)]
    stores = LoadedStores(device)
    audio_dims = {lang: stores.store(paths).dim for lang, paths in audio_stores.items()}
    if len(set(audio_dims.values())) > 1:
        raise RunConfigError(f"the audio stores have different dims {audio_dims}: pick one encoder with "
                             "--audio-encoder")
    images = stores.store(image_paths).items
    familiar = set(images.concept[(images.kind == "familiar") & (images.split == "train")].tolist())
    for exposure in options.get("exposures") or []:
        exposure.check_vocabulary(len(familiar - set(options.get("exclude_concepts") or [])))
    runs = plan_runs(lang_sets, width_list, seed_list, audio_stores, image_paths, audio_dims.popitem()[1],
                     stores.store(image_paths).dim, device=device, **options)
    return SweepPlan(runs, stores)
