"""Finding the runs of a study and what each run was trained on (its config.json and stores).

A target on the command line is a run folder (it holds config.json), a folder of runs (a study: its
sub-folders that hold config.json), or, with `--study NAME`, `$VGSME_HOME/runs/NAME`. Only complete runs
are analysed: a run still training has no final best checkpoint, and mixing it in would change numbers
later without notice.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cache.store import FeatureStore, open_store as open_feature_store
from cache.layout import runs_dir, vgsme_home


class StudyError(ValueError):
    """A target is not a run or a folder of runs, or a run cannot be analysed yet."""


@dataclass(frozen=True)
class RunInfo:
    """A run folder and the facts about it that analyses group and bind by."""

    path: Path
    langs: tuple[str, ...]
    width: int
    seed: int
    equal_steps: bool
    audio_stores: dict[str, tuple[Path, ...]]
    image_store: tuple[Path, ...]
    config: dict = field(repr=False, compare=False, hash=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def train_langs(self) -> str:
        """The training language set as Table 1 groups it: `en+fr`; the equal-steps control adds `-eq`."""
        return "+".join(self.langs) + ("-eq" if self.equal_steps else "")

    @property
    def analysis_dir(self) -> Path:
        return self.path / "analysis"

    @property
    def checkpoint(self) -> Path:
        return self.path / "best.safetensors"

    def labels(self) -> dict:
        """The columns every per-run table carries."""
        return {"run": self.name, "train_langs": self.train_langs, "width": self.width, "seed": self.seed}


def first_seed_runs(runs: list[RunInfo]) -> list[RunInfo]:
    """The first seed of each configuration: one picture per model."""
    seen, out = set(), []
    for run in sorted(runs, key=lambda r: (r.train_langs, r.width, r.seed)):
        if (run.train_langs, run.width) not in seen:
            seen.add((run.train_langs, run.width))
            out.append(run)
    # bilingual models first, the paper's EN–NL leading
    return sorted(out, key=lambda r: (r.train_langs != "en+nl", len(r.langs) == 1, r.train_langs, r.width))


def _store_path(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else vgsme_home() / path


def read_run(path: Path, allow_incomplete: bool = False) -> RunInfo:
    """The run in `path`; refuses a run whose training is not complete (unless allowed)."""
    path = Path(path).resolve()
    config_file = path / "config.json"
    if not config_file.exists():
        raise StudyError(f"{path} is not a run folder (no config.json); train it with train-heads")
    config = json.loads(config_file.read_text())
    missing = [k for k in ("langs", "width", "seed", "audio_stores", "image_store") if k not in config]
    if missing:
        raise StudyError(f"{config_file} lacks {missing}; was it written by train-heads?")
    if config.get("status") != "complete" and not allow_incomplete:
        raise StudyError(f"run {path} is not complete (status {config.get('status')!r}); "
                         "finish it with the same train-heads command, or leave it out")
    if not (path / "best.safetensors").exists():
        raise StudyError(f"run {path} has no best.safetensors; rerun train-heads to resume it")
    langs = tuple(config["langs"])
    if len(config["audio_stores"]) != len(langs):
        raise StudyError(f"{config_file}: {len(langs)} languages but {len(config['audio_stores'])} audio stores")
    audio = {lang: tuple(_store_path(p) for p in ps) for lang, ps in zip(langs, config["audio_stores"])}
    return RunInfo(path, langs, int(config["width"]), int(config["seed"]), bool(config.get("equal_steps", False)),
                   audio, tuple(_store_path(p) for p in config["image_store"]), config)


def find_runs(targets: list[Path], study: str | None = None, allow_incomplete: bool = False) -> list[RunInfo]:
    """The runs named by `targets` and/or `study`, each once, sorted by (train_langs, width, seed)."""
    folders = [Path(t) for t in targets]
    if study:
        folders.append(runs_dir(study))
    if not folders:
        raise StudyError("name runs: give run folders, a folder of runs, or --study NAME")
    runs: dict[Path, RunInfo] = {}
    for folder in folders:
        if not folder.is_dir():
            raise StudyError(f"{folder} does not exist (runs live in $VGSME_HOME/runs/<study>/)")
        if (folder / "config.json").exists():
            candidates = [folder]
        else:
            candidates = sorted(p for p in folder.iterdir() if (p / "config.json").exists())
            if not candidates:
                raise StudyError(f"{folder} holds no run folders (sub-folders with config.json)")
        for c in candidates:
            run = read_run(c, allow_incomplete)
            runs[run.path] = run
    return sorted(runs.values(), key=lambda r: (len(r.langs), r.train_langs, r.width, r.seed))


def study_name(runs: list[RunInfo], study: str | None) -> str:
    """The study's name: given, or the common parent folder's name of the runs."""
    if study:
        return study
    parents = {r.path.parent.name for r in runs}
    return parents.pop() if len(parents) == 1 else "study"


@functools.lru_cache(maxsize=32)
def open_store(paths: tuple[Path, ...]) -> FeatureStore:
    """A store (or shard set), opened once per process: several runs share their stores."""
    return open_feature_store(list(paths) if len(paths) > 1 else paths[0])


def items_frame(store: FeatureStore, modality: str) -> pd.DataFrame:
    """The store's item table as a DataFrame with the columns of items.csv."""
    t = store.items
    return pd.DataFrame({"id": t.ids, "modality": modality, "concept": t.concept, "kind": t.kind,
                         "lang": t.lang if modality == "audio" else "", "source": t.source, "split": t.split})


def episodes_dir(run: RunInfo) -> Path:
    """Episodes live beside the stores they were drawn from: `cache/<corpus>/episodes/`."""
    return run.image_store[0].parent / "episodes"


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a CSV under a temporary name and rename it, so a reader never sees half a table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def write_text(text: str, path: Path) -> Path:
    """Atomic text write (JSON, Markdown, LaTeX, HTML)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
