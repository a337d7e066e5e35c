"""Comparison plots (PNG, written atomically): grouped bars by kind, per-task deltas against a baseline.

matplotlib is imported lazily with the Agg backend, so nothing here needs a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdco_core.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float]], errors: dict[str, list[float]] | None):
    """One cluster per group, one bar per series (NaN bars are left out)."""
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        err = None if errors is None else np.nan_to_num(np.asarray(errors[name], float))
        ax.bar(x + (i - (n - 1) / 2) * width, np.asarray(values, float), width, yerr=err, label=name, capsize=2)
    ax.set_xticks(x, groups, rotation=20, ha="right")
    ax.legend(fontsize=7, ncol=min(4, n))


def _width(groups: int, series: int) -> float:
    """Figure width in inches: room for every bar and a rotated label per cluster."""
    return max(5.0, 1.5 + groups * (0.5 + 0.3 * max(1, series)))


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_kind_bars(means: dict[str, dict[str, float]], sds: dict[str, dict[str, float]], kinds: list[str],
                   path: Path, title: str = "") -> Path:
    """Grouped bars: one cluster per kind (ID, OOD, KI, overall), one bar per method, error bar = sd over seeds.

    Args:
        means: method -> kind -> mean of the kind's average main metric over seeds.
        sds: the same shape, standard deviations.
        kinds: the clusters, in order.
        path: the PNG to write.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(_width(len(kinds), len(means)), 3.6))
    _grouped_bars(ax, kinds, {m: [v.get(k, np.nan) for k in kinds] for m, v in means.items()},
                  {m: [v.get(k, np.nan) for k in kinds] for m, v in sds.items()})
    ax.set_ylabel("mean main metric")
    ax.set_title(title or "Average main metric by task kind (mean ± sd over seeds)", fontsize=9)
    return _save(fig, path)


def plot_task_deltas(deltas: dict[str, dict[str, float]], tasks: list[str], baseline: str, path: Path) -> Path:
    """Grouped bars of mean(method) - mean(baseline) per task's main metric, one bar per method.

    Args:
        deltas: method -> task -> difference of seed means (the baseline itself is left out).
        tasks: the clusters, in order.
        baseline: name shown in the title.
        path: the PNG to write.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(_width(len(tasks), len(deltas)), 3.6))
    _grouped_bars(ax, tasks, {m: [v.get(t, np.nan) for t in tasks] for m, v in deltas.items()}, None)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel(f"main metric − {baseline}")
    ax.set_title(f"Per-task difference against {baseline} (seed means)", fontsize=9)
    return _save(fig, path)
