"""Pictures of one run's embedding space (the paper's Fig. 3) and the modality gap as a number.

PCA (2 components) is fitted on audio and image test embeddings together, so the picture shows the
global layout: audio and images on different sides of the sphere (the modality gap). t-SNE shows the
audio alone, familiar concepts coloured, novel ones grey, one marker per language. The modality gap is
the Euclidean distance between the centroid of the audio embeddings and that of the image embeddings
(Liang et al., 2022), over all items and per kind. Concepts the run was trained without
(`exclude_concepts`) are in no picture and no number.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from analyse.export import Embedded
from cache.atomic import save_figure, write_csv

PROJECTION_COLUMNS = ["id", "modality", "concept", "kind", "lang", "x", "y"]
GAP_COLUMNS = ["kind", "modality_gap", "n_audio", "n_image"]
LANG_MARKERS = ["o", "s", "^", "D", "v", "P"]


def modality_gap(embedded: Embedded) -> pd.DataFrame:
    """Distance between the audio and the image centroid: over all items, familiar only, novel only."""
    rows = []
    for kind in ("all", "familiar", "novel"):
        mask = np.ones(len(embedded.items), bool) if kind == "all" else (embedded.items["kind"] == kind).to_numpy()
        audio = embedded.vectors[mask & (embedded.items["modality"] == "audio").to_numpy()]
        image = embedded.vectors[mask & (embedded.items["modality"] == "image").to_numpy()]
        gap = float(np.linalg.norm(audio.mean(0) - image.mean(0))) if len(audio) and len(image) else float("nan")
        rows.append((kind, gap, len(audio), len(image)))
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def _frame(embedded: Embedded, xy: np.ndarray) -> pd.DataFrame:
    out = embedded.items[["id", "modality", "concept", "kind", "lang"]].copy()
    out["x"], out["y"] = xy[:, 0], xy[:, 1]
    return out[PROJECTION_COLUMNS]


def pca_projection(embedded: Embedded) -> tuple[pd.DataFrame, np.ndarray]:
    """2-D PCA of audio and image embeddings together, and the explained variance ratios."""
    pca = PCA(n_components=2, svd_solver="full")
    xy = pca.fit_transform(embedded.vectors.astype(np.float64))
    return _frame(embedded, xy), pca.explained_variance_ratio_


def tsne_projection(audio: Embedded, perplexity: float = 30.0, seed: int = 0) -> pd.DataFrame:
    """2-D t-SNE of the audio embeddings (perplexity lowered for sets too small for it)."""
    n = len(audio.items)
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 audio items, got {n}")
    perplexity = min(perplexity, (n - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine")
    # One OpenMP thread: on a shared 2-core machine the Barnes-Hut gradient ran 2-20x slower with two
    # (threads spin-waiting on each other); at these sizes one thread takes seconds.
    with threadpool_limits(limits=1, user_api="openmp"):
        return _frame(audio, tsne.fit_transform(audio.vectors.astype(np.float64)))


def concept_palette(concepts: list[str]) -> dict[str, tuple]:
    """A fixed colour per familiar concept (sorted), so every figure of a study agrees."""
    import seaborn as sns

    colours = sns.color_palette("tab20", n_colors=max(len(concepts), 1))
    return {c: colours[i % len(colours)] for i, c in enumerate(sorted(concepts))}


def plot_projection(frame: pd.DataFrame, path: Path, title: str) -> Path:
    """Scatter: familiar concepts coloured, novel grey; audio markers by language, images as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    palette = concept_palette(sorted(frame.loc[frame["kind"] == "familiar", "concept"].unique()))
    langs = sorted(frame.loc[frame["modality"] == "audio", "lang"].unique())
    markers = {lang: LANG_MARKERS[i % len(LANG_MARKERS)] for i, lang in enumerate(langs)}
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for novel_first in (True, False):  # grey underneath the colours
        part = frame[(frame["kind"] == "novel") == novel_first]
        for (modality, lang), group in part.groupby(["modality", "lang"], sort=True):
            colours = ["#b0b0b0" if k == "novel" else palette[c] for k, c in zip(group["kind"], group["concept"])]
            marker = "x" if modality == "image" else markers[lang]
            edge = {} if marker == "x" else {"edgecolors": "white"}
            ax.scatter(group["x"], group["y"], c=colours, marker=marker, s=12 if novel_first else 22,
                       linewidths=0.8 if marker == "x" else 0.3,
                       alpha=0.85, **edge)
    handles = [Line2D([], [], marker="o", ls="", color=colour, label=c, markersize=6) for c, colour in palette.items()]
    handles.append(Line2D([], [], marker="o", ls="", color="#b0b0b0", label="novel", markersize=6))
    handles += [Line2D([], [], marker=markers[lang], ls="", color="black", label=f"audio {lang}", markersize=6, mfc="none") for lang in langs]
    if (frame["modality"] == "image").any():
        handles.append(Line2D([], [], marker="x", ls="", color="black", label="image", markersize=6))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    save_figure(path, fig, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ binding to runs
def run_projections(run, device: str = "cpu", perplexity: float = 30.0, seed: int = 0, tsne: bool = True,
                    tsne_per_concept: int = 20, precision: str = "fp32") -> dict[str, Path]:
    """PCA (and, with `tsne`, t-SNE) tables and figures and the modality gap of one run, under analysis/.

    t-SNE runs on at most `tsne_per_concept` audio items per (concept, language), the same fixed subsample
    for every model: its cost grows fast with the number of points and the picture needs no more."""
    from analyse.exclusion import run_test_embeddings

    embedded = run_test_embeddings(run, device, precision)
    out = run.analysis_dir
    label = f"{run.train_langs.upper()} w{run.width} seed {run.seed}"
    pca, ratio = pca_projection(embedded)
    gap = modality_gap(embedded)
    for key, value in reversed(list(run.labels().items())):
        gap.insert(0, key, value)
    written = {
        "pca": write_csv(out / "pca.csv", pca),
        "pca_figure": plot_projection(pca, out / "pca.png", f"PCA of audio and image embeddings — {label}\n"
                                      f"(PC1 {100 * ratio[0]:.0f} %, PC2 {100 * ratio[1]:.0f} % of variance)"),
        "modality_gap": write_csv(out / "modality_gap.csv", gap),
    }
    if tsne:
        from analyse.variance import subsample

        audio = embedded.select((embedded.items["modality"] == "audio").to_numpy())
        audio = audio.select(np.isin(np.arange(len(audio.items)), subsample(audio.items, tsne_per_concept, seed)))
        projection = tsne_projection(audio, perplexity=perplexity, seed=seed)
        written["tsne"] = write_csv(out / "tsne.csv", projection)
        written["tsne_figure"] = plot_projection(projection, out / "tsne.png", f"t-SNE of audio embeddings — {label}")
    return written


def study_projections(runs, device: str = "cpu", perplexity: float = 30.0, seed: int = 0, tsne_per_concept: int = 20,
                      all_seeds: bool = False, tsne_headline_only: bool = False, precision: str = "fp32",
                      progress: bool = False) -> dict[str, dict[str, Path]]:
    """`run_projections` for the first seed of each configuration (every run with `all_seeds`), by run name.

    t-SNE is the slow part: with `tsne_headline_only` it is drawn for one model only, the first bilingual
    one (EN–NL when present, as in the paper), else the first run."""
    from analyse.exclusion import study_exclusion
    from analyse.study import first_seed_runs
    from cache.clitools import progress_iter

    study_exclusion(runs)
    chosen = list(runs) if all_seeds else first_seed_runs(runs)
    headline = next((r for r in first_seed_runs(chosen) if len(r.langs) > 1), first_seed_runs(chosen)[0])
    return {run.name: run_projections(run, device, perplexity, seed, tsne=not tsne_headline_only or run is headline,
                                      tsne_per_concept=tsne_per_concept, precision=precision)
            for run in progress_iter(chosen, progress, desc="projections", unit="run")}
