"""What every grid figure of the analyses ends with: one legend for all its panels, beside them, then an atomic
save. One place, so that the exposure, trajectory and layer figures cannot drift apart in how they look."""
from __future__ import annotations

from pathlib import Path

from cache import atomic


def save_with_shared_legend(fig, axes, path: str | Path, last: str | None = None) -> Path:
    """Gather the legend entries of every panel (each label once), draw them as one legend right of the grid,
    save `fig` to `path` atomically and close it. `last`: a label moved to the end (e.g. "chance")."""
    import matplotlib.pyplot as plt  # after the caller chose its backend (Agg)

    unique = {}
    for ax in axes.flat:
        unique.update((label, handle) for handle, label in zip(*ax.get_legend_handles_labels()))
    if last in unique:
        unique[last] = unique.pop(last)
    fig.legend(unique.values(), unique.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    atomic.save_figure(path, fig, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
