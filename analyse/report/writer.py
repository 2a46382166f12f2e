"""One self-contained HTML page for a study: tables, figures (inlined PNG) and every run's provenance.

The page is assembled from the files the other commands wrote (the study's CSVs and figures in the
report folder, each run's analysis/ folder), so it never computes a number itself: what it shows is
what the CSVs say. A section whose inputs are missing says which command makes them. Concepts the runs
were trained without are named in the page's lede and under Table 1.
"""
from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

from analyse.exclusion import describe, study_exclusion
from analyse.study import first_seed_runs
from analyse.table import DISPLAY_HEADER, display_rows, excluded_note
from cache.atomic import make_dirs, save_figure, write_text
from cache.layout import layers_tag
from cache.vocab import KINDS

LANG_NAMES = {"en": "English", "fr": "French", "nl": "Dutch"}


def _esc(value) -> str:
    return html.escape(str(value))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


def _figure(path: Path, alt: str, caption: str) -> str:
    return f"<figure>{_img(path, alt)}<figcaption>{caption}</figcaption></figure>"


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), row_classes: list[str] | None = None,
           cls: str = "") -> str:
    """An HTML table; cells are escaped here, so callers pass plain text."""
    head = "".join(f'<th class="num">{_esc(h)}</th>' if i in numeric else f"<th>{_esc(h)}</th>" for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        tr_cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        cells = "".join(f'<td class="num">{_esc(c)}</td>' if i in numeric else f"<td>{_esc(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr{tr_cls}>{cells}</tr>")
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _missing(what: str, command: str) -> str:
    return f'<p class="missing">No {_esc(what)} yet: run <code>{_esc(command)}</code>.</p>'


def _fmt(x: float, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if p is None or np.isnan(p):
        return "–"
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


# ------------------------------------------------------------------------------------------------ sections
def section_table1(out_dir: Path, excluded: tuple[str, ...] = ()) -> str:
    path = out_dir / "table1.csv"
    if not path.exists():
        return _missing("Table 1", "analyse table")
    table = pd.read_csv(path, dtype={"train_langs": str, "test_lang": str})
    rows = display_rows(table)
    groups = list(zip(table["test_lang"], table["width"]))
    classes = ["group-start" if i and groups[i] != groups[i - 1] else "" for i in range(len(groups))]
    return (_table(DISPLAY_HEADER, rows, numeric={2, 3, 4, 5}, row_classes=classes)
            + '<p class="note">Mean accuracy (%) ± standard error over seeds (sample standard deviation, ddof = 1, '
              "divided by √n). Familiar: query and both images from familiar concepts. ME: query and positive image "
              "from a novel concept, negative image from a familiar one; 50 % means no bias. "
              "Files: <code>table1.csv</code>, <code>table1.md</code>, <code>table1.tex</code>.</p>"
            + (f'<p class="note">{_esc(excluded_note(excluded))}</p>' if excluded else ""))


def section_compare(out_dir: Path) -> str:
    path = out_dir / "comparisons.csv"
    if not path.exists():
        return _missing("comparisons", "analyse compare")
    data = pd.read_csv(path, dtype={"bilingual": str, "monolingual": str, "test_lang": str})
    if data.empty:
        return '<p class="note">No comparison possible: the study needs a monolingual run and a bilingual run sharing its language and width.</p>'
    header = ["Test", "Width", "Bilingual model", "Bi ME (%)", "Mono ME (%)", "Δ pp [95 % CI]", "p", "p Holm",
              "q BH", "Bilingual ME", "p trial-level", "p seed-level"]

    rows = [[r.test_lang.upper(), str(r.width), r.bilingual.upper().replace("+", ", "),
             _fmt(r.bilingual_acc), _fmt(r.monolingual_acc),
             f"{r.diff_pp:+.1f} [{r.ci_low_hier:+.1f}, {r.ci_high_hier:+.1f}]" if not np.isnan(r.ci_low_hier) else f"{r.diff_pp:+.1f}",
             _fmt_p(r.p_hier), _fmt_p(r.p_holm), _fmt_p(r.q_bh), r.decision, _fmt_p(r.p_value), _fmt_p(r.p_seed_level)]
            for r in data.itertuples()]
    lower, sig = data["expected_direction"].astype(bool), data["significant"].astype(bool)
    higher = data["diff_pp"] > 0
    summary = (f"<p>{len(data)} comparisons of a bilingual model with the monolingual model of its test language "
               f"(Mono ME): bilingual ME lower and significant (Holm-adjusted p &lt; 0.05) in <strong>{int((lower & sig).sum())}</strong>, "
               f"lower but not significant in <strong>{int((lower & ~sig).sum())}</strong>, higher but not significant in "
               f"{int((higher & ~sig).sum())}, higher and significant in {int((higher & sig).sum())}. "
               "The paper's expectation is lower (a weaker ME bias in bilinguals).</p>")
    note = ('<p class="note">Test: two-sided hierarchical bootstrap over the shared ME trials that resamples both each '
            "model's training seeds and the trials, so it counts how much another set of training runs would differ; "
            "Δ is the mean difference bilingual − monolingual in percentage points with that bootstrap's 95 % interval "
            "(none with a single seed: not tested). Holm's correction controls the family-wise error "
            "over the rows of this table; q (BH) is the Benjamini–Hochberg false discovery rate. The trial-level column "
            "is a sign-flip permutation test over trials that treats the trained models as fixed; the seed-level column "
            "is an exact permutation test on per-seed accuracies (low power with "
            "few seeds). See docs/analyses.md. File: <code>comparisons.csv</code>.</p>")
    classes = ["sig" if s else "" for s in data["significant"]]
    return summary + _table(header, rows, numeric={1, 3, 4, 5, 6, 7, 8, 10, 11}, row_classes=classes) + note


def section_variance(out_dir: Path) -> str:
    fig = out_dir / "variance.png"
    if not fig.exists():
        return _missing("variance analysis", "analyse variance")
    return _figure(fig, "variance of familiar and novel samples",
                   "Trace of the covariance of L2-normalised test embeddings (≤ 30 items per concept and language), "
                   "over all samples (top) and within each concept, averaged over concepts (bottom); bars are means over "
                   "seeds, error bars 95 % bootstrap intervals over seeds. File: <code>variance.csv</code>.")


def _gap_text(run) -> str:
    gap = run.analysis_dir / "modality_gap.csv"
    if not gap.exists():
        return ""
    value = pd.read_csv(gap).set_index("kind")["modality_gap"].get("all", np.nan)
    return f" Modality gap (distance between the audio and the image centroid): {value:.3f}."


def section_embeddings(runs) -> str:
    pictured = [r for r in first_seed_runs(runs) if (r.analysis_dir / "pca.png").exists()]
    if not pictured:
        return _missing("embedding pictures", "analyse embeddings")
    headline = next((r for r in pictured if (r.analysis_dir / "tsne.png").exists()), pictured[0])
    legend = "Familiar concepts coloured, novel grey; markers by language"
    parts = [f"<h3>{_esc(headline.train_langs.upper())} · width {headline.width} · seed {headline.seed}</h3>",
             '<div class="gallery">',
             _figure(headline.analysis_dir / "pca.png", f"PCA {headline.name}",
                     f"PCA of audio and image test embeddings. {legend}, images ×.{_gap_text(headline)}")]
    if (headline.analysis_dir / "tsne.png").exists():
        parts.append(_figure(headline.analysis_dir / "tsne.png", f"t-SNE {headline.name}", f"t-SNE of audio test embeddings. {legend}."))
    parts.append("</div>")
    others = [r for r in pictured if r is not headline]
    if others:
        figures = []
        for run in others:
            figures.append(_figure(run.analysis_dir / "pca.png", f"PCA {run.name}",
                                   f"{_esc(run.train_langs.upper())} · width {run.width} · seed {run.seed}.{_gap_text(run)}"))
            if (run.analysis_dir / "tsne.png").exists():
                figures.append(_figure(run.analysis_dir / "tsne.png", f"t-SNE {run.name}", f"t-SNE, {_esc(run.train_langs.upper())}."))
        parts.append(f"<details><summary>PCA of the other {len(others)} models</summary><div class=\"gallery\">{''.join(figures)}</div></details>")
    return "".join(parts)


def section_gap(runs) -> str:
    frames = [pd.read_csv(r.analysis_dir / "modality_gap.csv", dtype={"train_langs": str}) for r in runs if (r.analysis_dir / "modality_gap.csv").exists()]
    if not frames:
        return ""
    data = pd.concat(frames)
    wide = data.pivot_table(index=["train_langs", "width"], columns="kind", values="modality_gap", aggfunc="mean").reset_index()
    rows = [[r["train_langs"].upper(), str(r["width"]), *(_fmt(r.get(k, np.nan), 3) for k in ("all", "familiar", "novel"))]
            for _, r in wide.iterrows()]
    return ("<h3>Modality gap</h3>" + _table(["Training languages", "Width", "All", "Familiar", "Novel"], rows, numeric={1, 2, 3, 4})
            + '<p class="note">Euclidean distance between the centroids of the audio and the image test embeddings, mean over the seeds that have it.</p>')


def section_translation(out_dir: Path) -> str:
    path = out_dir / "translation.csv"
    if not path.exists():
        return _missing("translation probe (it needs bilingual runs)", "analyse translation")
    data = pd.read_csv(path, dtype={"train_langs": str, "query_lang": str, "centroid_lang": str})
    data["direction"] = data["query_lang"].str.upper() + " → " + data["centroid_lang"].str.upper()
    keys = ["train_langs", "width", "direction"]
    wide = data.pivot_table(index=keys, columns=["kind", "representation"], values="accuracy", sort=False)
    chance = data.groupby("kind")["chance"].first()
    seeds = data.groupby(keys, sort=False)["n_seeds"].max()
    columns = [(kind, rep) for kind in KINDS for rep in ("model", "raw features")]
    rows = [[langs.upper(), str(width), direction, *(_fmt(wide.loc[(langs, width, direction)].get(c, np.nan)) for c in columns),
             str(seeds.loc[(langs, width, direction)])] for langs, width, direction in wide.index]
    header = ["Model", "Width", "Query → centroids", "Familiar: model", "Familiar: raw", "Novel: model", "Novel: raw", "Seeds"]
    return (_table(header, rows, numeric={1, 3, 4, 5, 6, 7})
            + '<p class="note">Accuracy (%) of the nearest L2-normalised concept centroid of the other language\'s audio: '
              "familiar concepts among familiar centroids (chance "
              f"{_fmt(chance.get('familiar', np.nan))} %), novel among novel (chance {_fmt(chance.get('novel', np.nan))} %); "
              "mean over seeds. <em>model</em>: the run's audio embeddings; <em>raw</em>: time-averaged frozen encoder "
              "features of the same items, what the encoder alone gives. File: <code>translation.csv</code>.</p>")


def section_exposure(out_dir: Path) -> str:
    """The exposure table (ME and familiar per condition value) and figure, with the neighbour tests' verdicts."""
    path = out_dir / "exposure.csv"
    data = pd.read_csv(path, dtype={"value": str, "train_langs": str, "test_lang": str})
    tests_path = out_dir / "exposure-tests.csv"
    verdicts = {}
    if tests_path.exists():
        tests = pd.read_csv(tests_path, dtype={"value_a": str, "value_b": str, "train_langs": str, "test_lang": str})
        for r in tests[tests["test"] == "me"].itertuples():
            verdicts[(r.condition, r.train_langs, r.width, r.test_lang, r.value_b)] = (
                f"{r.diff_pp:+.1f} pp vs {r.value_a}, p Holm {_fmt_p(r.p_holm)}")
    header = ["Condition", "Value", "Model", "Width", "Test", "Seeds", "Familiar (%)", "ME (%)", "ME 95 % CI", "ME vs previous value"]
    rows = [[r.condition.replace("_", " "), r.value + (" (reference)" if r.reference else ""), r.train_langs.upper(),
             str(r.width), r.test_lang.upper(), str(r.n_seeds), f"{_fmt(r.familiar_mean)} ± {_fmt(r.familiar_se)}",
             f"{_fmt(r.me_mean)} ± {_fmt(r.me_se)}", f"[{_fmt(r.me_ci_low)}, {_fmt(r.me_ci_high)}]",
             verdicts.get((r.condition, r.train_langs, r.width, r.test_lang, r.value), "")] for r in data.itertuples()]
    groups = list(zip(data["condition"], data["train_langs"], data["width"], data["test_lang"]))
    classes = ["group-start" if i and groups[i] != groups[i - 1] else "" for i in range(len(groups))]
    figure = out_dir / "exposure.png"
    note = ('<p class="note">Mean ± s.e. over seeds and a bootstrap 95 % interval over seeds, in percent. A run that '
            "changes one exposure field is a value of that condition; the runs with the default exposure are the "
            "reference value of every condition. Each value is compared with the previous one on the shared ME trials "
            "by the hierarchical bootstrap of the comparisons above (Holm-corrected over all ME neighbour comparisons). "
            "Files: <code>exposure.csv</code>, <code>exposure-tests.csv</code>.</p>")
    return (_table(header, rows, numeric={3, 5, 6, 7, 8}, row_classes=classes) + note
            + (_figure(figure, "accuracy against exposure", "ME (solid) and familiar (dashed) accuracy against each "
                       "condition's value, 95 % intervals over seeds as bands; dotted: chance (50 %).")
               if figure.exists() else ""))


def section_layers(out_dir: Path) -> str:
    """Familiar and ME per encoder layer (layers.csv, layers.png) and the learned layer weights (layer_weights.png)."""
    parts = []
    path = out_dir / "layers.csv"
    if path.exists():
        data = pd.read_csv(path, dtype={"layer": str, "train_langs": str, "test_lang": str})
        header = ["Layer", "Model", "Width", "Test", "Seeds", "Familiar (%)", "ME (%)"]
        rows = [[r.layer, r.train_langs.upper(), str(r.width), r.test_lang.upper(), str(r.n_seeds),
                 f"{_fmt(r.familiar_mean)} ± {_fmt(r.familiar_se)}", f"{_fmt(r.me_mean)} ± {_fmt(r.me_se)}"]
                for r in data.itertuples()]
        groups = list(zip(data["train_langs"], data["width"], data["test_lang"]))
        classes = ["group-start" if i and groups[i] != groups[i - 1] else "" for i in range(len(groups))]
        parts.append(_table(header, rows, numeric={2, 4, 5, 6}, row_classes=classes)
                     + '<p class="note">Runs trained with <code>train-heads --audio-layer</code>: the audio head read one '
                       "hidden state of the encoder (0 = its input embeddings) or a learned weighted sum of all stored "
                       "layers (<em>weighted</em>). Mean ± s.e. over seeds, in percent. File: <code>layers.csv</code>.</p>")
    figure = out_dir / "layers.png"
    if figure.exists():
        parts.append(_figure(figure, "accuracy per layer", "ME (solid) and familiar (dashed) accuracy against the "
                             "encoder layer, ± s.e. over seeds as bands; a weighted-sum run as a hollow marker at its own tick; "
                             "dotted: chance (50 %)."))
    weights = out_dir / "layer_weights.png"
    if weights.exists():
        parts.append(_figure(weights, "learned layer weights", "The softmax weight of each stored layer in the "
                             "best checkpoint of the --audio-layer weighted runs (mean over seeds, bars: s.d.); "
                             "dotted: the uniform weights they start from. File: <code>layer_weights.csv</code>."))
    return "".join(parts)


def section_trajectory(out_dir: Path) -> str:
    """Accuracy at every saved epoch (the figure), and each model's untrained (epoch 0) and last-epoch means."""
    data = pd.read_csv(out_dir / "trajectory.csv", dtype={"train_langs": str, "lang": str, "test": str})
    last = data.groupby("run")["epoch"].transform("max")
    ends = [data[data["epoch"] == 0].assign(at="untrained"), data[data["epoch"] == last].assign(at="last")]
    means = (pd.concat(ends).groupby(["train_langs", "width", "lang", "test", "at"])["accuracy"].mean()
             .unstack(["test", "at"]))
    header = ["Model", "Width", "Test", "Familiar, untrained (%)", "Familiar, last epoch (%)", "ME, untrained (%)",
              "ME, last epoch (%)"]
    rows = [[train_langs.upper(), str(width), lang.upper(),
             *(_fmt(row.get((test, at), np.nan)) for test in ("familiar", "me") for at in ("untrained", "last"))]
            for (train_langs, width, lang), row in means.iterrows()]
    figure = out_dir / "trajectory.png"
    note = ('<p class="note">Every epoch saved by <code>train-heads --save-epochs</code> scored on the same familiar and '
            "ME episodes as Table 1; epoch 0 is the heads at initialisation (the untrained baseline), mean over seeds. "
            "The saved epochs never choose the checkpoint the other analyses use. File: <code>trajectory.csv</code>.</p>")
    return (_table(header, rows, numeric={1, 3, 4, 5, 6}) + note
            + (_figure(figure, "accuracy against epoch", "Accuracy at each epoch: thin lines are seeds, bold their mean; "
                       "dotted: chance (50 %).") if figure.exists() else ""))


def plot_training_curves(runs, path: Path) -> Path | None:
    """Validation loss and familiar accuracy per epoch, one line per run, coloured by training set."""
    frames = []
    for run in runs:
        m = run.metrics_frame()
        if len(m):
            m["model"], m["seed"] = run.train_langs.upper() + f" w{run.width}", run.seed
            frames.append(m)
    if not frames:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    data = pd.concat(frames, ignore_index=True)
    data["val_familiar_acc"] = 100 * data["val_familiar_acc"]  # metrics.csv holds a fraction; the report shows percent
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, column, label in zip(axes, ["train_loss", "val_loss", "val_familiar_acc"], ["training loss", "validation loss", "validation familiar accuracy (%)"]):
        sns.lineplot(data=data, x="epoch", y=column, hue="model", units="seed", estimator=None, ax=ax, lw=1.2, legend=ax is axes[-1])
        ax.set_title(label, fontsize=10)
        ax.set_ylabel("")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    save_figure(path, fig, dpi=100)
    plt.close(fig)
    return path


def _encoders(config: dict) -> str:
    provs = config.get("provenance", {}) or {}
    names = sorted({f"{p.get('modality')}: {p.get('encoder')}" + (f" L{p['layer']}" if p.get("layer") is not None else "")
                    + (f" L{layers_tag(p['layers'])}" if p.get("layers") else "") for p in provs.values()})
    return "; ".join(names) or "–"


def section_provenance(runs) -> str:
    header = ["Run", "Languages", "Width", "Seed", "Epochs (best)", "Encoders", "Stores", "Manifest hashes", "Code revision", "Status"]
    rows = []
    for run in runs:
        c = run.config
        epochs = len(run.metrics)
        best = f"{epochs} ({run.best_epoch})" if epochs else "–"
        provs = list((c.get("provenance") or {}).values())
        hashes = sorted({str(p.get("corpus_hash", ""))[:12] for p in provs}) or ["–"]
        stores = [p.name for ps in run.audio_stores.values() for p in ps] + [p.name for p in run.image_store]
        rows.append([run.name, ", ".join(run.langs), str(run.width), str(run.seed), best, _encoders(c), " ".join(stores),
                     ", ".join(hashes), str(c.get("code_revision") or "–")[:12], str(c.get("status"))])
    settings = sorted({(str(r.config.get("logit_mode")), str(r.config.get("precision")), str(r.config.get("negatives_mode")),
                        str(r.config.get("batch_size"))) for r in runs})
    note = ("<p class=\"note\">Training settings (logit scale, precision, negatives, batch): "
            + "; ".join(_esc(" / ".join(s)) for s in settings) + ". The full configuration of each run is its <code>config.json</code>.</p>")
    return _table(header, rows, numeric={2, 3}, cls="provenance") + note


# ------------------------------------------------------------------------------------------------- the page
def write_report(study: str, runs, out_dir: Path) -> Path:
    """Write `<out_dir>/report.html` (and training_curves.png) from what the analyses wrote."""
    excluded = study_exclusion(runs)
    make_dirs(out_dir)
    curves = plot_training_curves(runs, out_dir / "training_curves.png")
    widths = sorted({r.width for r in runs})
    seeds = sorted({r.seed for r in runs})
    sections = [
        ("table1", "Table 1: familiar and ME accuracy", section_table1(out_dir, excluded)),
        ("compare", "Bilingual vs monolingual ME", section_compare(out_dir)),
        ("variance", "Variance of familiar and novel samples", section_variance(out_dir)),
        ("embeddings", "Embedding space", section_embeddings(runs) + section_gap(runs)),
        ("translation", "Implicit translation", section_translation(out_dir)),
        *([("exposure", "Exposure", section_exposure(out_dir))] if (out_dir / "exposure.csv").exists() else []),
        *([("trajectory", "Trajectory", section_trajectory(out_dir))] if (out_dir / "trajectory.csv").exists() else []),
        *([("layers", "Encoder layers", section_layers(out_dir))]
          if (out_dir / "layers.csv").exists() or (out_dir / "layer_weights.png").exists() else []),
        ("training", "Training curves", _figure(curves, "training curves", "Per epoch, one line per seed. The tests use each run's checkpoint with the lowest validation loss.")
         if curves else _missing("training metrics", "train-heads")),
        ("provenance", "Runs and provenance", section_provenance(runs)),
    ]
    body = "\n".join(f'<section id="{key}"><h2>{_esc(title)}</h2>{content}</section>' for key, title, content in sections)
    nav = "".join(f'<a href="#{key}">{_esc(title)}</a>' for key, title, _ in sections)
    configs = sorted({r.train_langs for r in runs}, key=lambda t: (len(t.split("+")), t))
    lede = (f"{len(runs)} runs: {', '.join(c.upper() for c in configs)}; width{'s' if len(widths) > 1 else ''} "
            f"{', '.join(map(str, widths))}; seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}."
            + (f" Excluded concepts: {describe(excluded)}." if excluded else ""))
    package = resources.files("analyse.report")
    page = Template(package.joinpath("template.html").read_text()).substitute(
        title=_esc(f"vgsme study “{study}”"), lede=_esc(lede), nav=nav, sections=body,
        style=package.joinpath("style.css").read_text(), created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        out_dir=_esc(out_dir))
    return write_text(out_dir / "report.html", page)
