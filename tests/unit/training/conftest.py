"""Small shared pieces for the trainer tests: the smoke ID tasks and a fresh tiny model."""

from __future__ import annotations

import pytest


@pytest.fixture
def id_tasks(smoke_cfg):
    from cdco_core.data import load_tasks

    return [t for t in load_tasks(smoke_cfg.data) if t.spec.kind == "ID"]


def fake_negatives(cfg, out) -> dict:
    """Write ``out/negatives.parquet`` of the CONTRACT's shape without UMAP: every ID train row gets k OOD train
    rows, drawn with a fixed seed; returns the step's outputs. The trainer is under test here, not the manifold
    (tests/unit/odms covers that)."""
    import numpy as np
    import pandas as pd

    from cdco_core.data import load_tasks
    from cdco_core.io import write_parquet

    tasks = load_tasks(cfg.data)
    anchors = [(t.name, i) for t in tasks if t.spec.kind == "ID" for i in t.splits["train"]["example_id"]]
    pool = [(t.name, i) for t in tasks if t.spec.kind == "OOD" for i in t.splits["train"]["example_id"]]
    rng = np.random.default_rng(0)
    k = cfg.negatives.k
    rows = []
    for task, aid in anchors:
        for r, j in enumerate(rng.choice(len(pool), size=k, replace=False), 1):
            rows.append((task, aid, pool[j][0], pool[j][1], float(r), 0.0, r))
    df = pd.DataFrame(rows, columns=["anchor_task", "anchor_id", "negative_dataset", "negative_id",
                                     "manifold_distance", "raw_cosine", "rank"])
    write_parquet(df, out / "negatives.parquet")
    return {"rows": len(df), "anchors": len(anchors), "short_anchors": 0}
