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


def method_colors(methods: list[str]) -> dict[str, tuple[float, ...]]:
    """One colour per method, by its place in ``methods``: the same method has the same colour in every plot of a
    comparison (the delta plot leaves the baseline out). tab10 up to 10 methods; beyond (16 are registered), tab20
    with its dark shades first and the light ones after, so neighbouring bars never share a hue."""
    if len(methods) <= 10:
        cmap, order = _pyplot().get_cmap("tab10"), list(range(10))
    else:
        cmap, order = _pyplot().get_cmap("tab20"), [*range(0, 20, 2), *range(1, 20, 2)]
    return {m: cmap(order[i % len(order)]) for i, m in enumerate(methods)}


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float]], errors: dict[str, list[float]] | None,
                  colors: dict[str, tuple[float, ...]] | None = None):
    """One cluster per group, one bar per series (NaN bars are left out); the legend sits right of the axes."""
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    colors = colors or method_colors(list(series))
    for i, (name, values) in enumerate(series.items()):
        err = None if errors is None else np.nan_to_num(np.asarray(errors[name], float))
        ax.bar(x + (i - (n - 1) / 2) * width, np.asarray(values, float), width, yerr=err, label=name, capsize=2,
               color=colors.get(name))
    ax.set_xticks(x, groups, rotation=20, ha="right")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def value_range(means: dict[str, dict[str, float]], sds: dict[str, dict[str, float]],
                margin: float = 0.05) -> tuple[float, float] | None:
    """y-limits around every mean ± sd, ``margin`` either side (None when nothing is finite). The scores of
    methods worth comparing sit close together; an axis from 0 would flatten their differences."""
    mean_sd = [(m, sds.get(k, {}).get(g, 0.0)) for k, v in means.items() for g, m in v.items() if np.isfinite(m)]
    if not mean_sd:
        return None
    return min(m - s for m, s in mean_sd) - margin, max(m + s for m, s in mean_sd) + margin


def _width(groups: int, series: int) -> float:
    """Figure width in inches: room for every bar and a rotated label per cluster."""
    return max(5.0, 1.5 + groups * (0.5 + 0.3 * max(1, series)))


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_kind_bars(means: dict[str, dict[str, float]], sds: dict[str, dict[str, float]], kinds: list[str],
                   path: Path, title: str = "", colors: dict[str, tuple[float, ...]] | None = None) -> Path:
    """Grouped bars: one cluster per kind (ID, OOD, KI, overall), one bar per method, error bar = sd over seeds.

    Args:
        means: method -> kind -> mean of the kind's average main metric over seeds.
        sds: the same shape, standard deviations.
        kinds: the clusters, in order.
        path: the PNG to write.
        colors: method -> colour (default :func:`method_colors` of ``means``' methods).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(_width(len(kinds), len(means)), 3.6))
    _grouped_bars(ax, kinds, {m: [v.get(k, np.nan) for k in kinds] for m, v in means.items()},
                  {m: [v.get(k, np.nan) for k in kinds] for m, v in sds.items()}, colors)
    limits = value_range({m: {k: v.get(k, np.nan) for k in kinds} for m, v in means.items()}, sds)
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_ylabel("mean main metric (axis not from 0)")
    ax.set_title(title or "Average main metric by task kind (mean ± sd over seeds)", fontsize=9)
    return _save(fig, path)


def plot_task_deltas(deltas: dict[str, dict[str, float]], tasks: list[str], baseline: str, path: Path,
                     colors: dict[str, tuple[float, ...]] | None = None) -> Path:
    """Grouped bars of mean(method) - mean(baseline) per task's main metric, one bar per method.

    Args:
        deltas: method -> task -> difference of seed means (the baseline itself is left out).
        tasks: the clusters, in order.
        baseline: name shown in the title.
        path: the PNG to write.
        colors: method -> colour; pass the kind plot's so a method keeps its colour.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(_width(len(tasks), len(deltas)), 3.6))
    _grouped_bars(ax, tasks, {m: [v.get(t, np.nan) for t in tasks] for m, v in deltas.items()}, None, colors)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel(f"main metric − {baseline}")
    ax.set_title(f"Per-task difference against {baseline} (seed means)", fontsize=9)
    return _save(fig, path)
