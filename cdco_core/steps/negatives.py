"""Step ``negatives``: index the OOD pool on the manifold (FAISS) and pick each ID anchor's hard negatives.

Writes ``negatives.parquet`` (one row per anchor and negative: :data:`NEGATIVE_COLUMNS`, rank 1 = nearest on the
manifold), ``manifold.png`` and ``distances.png``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cdco_core.steps.base import Step, StepCall

if TYPE_CHECKING:
    from cdco_core.config import Config
    from cdco_core.plan import Node

log = logging.getLogger(__name__)
NEGATIVE_COLUMNS = ["anchor_task", "anchor_id", "negative_dataset", "negative_id", "manifold_distance",
                    "raw_cosine", "rank"]


def section(cfg: Config, node: Node) -> dict[str, Any]:
    return {"negatives": cfg.negatives.model_dump(mode="json"), "seed": _seed(cfg, node)}


def _seed(cfg: Config, node: Node) -> int:
    from cdco_core.odms.corpora import odms_seed

    return odms_seed(cfg.seed, node.params.get("seed", 0))


def compute(call: StepCall) -> dict[str, Any]:
    from cdco_core.odms.negatives import build_index, select_negatives
    from cdco_core.odms.plots import plot_distances, plot_manifold
    from cdco_core.steps.embed import load_embeddings
    from cdco_core.steps.manifold import load_coords

    cfg, (manifold_id, *embed_ids) = call.cfg, call.node.inputs
    coords = load_coords(call.inputs[manifold_id].path("coords.parquet"))
    frame, vecs = load_embeddings([call.inputs[i] for i in embed_ids])
    if not (frame["example_id"].to_numpy() == coords["example_id"].to_numpy()).all():
        raise RuntimeError("manifold coordinates and embeddings are out of order")  # internal invariant
    xy = coords.attrs["xy"]
    is_pool = (frame["role"] == "pool").to_numpy()
    anchors, pool = frame[~is_pool].reset_index(drop=True), frame[is_pool].reset_index(drop=True)
    names = sorted(pool["dataset"].unique())
    codes = pool["dataset"].map({n: i for i, n in enumerate(names)}).to_numpy()
    n, seed = cfg.negatives, _seed(cfg, call.node)
    index = build_index(xy[is_pool], n.index, n.ivf_nlist, n.ivf_nprobe, n.hnsw_m, seed) \
        if n.mode == "manifold" else None
    sel = select_negatives(xy[~is_pool], vecs[~is_pool], xy[is_pool], vecs[is_pool], codes, n.k, n.fn_ceiling,
                           n.per_dataset_cap, index=index, mode=n.mode, seed=seed)
    table = negatives_table(anchors, pool, sel)
    table.to_parquet(call.out / "negatives.parquet", index=False)
    plot_manifold(coords, table, call.out / "manifold.png", n.plot_anchors, seed)
    plot_distances(table, call.out / "distances.png", n.fn_ceiling)
    short = int(((sel["index"] >= 0).sum(axis=1) < n.k).sum())
    if short:
        log.warning("%d of %d anchors have fewer than k=%d negatives (guard/cap/pool size)", short, len(anchors), n.k)
    return {"rows": len(table), "anchors": len(anchors), "short_anchors": short}


def negatives_table(anchors: pd.DataFrame, pool: pd.DataFrame, sel: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long table, one row per (anchor, negative): the CONTRACT columns; rank 1 = nearest on the manifold."""
    idx = sel["index"]  # (A, k)
    a_rows, slot = np.nonzero(idx >= 0)
    p_rows = idx[a_rows, slot]
    return pd.DataFrame({
        "anchor_task": anchors["dataset"].to_numpy()[a_rows],
        "anchor_id": anchors["example_id"].to_numpy()[a_rows],
        "negative_dataset": pool["dataset"].to_numpy()[p_rows],
        "negative_id": pool["example_id"].to_numpy()[p_rows],
        "manifold_distance": sel["distance"][a_rows, slot].astype(np.float32),
        "raw_cosine": sel["cosine"][a_rows, slot].astype(np.float32),
        "rank": (slot + 1).astype(np.int32),
    })[NEGATIVE_COLUMNS]


STEP = Step("negatives", section, compute, label=lambda node: node.id)
