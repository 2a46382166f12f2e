"""Finding the runs of a study and what each run was trained on (its config.json and stores).

A target on the command line is a run folder (it holds config.json), a folder of runs (a study: its
sub-folders that hold config.json), or, with `--study NAME`, `$VGSME_HOME/runs/NAME`. Only complete runs
are analysed: a run still training has no final best checkpoint, and mixing it in would change numbers
later without notice.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import pandas as pd

from cache.store import FeatureStore, open_store as open_feature_store
from cache.layout import runs_dir
from train.runs import RunFolder

log = logging.getLogger(__name__)

# A run as the analyses see it is its `train.runs.RunFolder` (the one reader of run folders); the old name stays
# for the type hints of the analyse commands.
RunInfo = RunFolder


class StudyError(ValueError):
    """A target is not a run or a folder of runs, or a run cannot be analysed yet."""


def first_seed_runs(runs: list[RunFolder]) -> list[RunFolder]:
    """The first seed of each configuration: one picture per model."""
    seen, out = set(), []
    for run in sorted(runs, key=lambda r: (r.train_langs, r.width, r.seed)):
        if (run.train_langs, run.width) not in seen:
            seen.add((run.train_langs, run.width))
            out.append(run)
    # bilingual models first, the paper's EN–NL leading
    return sorted(out, key=lambda r: (r.train_langs != "en+nl", len(r.langs) == 1, r.train_langs, r.width))


def read_run(path: Path, allow_incomplete: bool = False) -> RunFolder:
    """The run in `path`; refuses a run whose training is not complete (unless allowed).

    A run whose stores changed since it was trained is analysed (its caches are keyed by the stores as they
    are now), with a warning: its heads were fitted to the old features.
    """
    run = RunFolder.open(path)
    if run.status == "failed" and not allow_incomplete:
        raise StudyError(f"run {run.path} failed ({run.failure}); train it again with other options "
                         "(e.g. a lower --lr), or leave it out")
    if run.status != "complete" and not allow_incomplete:
        raise StudyError(f"run {run.path} is not complete (status {run.status!r}); "
                         "finish it with the same train-heads command, or leave it out")
    if not run.checkpoint.exists():
        raise StudyError(f"run {run.path} has no best.safetensors; rerun train-heads to resume it")
    stale = run.stale_stores(open_store)
    if stale:
        log.warning("run %s was trained on stores that changed since (%s); retrain it with train-heads --force",
                    run.path, "; ".join(change.describe() for change in stale))
    return run


def find_runs(targets: list[Path], study: str | None = None, allow_incomplete: bool = False) -> list[RunFolder]:
    """The runs named by `targets` and/or `study`, each once, sorted by (train_langs, width, seed)."""
    folders = [Path(t) for t in targets]
    if study:
        folders.append(runs_dir(study))
    if not folders:
        raise StudyError("name runs: give run folders, a folder of runs, or --study NAME")
    runs: dict[Path, RunFolder] = {}
    for folder in folders:
        if not folder.is_dir():
            raise StudyError(f"{folder} does not exist (runs live in $VGSME_HOME/runs/<study>/)")
        if RunFolder.is_run_folder(folder):
            candidates = [folder]
        else:
            candidates = sorted(p for p in folder.iterdir() if RunFolder.is_run_folder(p))
            if not candidates:
                raise StudyError(f"{folder} holds no run folders (sub-folders with config.json)")
        for c in candidates:
            run = read_run(c, allow_incomplete)
            runs[run.path] = run
    return sorted(runs.values(), key=lambda r: (len(r.langs), r.train_langs, r.width, r.seed))


def study_name(runs: list[RunFolder], study: str | None) -> str:
    """The study's name: given, or the common parent folder's name of the runs."""
    if study:
        return study
    parents = {r.path.parent.name for r in runs}
    return parents.pop() if len(parents) == 1 else "study"


def open_store(paths: tuple[Path, ...]) -> FeatureStore:
    """A store (or shard set), opened once per process while its files stay the same: several runs share
    their stores, and a store rebuilt meanwhile (new file, new mtime) is opened anew, never served stale."""
    paths = tuple(Path(p) for p in paths)
    return _open_store(paths, tuple(_file_signature(p) for p in paths))


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None  # missing: opening it gives the store reader's own message
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=32)
def _open_store(paths: tuple[Path, ...], signature: tuple) -> FeatureStore:
    return open_feature_store(list(paths) if len(paths) > 1 else paths[0])


def items_frame(store: FeatureStore, modality: str) -> pd.DataFrame:
    """The store's item table as a DataFrame with the columns of items.csv."""
    t = store.items
    return pd.DataFrame({"id": t.ids, "modality": modality, "concept": t.concept, "kind": t.kind,
                         "lang": t.lang if modality == "audio" else "", "source": t.source, "split": t.split})


def episodes_dir(run: RunFolder) -> Path:
    """Episodes live beside the stores they were drawn from: `cache/<corpus>/episodes/`."""
    return run.image_store[0].parent / "episodes"
