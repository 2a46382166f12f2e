"""Which encoder layer the heads were trained on: `analyse layers`.

Runs trained with `train-heads --audio-layer` record `audio_layer` in config.json: a hidden-state number of
the audio stores' layer axis, or `weighted` (a learned softmax-weighted sum of all of them, whose weights
the run keeps in `layer_weights.json`). Two outputs:

- **A layer sweep** (runs of the same training languages and width at two or more layers): familiar and ME
  accuracy per layer, mean ± s.e. over seeds (ddof=1, as Table 1), one row per (layer, model, width, test
  language) in `layers.csv`, drawn against the layer in `layers.png` (a weighted-sum run as a horizontal
  line: what the learned mix gives, next to each single layer), and as a Markdown table in `layers.md`
  (what the README quotes). This is the encoder ablation the paper did
  not run: which hidden states carry what mutual exclusivity needs.
- **Layer weights** of every weighted-sum run: `layer_weights.csv` (one row per run and layer) and a bar
  plot per run (`<run>/analysis/layer_weights.png`) and for the study (`layer_weights.png`, mean over seeds
  per model, with the seeds' spread).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from train.layers import WEIGHTED

SUMMARY_COLUMNS = ["layer", "layer_order", "train_langs", "width", "test_lang", "n_seeds",
                   "familiar_mean", "familiar_se", "me_mean", "me_se"]
WEIGHT_COLUMNS = ["run", "train_langs", "width", "seed", "epoch", "layer", "weight"]
WEIGHTED_ORDER = 1_000  # the weighted sum sorts after every hidden state


class LayerAnalysisError(ValueError):
    """The study has no runs that chose an encoder layer, or their results cannot be used."""


def model_langs(run) -> str:
    """The run's training languages and condition without its layer: `en+fr` (`-eq` and an exposure suffix
    kept), what the runs of one layer sweep share (`RunFolder.train_langs` carries the layer too)."""
    return "+".join(run.langs) + ("-eq" if run.equal_steps else "") + run.exposure.suffix()


def layer_runs(runs) -> list:
    """The runs trained on a chosen encoder layer (`--audio-layer`)."""
    return [run for run in runs if run.audio_layer is not None]


def has_layer_runs(runs) -> bool:
    """Whether any run chose an encoder layer (what makes `analyse all` run this analysis)."""
    return bool(layer_runs(runs))


def layer_label(audio_layer) -> tuple[str, int]:
    """(`7` | `weighted`, its sort order)."""
    if audio_layer == WEIGHTED:
        return WEIGHTED, WEIGHTED_ORDER
    return str(int(audio_layer)), int(audio_layer)


# ------------------------------------------------------------------------------------------ accuracy per layer
def layer_accuracy(runs) -> pd.DataFrame:
    """Per run (of a chosen layer) and test: accuracy.csv's rows with layer, layer_order and the model's
    languages without the layer (train_langs)."""
    from analyse.tests import collect

    frames = []
    for run in layer_runs(runs):
        label, order = layer_label(run.audio_layer)
        frame = collect([run], "accuracy.csv")
        frames.append(frame.assign(train_langs=model_langs(run), layer=label, layer_order=order))
    if not frames:
        raise LayerAnalysisError("no run of the study chose an encoder layer: train them with train-heads "
                                 "--audio-layer (e.g. --audio-layer 0..12 weighted) on stores extracted with "
                                 "extract-features --layers all")
    return pd.concat(frames, ignore_index=True)


def layer_summary(accuracy: pd.DataFrame) -> pd.DataFrame:
    """One row per (layer, train_langs, width, test language): seeds and the familiar and ME means ± s.e.

    Refuses two runs of one layer and model with the same seed (their mean would count that seed twice)."""
    duplicated = accuracy.duplicated(["train_langs", "width", "layer", "seed", "test", "lang"])
    if duplicated.any():
        r = accuracy[duplicated].iloc[0]
        raise LayerAnalysisError(f"two runs of {r['train_langs']} width {r['width']} at layer {r['layer']} share "
                                 f"seed {r['seed']}; each layer needs one run per seed (leave one out)")
    rows = []
    keys = ["train_langs", "width", "lang", "layer_order", "layer"]
    for (train_langs, width, lang, order, layer), group in accuracy.groupby(keys, sort=True):
        row = {"layer": layer, "layer_order": int(order), "train_langs": train_langs, "width": int(width),
               "test_lang": lang, "n_seeds": int(group["seed"].nunique())}
        for test in ("familiar", "me"):
            values = group.loc[group["test"] == test, "accuracy"].to_numpy(dtype=float)
            row[f"{test}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{test}_se"] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


MARKDOWN_HEADER = ["Layer", "Training languages", "Test language", "Width", "Familiar (%)", "ME (%)", "Seeds"]


def _cell(mean: float, se: float) -> str:
    """`mean ± s.e.` to one decimal, as Table 1 prints it; the mean alone for one seed, `–` for no value."""
    if np.isnan(mean):
        return "–"
    return f"{mean:.1f}" if np.isnan(se) else f"{mean:.1f} ± {se:.1f}"


def layers_markdown(summary: pd.DataFrame) -> str:
    """`layers.csv` as a GitHub-flavoured Markdown table, rows in layer order within each model and test
    language, the weighted sum last."""
    ordered = summary.sort_values(["train_langs", "width", "test_lang", "layer_order"], kind="stable")
    lines = ["| " + " | ".join(MARKDOWN_HEADER) + " |", "|" + "---|" * len(MARKDOWN_HEADER)]
    for r in ordered.itertuples():
        layer = "weighted sum" if r.layer == WEIGHTED else str(r.layer)
        cells = [layer, r.train_langs.upper(), r.test_lang.upper(), str(r.width),
                 _cell(r.familiar_mean, r.familiar_se), _cell(r.me_mean, r.me_se), str(r.n_seeds)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def is_sweep(summary: pd.DataFrame) -> bool:
    """Whether some model (training languages, width) was trained at two or more layers."""
    return bool((summary.groupby(["train_langs", "width"])["layer"].nunique() > 1).any())


def plot_layers(summary: pd.DataFrame, path: Path) -> Path:
    """Familiar (dashed) and ME (solid) accuracy against the hidden state, one panel per test language, one
    colour per model; ± s.e. over seeds as bands; chance dotted. A weighted-sum run is a hollow marker with
    its s.e. at its own tick right of the last layer: as a horizontal line it hid under the chance line
    whenever its ME was near 50 % (as on the demo)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from analyse.figures import save_with_shared_legend

    langs = sorted(set(summary["test_lang"]))
    fig, axes = plt.subplots(1, len(langs), figsize=(4.6 * len(langs), 3.4), squeeze=False, sharey=True)
    models = sorted(set(zip(summary["train_langs"], summary["width"])))
    palette = dict(zip(models, sns.color_palette("colorblind", len(models))))
    styles = {"me": ("-", "o", "ME"), "familiar": ("--", "s", "familiar")}
    layer_ticks = sorted(set(summary.loc[summary["layer"] != WEIGHTED, "layer_order"]))
    weighted_x = (max(layer_ticks) + 1) if layer_ticks else 0
    ticks, tick_labels = list(layer_ticks), [str(t) for t in layer_ticks]
    if (summary["layer"] == WEIGHTED).any():
        ticks.append(weighted_x)
        tick_labels.append("weighted\nsum")
    for ax, lang in zip(axes[0], langs):
        panel = summary[summary["test_lang"] == lang]
        for (train_langs, width), line in panel.groupby(["train_langs", "width"], sort=True):
            colour = palette[(train_langs, width)]
            single = line[line["layer"] != WEIGHTED].sort_values("layer_order")
            mixed = line[line["layer"] == WEIGHTED]
            for test, (dash, marker, name) in styles.items():
                label = f"{train_langs.upper()} w{width} {name}"
                if len(single):
                    x, mean, se = single["layer_order"], single[f"{test}_mean"], single[f"{test}_se"].fillna(0)
                    ax.plot(x, mean, dash, marker=marker, color=colour, lw=1.4, ms=4, label=label)
                    ax.fill_between(x, mean - se, mean + se, color=colour, alpha=0.18, lw=0)
                for r in mixed.itertuples():
                    se = getattr(r, f"{test}_se")
                    ax.errorbar(weighted_x, getattr(r, f"{test}_mean"), yerr=0 if np.isnan(se) else se,
                                fmt=marker, ms=6, mfc="white", color=colour, capsize=3, lw=1.2,
                                label=f"{label}, weighted sum")
        ax.axhline(50, color="grey", lw=0.8, ls=":", label="chance")
        ax.set_title(f"test {lang.upper()}", fontsize=10)
        ax.set_xlabel("encoder hidden state (0 = input embeddings)")
        ax.set_ylabel("accuracy (%)" if ax is axes[0][0] else "")
        ax.set_xticks(ticks, tick_labels)
        sns.despine(ax=ax)
    return save_with_shared_legend(fig, axes, path)


# ------------------------------------------------------------------------------------------ layer weights
def layer_weights_frame(runs) -> pd.DataFrame:
    """WEIGHT_COLUMNS: the learned softmax weight of every stored layer, for each weighted-sum run."""
    rows = []
    for run in layer_runs(runs):
        saved = run.layer_weights()
        if saved is None:
            continue
        rows += [{"run": run.name, "train_langs": model_langs(run), "width": run.width, "seed": run.seed,
                  "epoch": saved["epoch"], "layer": int(layer), "weight": float(weight)}
                 for layer, weight in zip(saved["layers"], saved["weights"])]
    return pd.DataFrame(rows, columns=WEIGHT_COLUMNS)


def plot_layer_weights(weights: pd.DataFrame, path: Path, title: str) -> Path:
    """A bar per stored layer: its softmax weight (mean over the rows' seeds, with their spread), coloured
    by model; the uniform weight 1/L (where the weights start) dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from cache.atomic import save_figure

    data = weights.assign(model=[f"{t.upper()} w{w}" for t, w in zip(weights["train_langs"], weights["width"])])
    layers = sorted(set(data["layer"]))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(layers) + 2.5), 3.2))
    sns.barplot(data=data, x="layer", y="weight", hue="model", order=layers, errorbar="sd", ax=ax,
                palette="colorblind")
    ax.axhline(1 / len(layers), color="grey", lw=0.8, ls=":", label="uniform (start)")
    ax.set_xlabel("encoder hidden state (0 = input embeddings)")
    ax.set_ylabel("softmax weight")
    ax.set_title(title, fontsize=10)
    # beside the axes: inside, "best" put it on the bars (near-uniform weights fill the whole plot)
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    sns.despine(ax=ax)
    fig.tight_layout()
    save_figure(path, fig, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ binding to runs
def study_layers(runs, out_dir: Path) -> dict[str, Path]:
    """layers.csv and layers.md (+ layers.png for a layer sweep) from the runs' accuracy.csv; layer_weights.csv,
    layer_weights.png and each weighted run's analysis/layer_weights.png. Raises `LayerAnalysisError`
    when no run chose a layer."""
    from cache.atomic import write_csv, write_text

    summary = layer_summary(layer_accuracy(runs))
    written = {"layers": write_csv(out_dir / "layers.csv", summary),
               "layers_md": write_text(out_dir / "layers.md", layers_markdown(summary))}
    if is_sweep(summary):
        written["layers_figure"] = plot_layers(summary, out_dir / "layers.png")
    weights = layer_weights_frame(runs)
    if len(weights):
        written["layer_weights"] = write_csv(out_dir / "layer_weights.csv", weights)
        written["layer_weights_figure"] = plot_layer_weights(weights, out_dir / "layer_weights.png",
                                                             "learned layer weights (mean over seeds)")
        for run in layer_runs(runs):
            own = weights[weights["run"] == run.name]
            if len(own):
                plot_layer_weights(own, run.analysis_dir / "layer_weights.png",
                                   f"{run.name}: layer weights of the best epoch ({int(own['epoch'].iloc[0])})")
    return written
