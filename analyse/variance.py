"""How much space familiar and novel samples occupy: the trace of the covariance of unit embeddings.

tr(Cov(X)) with ddof=1 equals the mean squared distance to the centroid times N/(N-1). It is computed
on a fixed test subsample (at most 30 items per concept and language for audio, 30 per concept for
images; the same items for every model that has those languages), separately for familiar and novel
items of each modality, once over all samples ("all") and once within each concept, averaged over
concepts ("within_concept"). Over seeds the values are summarised by their mean and a 95 % percentile
bootstrap interval of the mean (the paper's Fig. 4 error bars). Concepts the runs were trained without
(`exclude_concepts`) are left out.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from analyse.export import Embedded
from cache.atomic import save_figure, write_csv

VARIANCE_COLUMNS = ["modality", "kind", "scope", "variance", "n_items", "n_concepts"]
SUMMARY_COLUMNS = ["train_langs", "width", "modality", "kind", "scope", "mean", "ci_low", "ci_high", "n_seeds"]
DEFAULT_PER_CONCEPT = 30


def trace_covariance(x: np.ndarray) -> float:
    """tr(Cov(x)) with ddof=1, without forming the D×D matrix; NaN for fewer than two rows."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return float("nan")
    centred = x - x.mean(axis=0)
    return float((centred**2).sum() / (len(x) - 1))


def subsample(items: pd.DataFrame, per_group: int, seed: int) -> np.ndarray:
    """Row numbers of at most `per_group` test items per (modality, concept, lang), chosen reproducibly.

    Each group's choice depends only on its own ids and key, so models that share a language get the
    same audio items and every model gets the same images.
    """
    chosen = []
    test = items[items["split"] == "test"]
    for key, group in test.groupby(["modality", "concept", "lang"], sort=True):
        group = group.sort_values("id", kind="stable")
        rows = group.index.to_numpy()
        if len(rows) > per_group:
            rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32("/".join(key).encode())]))
            rows = np.sort(rng.choice(rows, size=per_group, replace=False))
        chosen.append(rows)
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)


def variance_rows(embedded: Embedded, per_concept: int = DEFAULT_PER_CONCEPT, seed: int = 0) -> pd.DataFrame:
    """The variances of one run: (audio, image) × (familiar, novel) × (all, within_concept)."""
    sample = embedded.select(np.isin(np.arange(len(embedded.items)), subsample(embedded.items, per_concept, seed)))
    rows = []
    for (modality, kind), group in sample.items.groupby(["modality", "kind"], sort=True):
        x = sample.vectors[group.index.to_numpy()]
        rows.append((modality, kind, "all", trace_covariance(x), len(group), group["concept"].nunique()))
        per_concept_values = [trace_covariance(sample.vectors[g.index.to_numpy()]) for _, g in group.groupby("concept")]
        per_concept_values = [v for v in per_concept_values if not np.isnan(v)]
        within = float(np.mean(per_concept_values)) if per_concept_values else float("nan")
        rows.append((modality, kind, "within_concept", within, len(group), len(per_concept_values)))
    return pd.DataFrame(rows, columns=VARIANCE_COLUMNS)


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; a single value gives a zero-width interval."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(len(values), size=(n_boot, len(values)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def summarise(per_run: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean and bootstrap CI over seeds per (train_langs, width, modality, kind, scope)."""
    rows = []
    keys = ["train_langs", "width", "modality", "kind", "scope"]
    for key, group in per_run.groupby(keys, sort=False):
        low, high = bootstrap_mean_ci(group["variance"].to_numpy(), n_boot=n_boot, seed=seed)
        rows.append((*key, float(group["variance"].mean()), low, high, group["seed"].nunique()))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def plot_variance(per_run: pd.DataFrame, path: Path, n_boot: int = 2000, seed: int = 0) -> Path:
    """Fig. 4 in the paper's manner: a panel per model and scope, bars per modality, familiar vs novel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = per_run.copy()
    data["model"] = data["train_langs"].str.upper().str.replace("+", "–", regex=False) + " w" + data["width"].astype(str)
    data["scope"] = data["scope"].map({"all": "all samples", "within_concept": "within concept"})
    grid = sns.catplot(
        data=data, kind="bar", x="modality", y="variance", hue="kind", col="model", row="scope",
        hue_order=["familiar", "novel"], order=["audio", "image"], palette={"familiar": "#3b75af", "novel": "#a0522d"},
        errorbar=lambda v: bootstrap_mean_ci(np.asarray(v), n_boot=n_boot, seed=seed), capsize=0.15,
        height=2.6, aspect=0.8, sharey="row", margin_titles=True,
    )
    grid.set_titles(col_template="{col_name}", row_template="{row_name}")
    grid.set_axis_labels("", "tr(cov)")
    sns.move_legend(grid, "upper center", bbox_to_anchor=(0.5, 1.0), ncol=2, title=None, frameon=False)
    grid.figure.tight_layout(rect=(0, 0, 1, 0.95))
    save_figure(path, grid.figure, dpi=110)
    plt.close(grid.figure)
    return path


# ------------------------------------------------------------------------------------------ binding to runs
def study_variance(runs, out_dir: Path, device: str = "cpu", items_per_concept: int = DEFAULT_PER_CONCEPT,
                   seed: int = 0, precision: str = "fp32", progress: bool = False) -> dict[str, Path]:
    """Per-run variances (each run's analysis/variance.csv), their summary over seeds and the figure."""
    from analyse.exclusion import run_test_embeddings, study_exclusion
    from cache.clitools import progress_iter

    study_exclusion(runs)
    frames = []
    for run in progress_iter(runs, progress, desc="variance", unit="run"):
        rows = variance_rows(run_test_embeddings(run, device, precision), items_per_concept, seed)
        write_csv(run.analysis_dir / "variance.csv", rows)
        for key, value in reversed(list(run.labels().items())):
            rows.insert(0, key, value)
        frames.append(rows)
    per_run = pd.concat(frames, ignore_index=True)
    return {
        "variance_per_run": write_csv(out_dir / "variance_per_run.csv", per_run),
        "variance": write_csv(out_dir / "variance.csv", summarise(per_run, seed=seed)),
        "variance_figure": plot_variance(per_run, out_dir / "variance.png", seed=seed),
    }
