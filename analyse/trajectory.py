"""Learning trajectories: every saved epoch's weights scored on the final analysis's test episodes.

A run trained with `train-heads --save-epochs` keeps `epochs/epoch-NNN.safetensors` for epoch 0 (the heads at
initialisation) and after every epoch. Each one is embedded and scored on the same familiar and ME episodes
as the final analysis (every language of the run), so the curve ends where Table 1 starts and shows when a
bias appears. The epoch weights never choose the run's checkpoint: they are only read here.

Epoch 0 is also the **untrained baseline**: the same architecture, the same seed, no training. It tells a
reader where chance really lies for these heads on these episodes (it need not be 50 %), and Table 1 and the
exposure analysis report it beside the trained models.

Per run the scores are cached in `<run>/analysis/trajectory.csv` (epoch, test, lang, n, accuracy in percent)
with `trajectory.json`: per epoch, the sha256 of that epoch's weights, the stores' current fingerprints, the
episode files' sha256 and the precision (the key of `analyse.export`'s caches, with the epoch's weights in
place of the best ones). A rerun rescores only the epochs whose key changed; a reader that only collects
(Table 1, the exposure analysis) refuses a stale or missing cache instead of using it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from analyse.episodes import DEFAULT_PER_CONCEPT, DEFAULT_SEED, TESTS, episode_paths, episodes_for_run
from analyse.export import StaleAnalysisError, TestFeatures, embed_run, read_test_features
from analyse.table import UNTRAINED
from analyse.tests import ACCURACY_COLUMNS, accuracy_summary, score_episodes
from cache import atomic
from cache.clitools import progress_iter
from cache.hashing import sha256_files

log = logging.getLogger(__name__)

RUN_COLUMNS = ["epoch", *ACCURACY_COLUMNS]  # epoch, test, lang, n, accuracy
STUDY_COLUMNS = ["run", "train_langs", "width", "seed", "epoch", "test", "lang", "accuracy"]


class TrajectoryError(ValueError):
    """No run kept its epochs, a run's epoch files have a gap, or a trajectory cache is missing."""


# ------------------------------------------------------------------------------------------ which runs
def has_saved_epochs(run) -> bool:
    """Whether the run was trained with --save-epochs and kept at least one epoch's weights."""
    return bool(run.config.get("save_epochs")) and bool(run.saved_epochs())


def trajectory_runs(runs) -> list:
    """The runs with saved epochs (what `analyse all` scores, and where the baseline comes from)."""
    return [run for run in runs if has_saved_epochs(run)]


def run_epochs(run) -> list[int]:
    """The saved epochs of a run, refused when one between 0 and the last is missing (a gap would be drawn
    as a straight line through an epoch that was never scored)."""
    epochs = run.saved_epochs()
    missing = sorted(set(range(epochs[-1] + 1)) - set(epochs)) if epochs else []
    if missing:
        raise TrajectoryError(f"run {run.path} lacks the weights of epoch(s) {missing} in {run.path / 'epochs'}; "
                              "retrain it with `train-heads ... --save-epochs --force`")
    return epochs


# ------------------------------------------------------------------------------------------ keys
def trajectory_keys(run, epochs: list[int], precision: str | None) -> dict[str, dict]:
    """Each epoch's cache key now (str(epoch) → key); `precision=None` leaves the precision out (for a
    check that accepts the precision it was scored in). The episode files must be drawn."""
    from analyse.study import episodes_dir, open_store

    stores = run.current_store_fingerprints(open_store)
    episodes = {f"{test}/{lang}": sha256_files(episode_paths(episodes_dir(run), lang, test))
                for test in TESTS for lang in run.langs}
    base = {"stores": stores, "episodes": episodes} | ({} if precision is None else {"precision": precision})
    return {str(epoch): {"weights": run.weights_fingerprint(epoch), **base} for epoch in epochs}


def _paths(run) -> tuple[Path, Path]:
    return run.analysis_dir / "trajectory.csv", run.analysis_dir / "trajectory.json"


def _load_cache(run) -> tuple[pd.DataFrame, dict]:
    """The saved per-run trajectory and its keys (empty when absent or unreadable: treated as stale)."""
    csv_path, keys_path = _paths(run)
    try:
        keys = json.loads(keys_path.read_text()) if keys_path.exists() and csv_path.exists() else {}
        frame = pd.read_csv(csv_path, dtype={"lang": str, "test": str}) if keys else pd.DataFrame(columns=RUN_COLUMNS)
    except (json.JSONDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=RUN_COLUMNS), {}
    if list(frame.columns) != RUN_COLUMNS:
        return pd.DataFrame(columns=RUN_COLUMNS), {}
    return frame, keys


def _complete(frame: pd.DataFrame, epoch: int, run) -> bool:
    """Whether the cached rows of `epoch` cover every (test, language) of the run."""
    rows = frame[frame["epoch"] == epoch]
    return set(zip(rows["test"], rows["lang"])) == {(t, lang) for t in TESTS for lang in run.langs}


# ------------------------------------------------------------------------------------------ one run
def score_checkpoint(run, checkpoint: str | int, episodes: list[pd.DataFrame], device: str = "cpu",
                     precision: str = "fp32", features: list[TestFeatures] | None = None) -> pd.DataFrame:
    """Accuracy (test, lang, n, accuracy in percent) of one checkpoint of the run on the given episodes
    (`features`: the run's test features, read once for all its checkpoints)."""
    embedded = embed_run(run, device, precision, checkpoint, features)
    return accuracy_summary(pd.concat([score_episodes(frame, embedded) for frame in episodes], ignore_index=True))


def run_trajectory(run, device: str = "cpu", precision: str = "fp32", episode_seed: int = DEFAULT_SEED,
                   per_concept: int = DEFAULT_PER_CONCEPT) -> pd.DataFrame:
    """The run's trajectory (RUN_COLUMNS, one row per epoch, test and language): cached rows whose key is
    current are kept, the other epochs scored, and `analysis/trajectory.csv` + `.json` rewritten."""
    epochs = run_epochs(run)
    if not epochs:
        raise TrajectoryError(f"run {run.path} kept no epoch weights; train it with `train-heads ... --save-epochs`")
    episodes = [episodes_for_run(run, lang, test, episode_seed, per_concept) for lang in run.langs for test in TESTS]
    current = trajectory_keys(run, epochs, precision)
    old, recorded = _load_cache(run)
    kept = [e for e in epochs if recorded.get(str(e)) == current[str(e)] and _complete(old, e, run)]
    todo = [e for e in epochs if e not in kept]
    features = read_test_features(run) if todo else None
    fresh = [score_checkpoint(run, e, episodes, device, precision, features).assign(epoch=e) for e in todo]
    if fresh or set(old["epoch"]) != set(kept) or recorded != current:
        log.info("%s: scored %d of %d epochs (the rest cached)", run.path, len(fresh), len(epochs))
        frame = pd.concat([old[old["epoch"].isin(kept)], *fresh], ignore_index=True)[RUN_COLUMNS]
        frame = frame.sort_values(["epoch", "test", "lang"], kind="stable").reset_index(drop=True)
        csv_path, keys_path = _paths(run)
        atomic.write_csv(csv_path, frame)
        atomic.write_json(keys_path, current)  # last: the keys are what mark the rows current
        return frame
    return old.sort_values(["epoch", "test", "lang"], kind="stable").reset_index(drop=True)


def collect_trajectories(runs) -> pd.DataFrame:
    """The runs' cached trajectories stacked (STUDY_COLUMNS), refused when one is missing or stale."""
    frames = []
    for run in runs:
        epochs = run_epochs(run)
        frame, recorded = _load_cache(run)
        strip = {e: {k: v for k, v in key.items() if k != "precision"} for e, key in recorded.items()}
        try:
            current = trajectory_keys(run, epochs, None)
        except FileNotFoundError:  # episodes not drawn yet
            current = None
        if not recorded or current != strip or not all(_complete(frame, e, run) for e in epochs):
            raise StaleAnalysisError(
                f"the trajectory of run {run.path} is missing or was scored with other weights, stores or episodes "
                f"than the current ones; score it: `analyse trajectory {run.path}` (or `analyse all`)")
        labelled = frame.assign(**run.labels())
        frames.append(labelled[STUDY_COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=STUDY_COLUMNS)


# ------------------------------------------------------------------------------------------ the baseline
def untrained_accuracy(runs) -> pd.DataFrame:
    """Epoch 0 of the runs with saved epochs, one row per (width, seed, test, lang) with train_langs
    `untrained` (columns run, train_langs, width, seed, test, lang, accuracy): runs of one seed and width
    start from the same heads when their stores have the same dimensions (train-heads seeds the
    initialisation only), so their epoch-0 scores are averaged into one seed. Empty without such runs."""
    columns = ["run", "train_langs", "width", "seed", "test", "lang", "accuracy"]
    runs = trajectory_runs(runs)
    if not runs:
        return pd.DataFrame(columns=columns)
    start = collect_trajectories(runs).query("epoch == 0")
    out = start.groupby(["width", "seed", "test", "lang"], as_index=False)["accuracy"].mean()
    return out.assign(run=UNTRAINED, train_langs=UNTRAINED)[columns]


# ------------------------------------------------------------------------------------------ the figure
def plot_trajectory(frame: pd.DataFrame, path: Path) -> Path:
    """Accuracy against epoch, one panel per (test, test language): seeds as thin lines, their mean bold,
    one colour per model (training languages, width), the 50 % chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from analyse.figures import save_with_shared_legend

    tests = [t for t in TESTS if t in set(frame["test"])]
    langs = sorted(set(frame["lang"]))
    fig, axes = plt.subplots(len(tests), len(langs), figsize=(4.2 * len(langs), 3.2 * len(tests)), squeeze=False,
                             sharex=True, sharey=True)
    models = sorted(set(zip(frame["train_langs"], frame["width"])))
    palette = dict(zip(models, sns.color_palette("colorblind", len(models))))
    for row, test in enumerate(tests):
        for col, lang in enumerate(langs):
            ax = axes[row][col]
            panel = frame[(frame["test"] == test) & (frame["lang"] == lang)]
            for (train_langs, width), model in panel.groupby(["train_langs", "width"], sort=True):
                colour = palette[(train_langs, width)]
                for _, seed in model.groupby("seed"):
                    seed = seed.sort_values("epoch")
                    ax.plot(seed["epoch"], seed["accuracy"], color=colour, lw=0.6, alpha=0.5)
                mean = model.groupby("epoch")["accuracy"].mean()
                ax.plot(mean.index, mean.to_numpy(), color=colour, lw=2.0,
                        label=f"{train_langs.upper()} w{width} ({model['seed'].nunique()} seeds)")
            ax.axhline(50, color="grey", lw=0.8, ls=":", label="chance")
            ax.set_title(f"{'ME' if test == 'me' else test} test, {lang.upper()}", fontsize=10)
            ax.set_xlabel("epoch (0: untrained)" if row == len(tests) - 1 else "")
            ax.set_ylabel("accuracy (%)" if col == 0 else "")
            sns.despine(ax=ax)
    return save_with_shared_legend(fig, axes, path)


# ------------------------------------------------------------------------------------------ the study
def study_trajectory(runs, out_dir: Path, device: str = "cpu", precision: str = "fp32",
                     episode_seed: int = DEFAULT_SEED, per_concept: int = DEFAULT_PER_CONCEPT,
                     progress: bool = False) -> dict[str, Path]:
    """Score every saved epoch of the runs that kept them; `trajectory.csv` and `trajectory.png` in `out_dir`."""
    chosen = trajectory_runs(runs)
    if not chosen:
        raise TrajectoryError("no run among the targets kept its epochs' weights; train with "
                              "`train-heads ... --save-epochs` to score learning trajectories")
    for run in progress_iter(chosen, progress, desc="trajectory", unit="run"):
        run_trajectory(run, device, precision, episode_seed, per_concept)
    frame = collect_trajectories(chosen)
    return {"trajectory": atomic.write_csv(out_dir / "trajectory.csv", frame),
            "trajectory_figure": plot_trajectory(frame, out_dir / "trajectory.png")}

