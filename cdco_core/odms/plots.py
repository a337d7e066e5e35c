"""ODMS figures (PNG, matplotlib's Agg backend): the manifold by domain with anchors joined to their negatives,
and the anchor-negative distance distribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cdco_core.io import atomic_path


def project_2d(coords: np.ndarray, fit_rows: int = 20000, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D view of d-dimensional manifold coordinates: themselves when d == 2, else their first two principal
    components (PCA fitted on at most ``fit_rows`` rows; cheap and deterministic, unlike a second UMAP).

    Returns:
        ((N, 2) points, axis label prefix).
    """
    if coords.shape[1] == 2:
        return coords, "UMAP"
    mean = coords.mean(axis=0)
    rows = coords if len(coords) <= fit_rows else coords[np.random.default_rng(seed).choice(len(coords), fit_rows,
                                                                                             replace=False)]
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)  # vt: (d, d) principal axes
    return (coords - mean) @ vt[:2].T, "PCA of UMAP"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def plot_manifold(coords: pd.DataFrame, negatives: pd.DataFrame, path: Path, n_anchors: int = 30,
                  seed: int = 0, max_points: int = 20000) -> Path:
    """Scatter the manifold coloured by dataset; join a seeded sample of anchors to their negatives.

    Args:
        coords: frame with ``example_id, dataset, role`` and (N, d) coordinates in ``coords.attrs["xy"]``.
        negatives: the negatives table (anchor_id, negative_id, ...).
        path: PNG to write.
        n_anchors: anchors drawn with their negatives.
        max_points: points drawn per dataset at most (seeded sample), so big pools stay readable.
    """
    plt = _pyplot()
    xy, label = project_2d(coords.attrs["xy"], seed=seed)
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(8, 6.5), dpi=110)
    for name, rows in coords.groupby("dataset", sort=True).indices.items():
        rows = rows if len(rows) <= max_points else rng.choice(rows, max_points, replace=False)
        role = coords["role"].iloc[rows[0]]
        ax.scatter(xy[rows, 0], xy[rows, 1], s=4 if role == "pool" else 7, alpha=0.45,
                   marker="o" if role == "pool" else "^", label=f"{name} ({role}, {len(rows)})")
    pos = pd.Series(np.arange(len(coords)), index=coords["example_id"].to_numpy())
    anchors = negatives["anchor_id"].drop_duplicates()
    picked = anchors.sample(min(n_anchors, len(anchors)), random_state=seed) if len(anchors) else anchors
    pairs = negatives[negatives["anchor_id"].isin(set(picked))]
    a_xy, n_xy = xy[pos[pairs["anchor_id"]].to_numpy()], xy[pos[pairs["negative_id"]].to_numpy()]
    for (x0, y0), (x1, y1) in zip(a_xy, n_xy, strict=True):
        ax.plot([x0, x1], [y0, y1], color="black", lw=0.5, alpha=0.6)
    if len(pairs):
        ax.scatter(a_xy[:, 0], a_xy[:, 1], s=30, marker="*", color="black", label="sampled anchors")
    ax.set_xlabel(f"{label} 1")
    ax.set_ylabel(f"{label} 2")
    ax.set_title(f"ODMS manifold: {len(picked)} anchors joined to their hard negatives")
    ax.legend(loc="best", fontsize=7, markerscale=2)
    return _save(fig, plt, path)


def plot_distances(negatives: pd.DataFrame, path: Path, fn_ceiling: float) -> Path:
    """Histograms of anchor-negative manifold distance and raw cosine (with the false-negative ceiling)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    left.hist(negatives["manifold_distance"].dropna(), bins=50, color="tab:blue")
    left.set_xlabel("manifold distance (L2 in UMAP space)")
    left.set_ylabel("anchor-negative pairs")
    right.hist(negatives["raw_cosine"].dropna(), bins=50, color="tab:orange")
    right.axvline(fn_ceiling, color="red", ls="--", label=f"fn_ceiling = {fn_ceiling}")
    right.set_xlabel("raw cosine in embedding space")
    right.legend(fontsize=8)
    fig.suptitle(f"{len(negatives)} anchor-negative pairs")
    return _save(fig, plt, path)


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
