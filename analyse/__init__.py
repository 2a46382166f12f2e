"""Stage three: familiar and ME tests, Table 1, comparisons, variance, embeddings, translation, report.

`analyse.load_study(name_or_path)` and `analyse.load_run(path)` (see `analyse.api`) give a study's results
as pandas DataFrames in a notebook. They are imported on first use, so that `import analyse.cli` (and
`analyse -h`) stays light.
"""
from __future__ import annotations

__all__ = ["load_run", "load_study"]


def __getattr__(name: str):
    if name in __all__:
        from analyse import api

        return getattr(api, name)
    raise AttributeError(f"module 'analyse' has no attribute {name!r}")
