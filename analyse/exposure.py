"""How the language exposure during training changes familiar and ME accuracy: `analyse exposure`.

A run's `config.json` records its exposure under `"exposure"`: the share of the two languages (`ratio`,
e.g. [75, 25]; null = the natural share of the data), the step budget (`budget`: `sum` of both languages'
data, or `matched` to a monolingual run), the epoch the second language starts (`l2_onset`), the fraction of
the training data used (`data_fraction`) and the number of concepts trained on (`vocab_size`, null = all).
Older runs have no such key: they are the defaults. Each field is a *condition*; a run that differs from
the defaults in exactly one field gives that condition one value, and the all-default runs of the same
training languages and width are the reference value of every condition. A run that differs in several
fields belongs to no single condition and is left out (with a warning naming it): pooling it with either
value would misattribute its effect.

Per (condition, value, training languages, width, test language), the seeds' accuracies (percent) give
the mean, its standard error (ddof=1 over seeds, as Table 1) and a seeded bootstrap 95 % interval over
seeds. The seeds are resampled after moving them away from their mean by √(n/(n − 1)), as the paired test
of analyse.stats does, so the interval is not too narrow with two or three seeds. Neighbouring values of a
condition (in the order of `value_order`) are compared on their shared episodes with analyse.stats's
hierarchical bootstrap (seeds of both values and the trials resampled), exactly the test `analyse compare`
uses; Holm's correction runs over all comparisons of one test (ME, or familiar) in one call.

Runs trained with `--save-epochs` also give each model an untrained baseline: epoch 0 of its runs (the same
heads at initialisation, same seeds; analyse.trajectory), a row with value `untrained` (value_order empty,
reference false) per (condition, training languages, width, test language), drawn as a thin horizontal
line in the model's colour. It is a reference, not a value of the condition: no neighbour test involves it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analyse.compare import decision, holm, trial_matrix
from analyse.stats import hierarchical_bootstrap, spread_seeds
from train.exposure import BUDGETS, DEFAULTS, Exposure

log = logging.getLogger(__name__)

# The contract with train-heads (train.exposure): every field and its default.
CONDITIONS = tuple(DEFAULTS)
SUMMARY_COLUMNS = [
    "condition", "value", "value_order", "reference", "train_langs", "width", "test_lang", "n_seeds",
    "familiar_mean", "familiar_se", "familiar_ci_low", "familiar_ci_high", "me_mean", "me_se", "me_ci_low", "me_ci_high",
]
TEST_COLUMNS = [
    "test", "condition", "train_langs", "width", "test_lang", "value_a", "value_b", "n_trials", "n_seeds_a", "n_seeds_b",
    "acc_a", "acc_b", "diff_pp", "ci_low_pp", "ci_high_pp", "p_hier", "p_holm", "significant", "decision",
]
_LABELS = ["condition", "value", "value_order", "reference"]
UNTRAINED_VALUE = "untrained"
_AXIS_NOTES = {"ratio": " (sum: the data's natural share)", "vocab_size": " (all: every familiar concept)"}


class ExposureError(ValueError):
    """The study has no exposure runs, or a run's exposure record or predictions cannot be used."""


@dataclass(frozen=True)
class ExposureOptions:
    """Resampling sizes, the level and the seed that makes every interval and p-value reproducible.

    `n_resamples` is the size of the hierarchical bootstrap (the neighbour tests), `n_bootstrap` that of
    the intervals over seeds.
    """

    n_resamples: int = 9999
    n_bootstrap: int = 2000
    alpha: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class Placement:
    """Where a run sits among the conditions: a condition's value (rendered), its order, and whether it is the
    reference (all-default run, which is the reference value of every condition)."""

    condition: str
    value: str
    value_order: float
    reference: bool


# ------------------------------------------------------------------------------------------ a run's exposure
def exposure_of(config: dict, where: str) -> dict:
    """The run's five exposure fields, defaults filled in, as train-heads' `Exposure` reads them;
    `ExposureError` naming `where` for a bad record."""
    try:
        exposure = Exposure.from_dict(config.get("exposure"))
    except (TypeError, ValueError) as error:  # train.exposure.ExposureError is a ValueError
        kind = "unknown exposure field(s)" if "unknown" in str(error) else "bad exposure value(s)"
        raise ExposureError(f"{where}: {kind}: {error}; fix its config.json or retrain it") from None
    if exposure.ratio is not None and len(exposure.ratio) != len(config.get("langs") or ()):
        raise ExposureError(f"{where}: bad exposure value(s): ratio {exposure.ratio_text()} needs one share per "
                            "language of a bilingual run; fix its config.json or retrain it")
    return exposure.to_dict()


def _number(x) -> str:
    """75 and 75.0 both print `75`; 0.25 prints `0.25`."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def render(condition: str, value) -> str:
    """A condition's value as the CSVs and the figure show it (null ratio: `sum`, the natural share; null
    vocab_size: `all`)."""
    if condition == "ratio":
        return "sum" if value is None else ":".join(_number(v) for v in value)
    if condition == "vocab_size":
        return "all" if value is None else _number(value)
    if condition in ("l2_onset", "data_fraction"):
        return _number(value)
    return str(value)


def value_order(condition: str, value) -> float:
    """The position of a value along its condition: the axis of the figure and what "neighbouring" means.

    Numeric conditions ascend (a null vocab_size, every concept, comes last); the categorical ones put the
    reference first: `sum` then `matched`, and for ratio the natural share, then the explicit ratios by
    decreasing share of the first language (75:25 before 50:50)."""
    if condition == "ratio":
        return -1.0 if value is None else -float(value[0]) / float(sum(value))
    if condition == "budget":
        return float(BUDGETS.index(value))
    if condition == "vocab_size" and value is None:
        return math.inf
    return float(value)


# Fields that can be the setting under which another condition is swept (a ratio sweep under the matched
# budget, as the BabyLM paper's): such runs form their own model (`en+fr-matched`), not a two-field mix.
CONTEXT_FIELDS = ("budget",)


def _varied(values: dict) -> list[str]:
    return [c for c in CONDITIONS if values[c] != DEFAULTS[c]]


def sweep_context(values: dict) -> list[str]:
    """The context fields of a run that also varies another field ([] otherwise)."""
    varied = _varied(values)
    context = [c for c in CONTEXT_FIELDS if c in varied]
    return context if len(varied) > len(context) else []


def placements(config: dict, where: str) -> list[Placement] | None:
    """Every condition for an all-default run (it is their reference), the one it varies otherwise (a context
    field such as the matched budget aside), None when it varies several (it belongs to no single condition)."""
    values = exposure_of(config, where)
    context = sweep_context(values)
    varied = [c for c in _varied(values) if c not in context]
    if len(varied) > 1:
        return None
    conditions = varied or list(CONDITIONS)
    return [Placement(c, render(c, values[c]), value_order(c, values[c]), not varied) for c in conditions]


def has_exposure_runs(runs) -> bool:
    """Whether any run differs from the default exposure (what makes `analyse all` run this analysis)."""
    return any(exposure_of(r.config, str(r.path)) != DEFAULTS for r in runs)


def model_langs(run) -> str:
    """The run's training languages without the condition it varies: `en+fr` (`-eq` kept, and a sweep's
    context such as `-matched`), what a value's runs and their reference runs share.
    (`RunFolder.train_langs` carries the whole exposure as a suffix, `en+fr-r75-matched`.)"""
    values = exposure_of(run.config, str(run.path))
    context = "".join(f"-{values[c]}" for c in sweep_context(values))
    return "+".join(run.langs) + ("-eq" if run.equal_steps else "") + context


def placed_runs(runs) -> list[tuple[object, Placement]]:
    """(run, placement) pairs of the conditions that vary in the study, with their reference runs (the
    all-default runs of the same training languages and width).

    Raises `ExposureError` when no run differs from the defaults in exactly one field."""
    placed, varied = [], set()
    for run in runs:
        found = placements(run.config, str(run.path))
        if found is None:
            fields = _varied(exposure_of(run.config, str(run.path)))
            log.warning("run %s is left out of the exposure analysis: it differs from the defaults in %s, not in one field",
                        run.path, " and ".join(fields))
            continue
        placed += [(run, p) for p in found]
        varied |= {(p.condition, model_langs(run), run.width) for p in found if not p.reference}
    if not varied:
        raise ExposureError("no exposure runs in the study: every run has the default exposure ("
                            + ", ".join(f"{c} {render(c, v)}" for c, v in DEFAULTS.items())
                            + "); train runs that change one of them (train-heads' exposure options) first")
    # a reference run serves only the conditions that vary among runs of its training languages and width
    return [(run, p) for run, p in placed if (p.condition, model_langs(run), run.width) in varied]


# ------------------------------------------------------------------------------------------ the statistics
def seed_interval(values: np.ndarray, rng: np.random.Generator, n_bootstrap: int, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds, seeds moved from their mean by √(n/(n−1)) first
    (unbiased variance at any n, as in analyse.stats); NaN with a single seed."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    spread = spread_seeds(values[:, None])[:, 0]
    means = spread[rng.integers(0, len(values), size=(n_bootstrap, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _seed_accuracies(predictions: pd.DataFrame) -> pd.DataFrame:
    """Accuracy in percent per (labels, train_langs, width, test, lang, seed)."""
    keys = [*_LABELS, "train_langs", "width", "lang", "test", "seed"]
    return (predictions.groupby(keys, sort=False)["correct"].mean() * 100.0).rename("accuracy").reset_index()


def _one_run_per_seed(predictions: pd.DataFrame) -> None:
    """Refuse two runs of one value with the same seed (they would answer each episode twice)."""
    duplicated = predictions.duplicated(["condition", "value", "train_langs", "width", "test", "lang", "seed", "episode"])
    if duplicated.any():
        r = predictions[duplicated].iloc[0]
        raise ExposureError(f"two runs of {r['train_langs']} width {r['width']} with {r['condition']} {r['value']} share "
                            f"seed {r['seed']}; each value needs one run per seed (leave one out)")


def exposure_summary(predictions: pd.DataFrame, options: ExposureOptions = ExposureOptions()) -> pd.DataFrame:
    """One row per (condition, value, train_langs, width, test_lang): seeds, means, s.e. and intervals.

    `predictions` stacks per-run predictions with the placement columns (condition, value, value_order,
    reference) and train_langs, width, seed, test, lang, episode, correct."""
    _one_run_per_seed(predictions)
    accuracy = _seed_accuracies(predictions)
    rng = np.random.default_rng(options.seed)
    rows = []
    keys = ["condition", "train_langs", "width", "lang", "value_order", "value", "reference"]
    for (condition, train_langs, width, lang, order, value, reference), group in accuracy.groupby(keys, sort=True):
        row = {"condition": condition, "value": value, "value_order": order, "reference": bool(reference),
               "train_langs": train_langs, "width": int(width), "test_lang": lang, "n_seeds": group["seed"].nunique()}
        rows.append({**row, **_seed_statistics(group, rng, options)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _seed_statistics(group: pd.DataFrame, rng: np.random.Generator, options: ExposureOptions) -> dict:
    """Mean, s.e. and bootstrap interval over the seeds' accuracies (columns test, accuracy), per test."""
    row = {}
    for test in ("familiar", "me"):
        values = group.loc[group["test"] == test, "accuracy"].to_numpy()
        row[f"{test}_mean"] = float(values.mean()) if len(values) else float("nan")
        row[f"{test}_se"] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
        interval = seed_interval(values, rng, options.n_bootstrap, 1 - options.alpha)
        # the widened seeds can step past 0 or 100 %, which no accuracy can
        row[f"{test}_ci_low"], row[f"{test}_ci_high"] = (float(np.clip(x, 0.0, 100.0)) for x in interval)
    return row


def untrained_summary(runs, options: ExposureOptions = ExposureOptions()) -> pd.DataFrame:
    """The `untrained` rows (SUMMARY_COLUMNS): per (condition, model, width, test language), epoch 0 of the
    placed runs that kept their epochs, one accuracy per seed (the mean over that seed's runs, which start
    from the same heads). Empty when no placed run kept its epochs."""
    from analyse.trajectory import collect_trajectories, has_saved_epochs

    pairs = [(run, p) for run, p in placed_runs(runs) if has_saved_epochs(run)]
    if not pairs:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    start = collect_trajectories(list({run.path: run for run, _ in pairs}.values())).query("epoch == 0")
    frames = [start[start["run"] == run.name].assign(condition=p.condition, model=model_langs(run)) for run, p in pairs]
    accuracy = pd.concat(frames, ignore_index=True).groupby(
        ["condition", "model", "width", "lang", "test", "seed"], as_index=False)["accuracy"].mean()
    rng = np.random.default_rng(options.seed)
    rows = []
    for (condition, model, width, lang), group in accuracy.groupby(["condition", "model", "width", "lang"], sort=True):
        row = {"condition": condition, "value": UNTRAINED_VALUE, "value_order": float("nan"), "reference": False,
               "train_langs": model, "width": int(width), "test_lang": lang, "n_seeds": group["seed"].nunique()}
        rows.append({**row, **_seed_statistics(group, rng, options)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _paired(a: pd.DataFrame, b: pd.DataFrame, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The two values' (seeds, trials) correctness on the same trials, or an `ExposureError`."""
    try:
        matrix_a, trials_a = trial_matrix(a)
        matrix_b, trials_b = trial_matrix(b)
    except ValueError as error:
        raise ExposureError(f"{where}: {error}") from None
    if not trials_a.equals(trials_b):
        raise ExposureError(f"{where}: the two values answered different episodes; rescore all runs on the same "
                            "episode files (`analyse all`)")
    return matrix_a, matrix_b


def neighbour_tests(predictions: pd.DataFrame, options: ExposureOptions = ExposureOptions()) -> pd.DataFrame:
    """Each value against the next along its condition (diff = b − a, percentage points), per test.

    The headline is the hierarchical bootstrap of analyse.stats; a value with a single seed is not tested
    (NaN p, out of the Holm family) rather than tested as if the models were fixed."""
    _one_run_per_seed(predictions)
    rng = np.random.default_rng(options.seed)
    rows = []
    for (test, condition, train_langs, width, lang), group in predictions.groupby(
            ["test", "condition", "train_langs", "width", "lang"], sort=True):
        values = group.drop_duplicates("value").sort_values("value_order")["value"].tolist()
        for value_a, value_b in zip(values, values[1:]):
            a, b = group[group["value"] == value_a], group[group["value"] == value_b]
            where = f"{test} {lang}, {train_langs} width {width}, {condition} {value_a} vs {value_b}"
            matrix_a, matrix_b = _paired(a, b, where)
            row = {"test": test, "condition": condition, "train_langs": train_langs, "width": int(width), "test_lang": lang,
                   "value_a": value_a, "value_b": value_b, "n_trials": matrix_a.shape[1], "n_seeds_a": len(matrix_a),
                   "n_seeds_b": len(matrix_b), "acc_a": 100.0 * matrix_a.mean(), "acc_b": 100.0 * matrix_b.mean(),
                   "diff_pp": 100.0 * (matrix_b.mean() - matrix_a.mean())}
            if min(len(matrix_a), len(matrix_b)) >= 2:
                hier = hierarchical_bootstrap(matrix_b, matrix_a, rng, options.n_resamples, 1 - options.alpha)
                row.update(ci_low_pp=100.0 * hier.ci_low, ci_high_pp=100.0 * hier.ci_high, p_hier=hier.p_value)
            else:
                row.update(ci_low_pp=float("nan"), ci_high_pp=float("nan"), p_hier=float("nan"))
            rows.append(row)
    out = pd.DataFrame(rows, columns=[c for c in TEST_COLUMNS if c not in ("p_holm", "significant", "decision")])
    if out.empty:
        return pd.DataFrame(columns=TEST_COLUMNS)
    out["p_holm"] = np.nan
    for _, index in out.groupby("test").groups.items():  # one family per test, as one `analyse compare` call
        out.loc[index, "p_holm"] = holm(out.loc[index, "p_hier"].to_numpy(dtype=float))
    out["significant"] = out["p_holm"] < options.alpha  # NaN (not tested) compares False
    out["decision"] = [decision(d, p, s) for d, p, s in zip(out["diff_pp"], out["p_hier"], out["significant"])]
    return out[TEST_COLUMNS]


# ------------------------------------------------------------------------------------------ the figure
def plot_exposure(summary: pd.DataFrame, path: Path) -> Path:
    """ME and familiar accuracy against each condition's value (rows: conditions, columns: test languages),
    95 % intervals over seeds as bands, the 50 % chance line; one line per model (training languages, width),
    and its `untrained` rows (if any) as thin horizontal lines in its colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from analyse.figures import save_with_shared_legend

    untrained = summary[summary["value"] == UNTRAINED_VALUE]
    summary = summary[summary["value"] != UNTRAINED_VALUE]
    conditions = sorted(set(summary["condition"]), key=CONDITIONS.index)
    langs = sorted(set(summary["test_lang"]))
    fig, axes = plt.subplots(len(conditions), len(langs), figsize=(4.2 * len(langs), 3.2 * len(conditions)),
                             squeeze=False, sharey=True)
    models = sorted(set(zip(summary["train_langs"], summary["width"])))
    palette = dict(zip(models, sns.color_palette("colorblind", len(models))))
    styles = {"me": ("-", "o", "ME"), "familiar": ("--", "s", "familiar")}
    for row, condition in enumerate(conditions):
        data = summary[summary["condition"] == condition]
        ticks = data.drop_duplicates("value").sort_values("value_order")["value"].tolist()
        where = {v: i for i, v in enumerate(ticks)}
        for col, lang in enumerate(langs):
            ax = axes[row][col]
            panel = data[data["test_lang"] == lang]
            if panel.empty:
                ax.text(0.5, 0.6, f"no {lang.upper()}-tested runs\nvary {condition}", transform=ax.transAxes,
                        ha="center", va="center", color="grey", fontsize=9)
            for (train_langs, width), line in panel.groupby(["train_langs", "width"], sort=True):
                line = line.sort_values("value_order")
                x = line["value"].map(where).to_numpy()
                for test, (dash, marker, name) in styles.items():
                    colour = palette[(train_langs, width)]
                    ax.plot(x, line[f"{test}_mean"], dash, marker=marker, color=colour, lw=1.4, ms=4,
                            label=f"{train_langs.upper()} w{width} {name}")
                    ax.fill_between(x, line[f"{test}_ci_low"], line[f"{test}_ci_high"], color=colour, alpha=0.18, lw=0)
            start = untrained[(untrained["condition"] == condition) & (untrained["test_lang"] == lang)]
            for r in start.itertuples():
                for test, (dash, _, name) in styles.items():
                    ax.axhline(getattr(r, f"{test}_mean"), color=palette.get((r.train_langs, r.width), "grey"),
                               ls=dash, lw=0.7, alpha=0.7, label=f"{r.train_langs.upper()} w{r.width} {name}, untrained")
            ax.axhline(50, color="grey", lw=0.8, ls=":", label="chance")
            ax.set_xticks(range(len(ticks)), ticks)
            ax.set_title(f"test {lang.upper()}", fontsize=10)
            ax.set_xlabel(condition.replace("_", " ") + _AXIS_NOTES.get(condition, ""))
            ax.set_ylabel("accuracy (%)" if col == 0 else "")
            sns.despine(ax=ax)
    return save_with_shared_legend(fig, axes, path, last="chance")


# ------------------------------------------------------------------------------------------ binding to runs
def exposure_predictions(runs) -> pd.DataFrame:
    """The predictions of every placed run, one copy per condition it belongs to, with the placement columns."""
    from analyse.tests import collect

    frames, read = [], {}
    for run, placement in placed_runs(runs):
        if run.path not in read:  # a reference run serves several conditions: read and check it once
            read[run.path] = collect([run], "predictions.csv")
        labels = {label: getattr(placement, label) for label in _LABELS}
        frames.append(read[run.path].assign(train_langs=model_langs(run), **labels))
    return pd.concat(frames, ignore_index=True)


def study_exposure(runs, out_dir: Path, options: ExposureOptions = ExposureOptions()) -> dict[str, Path]:
    """exposure.csv, exposure-tests.csv and exposure.png from the runs' predictions.csv files (and the
    untrained rows from the cached trajectories of the runs that kept their epochs)."""
    from cache.atomic import write_csv

    predictions = exposure_predictions(runs)
    summary = exposure_summary(predictions, options)
    baseline = untrained_summary(runs, options)
    if len(baseline):
        summary = pd.concat([summary, baseline], ignore_index=True)
    tests = neighbour_tests(predictions, options)
    return {"exposure": write_csv(out_dir / "exposure.csv", summary),
            "exposure_tests": write_csv(out_dir / "exposure-tests.csv", tests),
            "exposure_figure": plot_exposure(summary, out_dir / "exposure.png")}
