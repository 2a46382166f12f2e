"""Concepts a study leaves out (the paper drops the novel concept *nautilus*), and the one rule for them.

A run records the concepts it was trained without in its config.json (`exclude_concepts`, sorted; absent
in runs made before the option existed, which means none). Every test of an analysis must leave exactly
those concepts out — episodes, the translation probe, variances, pictures — and every run of one analysis
must agree on them: a Table 1 row or a paired comparison over runs that excluded different concepts would
average or pair different tests.
"""
from __future__ import annotations



class ExclusionError(ValueError):
    """The runs of one analysis were trained with different excluded concepts."""


def run_exclusion(run) -> tuple[str, ...]:
    """The sorted concepts `run` excludes, as its run folder records them."""
    return tuple(run.exclude_concepts)


def study_exclusion(runs) -> tuple[str, ...]:
    """The exclusion all `runs` share; raises `ExclusionError` naming the runs of each exclusion otherwise."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for run in runs:
        groups.setdefault(run_exclusion(run), []).append(run.name)
    if len(groups) > 1:
        detail = "; ".join(f"{describe(excluded)}: {', '.join(names)}" for excluded, names in sorted(groups.items()))
        raise ExclusionError(
            f"the runs exclude different concepts ({detail}); analyse runs trained with the same "
            "--exclude-concepts together (name their folders), or retrain the others with it")
    return next(iter(groups), ())


def describe(excluded: tuple[str, ...]) -> str:
    """`nautilus, yak` or `none`: how tables, the report and messages name an exclusion."""
    return ", ".join(excluded) if excluded else "none"


def run_test_embeddings(run, device: str = "cpu", precision: str = "fp32"):
    """The run's test-item embeddings (`analyse.export.run_embeddings`) without its excluded concepts:
    what every test, variance and picture of the run starts from. The export itself keeps every item."""
    from analyse.export import run_embeddings

    embedded = run_embeddings(run, device, precision=precision)
    excluded = run_exclusion(run)
    return embedded.select(~embedded.items["concept"].isin(list(excluded)).to_numpy()) if excluded else embedded
