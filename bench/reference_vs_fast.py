"""Does the fast training path change the result? `train-heads` against `train-heads --reference`, over seeds.

    VGSME_HOME=... .venv/bin/python bench/reference_vs_fast.py --seeds 0-4

On the demo stores (build them first: `vgsme-demo-corpus; extract-features --corpus demo --all`) this
trains the demo's English configuration (`--langs en --width 128 --epochs 20 --logit-mode cap --lr 2e-3`,
the Makefile's DEMO_TRAIN_OPTS) once per seed in each mode, the modes one after another on `--threads`
torch threads (so a shared machine is not hogged): the fast path into the study `<study>-fast`, reference
mode (`train.reference`: every occurrence embedded on its own, fp32, the full transformer layer) into
`<study>-reference`. Then `analyse familiar` and `analyse me` score every complete run on the same
shared test episodes (a run interrupted by a deadline is left out; `--modes` alone trains nothing). It
prints, and writes to `$VGSME_HOME/reports/<study>/reference_vs_fast.csv` and `.md`, per mode: best epoch,
best validation loss, familiar and ME accuracy (%), and seconds per run, each as the mean over seeds with
its 95 % confidence interval (Student t), and the fast − reference difference with its 95 % CI (Welch). Complete runs are not retrained, so a rerun only scores and tabulates. Options the
script does not know go to `train-heads` in both modes (e.g. `--epochs 12`).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when run as a script
from cache import layout  # noqa: E402
from cache.atomic import write_csv, write_text  # noqa: E402
from train.runs import RunFolder  # noqa: E402

DEMO_EN = ["--langs", "en", "--width", "128", "--epochs", "20", "--logit-mode", "cap", "--lr", "2e-3"]
PAPER_EN = ["--langs", "en", "--width", "256", "--epochs", "24", "--logit-mode", "fixed100", "--lr", "2e-4"]
# --pair: which two ways of training are compared (the first minus the second), and the files they write
PAIRS = {"reference": {"fast": DEMO_EN, "reference": [*DEMO_EN, "--reference"]},
         "paper": {"demo": DEMO_EN, "paper": PAPER_EN}}
OUTPUT = {"reference": "reference_vs_fast", "paper": "demo_vs_paper"}
METRICS = {"best_epoch": "best epoch", "best_val_loss": "best val loss", "familiar": "familiar %", "me": "ME %",
           "seconds": "s per run"}


def tool(name: str) -> str:
    """A console script of this virtual environment (`train-heads`, `analyse`)."""
    return str(Path(sys.executable).parent / name)


def train(options: list[str], study: str, seeds: str, corpus: str, threads: int, extra: list[str]) -> None:
    command = [tool("train-heads"), "--corpus", corpus, *options, "--seeds", seeds, "--study", study,
               "--threads", str(threads), "--quiet", *extra]
    print("$ train-heads", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def complete_runs(study: str) -> list[Path]:
    """The study's run folders whose training finished (an interrupted run is left out, not guessed at)."""
    folder = layout.runs_dir(study)
    runs = sorted(folder.iterdir()) if folder.is_dir() else []
    return [run for run in runs if RunFolder.is_run_folder(run) and RunFolder.open(run).status == "complete"]


def score(runs: list[Path]) -> None:
    """`analyse familiar` and `analyse me` on these runs (the shared test episodes of the corpus)."""
    for test in ("familiar", "me"):
        subprocess.run([tool("analyse"), test, *map(str, runs)], check=True, stdout=subprocess.DEVNULL)


def run_rows(mode: str, runs: list[Path]) -> list[dict]:
    """One row per run: its best epoch and validation loss, its test accuracies, its training seconds."""
    rows = []
    for run_dir in runs:
        folder = RunFolder.open(run_dir)
        config, metrics, best = folder.config, folder.metrics, folder.best_row
        accuracy = pd.read_csv(run_dir / "analysis" / "accuracy.csv").groupby("test")["accuracy"].mean()
        rows.append({"mode": mode, "seed": config["seed"], "precision": config["precision"],
                     "best_epoch": best["epoch"], "best_val_loss": best["val_loss"],
                     "familiar": accuracy["familiar"], "me": accuracy["me"],
                     "seconds": sum(row["seconds"] for row in metrics)})
    return rows


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95 % Student-t interval (nan for a single value)."""
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    return float(values.mean()), float(half)


def welch_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """mean(a) − mean(b) and the half-width of its 95 % Welch interval."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return float(a.mean() - b.mean()), 0.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(a.mean() - b.mean()), float(stats.t.ppf(0.975, dof) * np.sqrt(va + vb))


def summary(runs: pd.DataFrame, modes: list[str]) -> pd.DataFrame:
    """Per metric: each mode's mean ± CI and the difference first − second mode ± CI."""
    rows = []
    for key, label in METRICS.items():
        row = {"metric": label}
        for mode in modes:
            values = runs.loc[runs["mode"] == mode, key].to_numpy(float)
            row[f"{mode}_n"] = len(values)
            row[f"{mode}_mean"], row[f"{mode}_ci95"] = mean_ci(values)
        diff = welch_ci(*(runs.loc[runs["mode"] == mode, key].to_numpy(float) for mode in modes))
        row["diff_mean"], row["diff_ci95"] = diff
        row["differs"] = bool(abs(diff[0]) > diff[1])
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, modes: list[str]) -> str:
    first, second = modes
    lines = [f"| | {first} | {second} | {first} − {second} |", "|---|---|---|---|"]
    for row in table.to_dict("records"):
        digits = 3 if row["metric"] == "best val loss" else 1
        cell = lambda m, h: f"{m:.{digits}f} ± {h:.{digits}f}"
        lines.append(f"| {row['metric']} | {cell(row[f'{first}_mean'], row[f'{first}_ci95'])} | "
                     f"{cell(row[f'{second}_mean'], row[f'{second}_ci95'])} | {cell(row['diff_mean'], row['diff_ci95'])}"
                     f"{' (differs)' if row['differs'] else ''} |")
    n = int(table[f"{first}_n"].iloc[0]), int(table[f"{second}_n"].iloc[0])
    return "\n".join(lines) + f"\n\nMeans over seeds ± 95 % CI half-widths ({first}: {n[0]} seeds, {second}: {n[1]}).\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", choices=list(PAIRS), default="reference",
                        help="reference: the fast path vs --reference (the default); paper: the demo's training "
                        "options vs the paper's (W=256, 24 epochs, fixed temperature 100, lr 2e-4)")
    parser.add_argument("--seeds", default="0-4", help="seeds of both modes, e.g. 0-4 (the default) or 0,2")
    parser.add_argument("--study", help="study name prefix: <study>-<mode> [default: refvsfast or demovspaper]")
    parser.add_argument("--corpus", default="demo", help="corpus whose cache holds the stores (default demo)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--modes", nargs="*", help="modes to train (default both of the pair); `--modes` alone "
                        "trains nothing and tabulates the complete runs there are")
    args, extra = parser.parse_known_args()
    pair = PAIRS[args.pair]
    modes = list(pair)
    study = args.study or {"reference": "refvsfast", "paper": "demovspaper"}[args.pair]
    for mode in modes if args.modes is None else args.modes:
        if mode not in pair:
            raise SystemExit(f"--modes {mode}: the pair {args.pair} has the modes {', '.join(modes)}")
        train(pair[mode], f"{study}-{mode}", args.seeds, args.corpus, args.threads, extra)
    done = {mode: complete_runs(f"{study}-{mode}") for mode in modes}
    if not all(len(runs) >= 2 for runs in done.values()):
        raise SystemExit(f"each mode needs at least two complete runs to compare; have "
                         f"{', '.join(f'{m}: {len(r)}' for m, r in done.items())}")
    score([run for runs in done.values() for run in runs])
    runs = pd.DataFrame([row for mode, folders in done.items() for row in run_rows(mode, folders)])
    table = summary(runs, modes)
    out, name = layout.reports_dir(study), OUTPUT[args.pair]
    write_csv(out / f"{name}_runs.csv", runs)
    write_csv(out / f"{name}.csv", table)
    write_text(out / f"{name}.md", markdown(table, modes))
    print(runs.to_string(index=False))
    print(markdown(table, modes))
    print(f"written: {out / (name + '.md')} (and .csv, _runs.csv)")


if __name__ == "__main__":
    main()
