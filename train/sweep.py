"""From `train-heads` options to trained runs: find the stores, plan one `RunConfig` per run, train them.

`plan_sweep` does every check that needs no training (languages, seeds, widths, stores, dims, the
`--audio-store` languages), so a sweep with a typo fails in a second, before its first run starts.
`plan_from_run` plans the retraining of a recorded run (`train-heads --from`) on the stores it recorded.
Training a plan goes on past a failed run (a NaN loss, changed stores) so that one bad run does not cost the
rest of a sweep; the failures are reported together at the end.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cache import layout
from cache.hardware import resolve_device
from train.layers import AudioLayer, check_audio_layer
from train.loop import LoadedStores, train_sweep
from train.model import TwoTower
from train.runs import (RunConfig, RunConfigError, RunFolder, RunFolderError, StaleStoreError, parse_seeds,
                        plan_runs)


class SweepFailed(ValueError):
    """Some runs of a sweep failed (the others were trained): names each with its reason."""


@dataclass
class SweepResult:
    """What became of each run of a sweep, in the order they were trained."""

    complete: list[Path] = field(default_factory=list)  # trained (or resumed) to the end now
    skipped: list[Path] = field(default_factory=list)  # already complete: not retrained
    failed: list[tuple[Path, str]] = field(default_factory=list)  # with the reason

    def record(self, run_dir: Path, ok: bool, was_complete: bool = False, error: str | None = None) -> None:
        """File one run's ending: trained, skipped (it was complete already) or failed with `error`."""
        if not ok:
            self.failed.append((run_dir, error or "failed"))
        else:
            (self.skipped if was_complete else self.complete).append(run_dir)

    @property
    def total(self) -> int:
        return len(self.complete) + len(self.skipped) + len(self.failed)

    def summary(self) -> str:
        """`N runs: a complete, b skipped (already complete), c failed`."""
        return (f"{self.total} runs: {len(self.complete)} complete, {len(self.skipped)} skipped (already complete), "
                f"{len(self.failed)} failed")

    def raise_for_failures(self) -> None:
        """`SweepFailed` naming every failed run and why (a single run's error as it was); rerunning resumes."""
        if not self.failed:
            return
        if self.total == 1:
            raise SweepFailed(self.failed[0][1])
        raise SweepFailed(f"{len(self.failed)} of {self.total} runs failed:\n  "
                          + "\n  ".join(f"{path.name}: {reason}" for path, reason in self.failed)
                          + "\nrerun the same command to retry them after the fix (complete runs are skipped)")


@dataclass
class SweepPlan:
    """The runs to train and the stores they share (opened once, loaded into memory once)."""

    runs: list[RunConfig]
    stores: LoadedStores

    def parameter_counts(self) -> dict[int, int]:
        """Parameters of the model of each width, in the order the widths were asked."""
        first = self.runs[0]
        return {width: TwoTower(first.audio_dim, first.image_dim, width,
                                audio_layers=first.weighted_layers).parameter_count()
                for width in dict.fromkeys(run.width for run in self.runs)}

    def train(self, runs_root: Path, name: str | None = None, force: bool = False, progress: bool = True,
              on_done: Callable[[Path], None] | None = None,
              on_finished: Callable[[int, Path, SweepResult], None] | None = None) -> SweepResult:
        """Train every run under `runs_root` (each as `train.loop.train_sweep` does), on past a failed one.

        `on_done(path)` follows each run that is complete (trained or skipped); `on_finished(i, run_dir, result)`
        each run, failed or not (i counts from 1). A failed run raises nothing here: see `raise_for_failures`.
        """
        if name is not None and len(self.runs) != 1:
            raise RunConfigError(f"--name names one run folder, but {len(self.runs)} runs were asked for")
        result = SweepResult()
        for i, config in enumerate(self.runs, 1):
            run_dir = Path(runs_root) / (name or config.folder_name())
            try:
                was_complete = train_one(config, runs_root, name, force, progress, self.stores)
            except (ValueError, OSError) as error:  # this run's fault: the others may still train
                result.record(run_dir, False, error=str(error))
            else:
                result.record(run_dir, True, was_complete)
                if on_done is not None:
                    on_done(run_dir)
            if on_finished is not None:
                on_finished(i, run_dir, result)
        return result


def train_one(config: RunConfig, runs_root: Path, name: str | None, force: bool, progress: bool,
              stores: LoadedStores) -> bool:
    """Train (resume, or skip) one run as `train.loop.train_sweep` does; whether it was complete already."""
    run_dir = Path(runs_root) / (name or config.folder_name())
    was_complete = not force and RunFolder.is_run_folder(run_dir) and RunFolder.open(run_dir).status == "complete"
    train_sweep([config], runs_root, name, force, progress=progress, stores=stores)
    return was_complete


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


def find_audio_store(cache_folder: Path, lang: str, encoder: str | None, layered: bool) -> list[str]:
    """The audio store of `lang` in the cache: with `layered` (an `--audio-layer` was given) a store with a
    layer axis is preferred, else a store of one layer; when the cache has only the other kind, that one
    (whose layers `check_audio_layer` then checks)."""
    try:
        found = layout.find_stores(cache_folder, "audio", lang, encoder=encoder, layered=layered)
    except layout.StoreNotFound:
        found = layout.find_stores(cache_folder, "audio", lang, encoder=encoder)
    return [str(p) for p in found]


def plan_sweep(langs: list[str], configs: list[str], seeds: str, widths: list[str], cache_folder: Path,
               audio_store_options: list[str], image_store: list[str], audio_encoder: str | None,
               image_encoder: str | None, device: str, audio_layers: list[AudioLayer] | None = None,
               **options) -> SweepPlan:
    """The runs of the options (one per language set × width × seed) and their opened stores.

    Stores come from `--audio-store` / `--image-store` when given, else from `cache_folder` (one per
    language and the image store; `audio_encoder` / `image_encoder` pick one when it holds several).
    `options` are the other `RunConfig` fields (epochs, lr_max, exclude_concepts, ...) and `exposures`
    (`train.exposure.sweep_exposures`: the runs are their product with language sets, widths and seeds).
    `audio_layers` (`train.layers.parse_audio_layers`) sweep too; each is checked against every audio store.
    """
    audio_layers = audio_layers or [None]
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
    layered = any(layer is not None for layer in audio_layers)
    audio_stores = {lang: explicit.get(lang) or find_audio_store(cache_folder, lang, audio_encoder, layered)
                    for lang in sorted(all_langs)}
    image_paths = image_store or [str(p) for p in layout.find_stores(cache_folder, "image", encoder=image_encoder)]
    stores = LoadedStores(device)
    audio_dims = {lang: stores.store(paths).dim for lang, paths in audio_stores.items()}
    if len(set(audio_dims.values())) > 1:
        raise RunConfigError(f"the audio stores have different dims {audio_dims}: pick one encoder with "
                             "--audio-encoder")
    store_layers = {lang: stores.store(paths).layers for lang, paths in audio_stores.items()}
    if len(set(store_layers.values())) > 1:
        raise RunConfigError(f"the audio stores hold different layers "
                             f"{ {lang: None if v is None else list(v) for lang, v in store_layers.items()} }: "
                             "extract every language with the same --layers")
    for layer in audio_layers:
        for paths in audio_stores.values():
            check_audio_layer(layer, stores.store(paths), ",".join(paths))
    layers_held = next(iter(store_layers.values()))
    images = stores.store(image_paths).items
    familiar = set(images.concept[(images.kind == "familiar") & (images.split == "train")].tolist())
    for exposure in options.get("exposures") or []:
        exposure.check_vocabulary(len(familiar - set(options.get("exclude_concepts") or [])))
    runs = plan_runs(lang_sets, width_list, seed_list, audio_stores, image_paths, audio_dims.popitem()[1],
                     stores.store(image_paths).dim, device=device, audio_layers=audio_layers,
                     audio_store_layers=None if layers_held is None else list(layers_held), **options)
    return SweepPlan(runs, stores)


def plan_from_run(source: Path, device: str | None = None, allow_changed_stores: bool = False) -> SweepPlan:
    """The run recorded in `source` (a run folder or its config.json) as a plan of one, on its recorded stores.

    Every `RunConfig` value comes from config.json (a field an older run did not record takes its default);
    `device` replaces the recorded device (it does not change the numbers on CPU). A store that is missing is
    refused; one whose fingerprint differs from the recorded one too, unless `allow_changed_stores` (the run
    is then retrained on the stores as they are now: a new run, not a reproduction).
    """
    folder = open_recorded_run(Path(source))
    recorded = folder.config
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values = {k: v for k, v in recorded.items() if k in fields}
    values["audio_stores"] = [[str(p) for p in paths] for paths in folder.audio_stores.values()]
    values["image_store"] = [str(p) for p in folder.image_store]
    values["device"] = device or resolve_device(values.get("device", "cpu"))  # a recorded GPU may be absent now
    stores = LoadedStores(values["device"])
    changes = folder.stale_stores(lambda paths: stores.store([str(p) for p in paths]))
    missing = [change for change in changes if change.current is None]
    if missing or (changes and not allow_changed_stores):
        lines = "\n  ".join(change.describe() for change in changes)
        fix = ("restore or re-extract the missing store(s) with extract-features" if missing else
               "re-extract the stores as they were (their recorded provenance is in config.json), or pass "
               "--allow-changed-stores to retrain on the stores as they are now (a new run, not a reproduction)")
        raise StaleStoreError(f"cannot retrain {folder.path} as recorded:\n  {lines}\n{fix}")
    first = values["audio_stores"][0]
    values["audio_dim"], values["image_dim"] = stores.store(first).dim, stores.store(values["image_store"]).dim
    try:
        config = RunConfig(**values)
    except (TypeError, ValueError) as error:
        raise RunFolderError(f"{folder.config_path} does not describe a run this version can train ({error}); "
                             "train it anew with the options of its config.json") from None
    return SweepPlan([config], stores)


def open_recorded_run(source: Path) -> RunFolder:
    """The run folder named by `--from`: the folder itself, or the path of its config.json."""
    if source.is_file():
        if source.name != "config.json":
            raise RunFolderError(f"--from {source}: give a run folder or the config.json inside one")
        source = source.parent
    return RunFolder.open(source)
