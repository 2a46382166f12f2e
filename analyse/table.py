"""Table 1: familiar and ME accuracy per training language set and test language, mean ± SE over seeds.

Input is the stacked per-run accuracy summaries (columns run, train_langs, width, seed, test, lang,
accuracy in percent). The standard error is the sample standard deviation (ddof=1) over seeds divided
by sqrt(n_seeds), as in the paper; it is empty when there is a single seed.

When some runs kept their epochs (`train-heads --save-epochs`), Table 1 gains an "Untrained: <test language>"
row per test language and width: epoch 0 of those runs (the same heads at initialisation, same seeds; see
analyse.trajectory), so a reader sees where chance lies for the architecture. Without such runs the table is
unchanged.

When the runs were trained without some concepts (`exclude_concepts`), every file says so: table1.csv gains
an `excluded` column (the names joined by `;`) and the Markdown and LaTeX tables a note line; with nothing
excluded the files are exactly as before.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cache.atomic import write_csv, write_text

UNTRAINED = "untrained"  # train_langs of the baseline rows (analyse.trajectory.UNTRAINED)
TABLE_COLUMNS = ["train_langs", "test_lang", "width", "familiar_mean", "familiar_se", "me_mean", "me_se", "n_seeds"]
EXCLUDED_COLUMN = "excluded"


def _se(values: pd.Series) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def _split_condition(train_langs: str) -> tuple[list[str], str]:
    """`en+fr-r75` → (["en", "fr"], "r75"): the languages, and the condition suffix (`eq` for the
    equal-steps control, an exposure suffix, or "")."""
    langs, _, condition = train_langs.partition("-")
    return langs.split("+"), condition


def _row_order(train_langs: str, test_lang: str) -> tuple[int, str, str]:
    """Monolingual first, then the bilingual sets by partner language, as in the paper; conditions after
    their default run; the untrained baseline first."""
    if train_langs == UNTRAINED:
        return (0, "", "")
    langs, condition = _split_condition(train_langs)
    partners = [lang for lang in langs if lang != test_lang]
    return (len(langs), "+".join(partners), condition)


def table1(accuracies: pd.DataFrame) -> pd.DataFrame:
    """The Table 1 rows (percentages), grouped by test language, then width, monolingual first."""
    needed = {"train_langs", "width", "seed", "test", "lang", "accuracy"}
    if missing := needed - set(accuracies.columns):
        raise ValueError(f"accuracy table lacks columns {sorted(missing)}")
    rows = []
    for (train_langs, test_lang, width), group in accuracies.groupby(["train_langs", "lang", "width"], sort=False):
        row = {"train_langs": train_langs, "test_lang": test_lang, "width": int(width)}
        if group.duplicated(["test", "seed"]).any():
            raise ValueError(f"two runs of {train_langs} width {width} share a seed; a table row needs one run per seed")
        seeds = set(group["seed"])
        for test in ("familiar", "me"):
            values = group.loc[group["test"] == test, "accuracy"]
            row[f"{test}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{test}_se"] = _se(values)
        row["n_seeds"] = len(seeds)
        rows.append(row)
    out = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    if out.empty:
        return out
    order = out.apply(lambda r: (r["test_lang"], r["width"], *_row_order(r["train_langs"], r["test_lang"])), axis=1)
    return out.loc[order.sort_values().index].reset_index(drop=True)


def _train_label(train_langs: str, test_lang: str) -> str:
    if train_langs == UNTRAINED:
        return f"Untrained: {test_lang.upper()}"
    langs, condition = _split_condition(train_langs)
    note = f" ({condition})" if condition else ""
    if len(langs) == 1:
        return f"Monolingual: {langs[0].upper()}{note}"
    ordered = [test_lang] + [lang for lang in langs if lang != test_lang]
    return "Bilingual: " + ", ".join(lang.upper() for lang in ordered) + note


def _cell(mean: float, se: float, plus_minus: str) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.1f}" if np.isnan(se) else f"{mean:.1f}{plus_minus}{se:.1f}"


def display_rows(table: pd.DataFrame, plus_minus: str = " ± ") -> list[list[str]]:
    """Rows as the paper prints them: training set, test language, width, familiar, ME, seeds."""
    return [
        [
            _train_label(r.train_langs, r.test_lang), r.test_lang.upper(), str(r.width),
            _cell(r.familiar_mean, r.familiar_se, plus_minus), _cell(r.me_mean, r.me_se, plus_minus), str(r.n_seeds),
        ]
        for r in table.itertuples()
    ]


DISPLAY_HEADER = ["Training languages", "Test language", "Width", "Familiar (%)", "ME (%)", "Seeds"]


def excluded_note(excluded: tuple[str, ...]) -> str:
    """The sentence every Table 1 rendering adds when concepts were left out ("" when none were)."""
    return f"Excluded concepts (in no training set and no test): {', '.join(excluded)}." if excluded else ""


def with_excluded(table: pd.DataFrame, excluded: tuple[str, ...]) -> pd.DataFrame:
    """Table 1 with the `excluded` column when concepts were left out; unchanged otherwise."""
    return table.assign(**{EXCLUDED_COLUMN: ";".join(excluded)}) if excluded else table


def to_markdown(table: pd.DataFrame, excluded: tuple[str, ...] = ()) -> str:
    """A GitHub-flavoured Markdown table (and a note line naming the excluded concepts, if any)."""
    lines = ["| " + " | ".join(DISPLAY_HEADER) + " |", "|" + "---|" * len(DISPLAY_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in display_rows(table)]
    if excluded:
        lines += ["", excluded_note(excluded)]
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    for char in "&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text


def to_latex(table: pd.DataFrame, excluded: tuple[str, ...] = ()) -> str:
    """A booktabs table with a rule between test languages (and a note row naming excluded concepts)."""
    lines = [r"\begin{tabular}{llrlll}", r"\toprule", " & ".join(DISPLAY_HEADER).replace("%", r"\%") + r" \\", r"\midrule"]
    previous = None
    for r, row in zip(table.itertuples(), display_rows(table, plus_minus=r"$\pm$")):
        if previous is not None and (r.test_lang, r.width) != previous:
            lines.append(r"\midrule")
        previous = (r.test_lang, r.width)
        lines.append(" & ".join(row) + r" \\")
    lines.append(r"\bottomrule")
    if excluded:
        lines.append(rf"\multicolumn{{{len(DISPLAY_HEADER)}}}{{l}}{{\footnotesize {_tex_escape(excluded_note(excluded))}}} \\")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ binding to runs
def study_table(runs, out_dir: Path) -> dict[str, Path]:
    """table1.csv, table1.md and table1.tex from the runs' accuracy.csv files, with the untrained baseline
    from the cached trajectories of runs with saved epochs (the runs must agree on the excluded concepts,
    which every file records)."""
    from analyse.exclusion import study_exclusion
    from analyse.tests import collect
    from analyse.trajectory import untrained_accuracy

    excluded = study_exclusion(runs)
    accuracies = collect(runs, "accuracy.csv")
    baseline = untrained_accuracy(runs)
    table = table1(pd.concat([accuracies, baseline], ignore_index=True) if len(baseline) else accuracies)
    return {"table1": write_csv(out_dir / "table1.csv", with_excluded(table, excluded)),
            "table1_md": write_text(out_dir / "table1.md", to_markdown(table, excluded)),
            "table1_tex": write_text(out_dir / "table1.tex", to_latex(table, excluded))}
