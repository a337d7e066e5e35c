"""Step ``manifold``: fit UMAP on a seeded sample of every embedded row (anchors and pool) and map them all.

Writes ``coords.parquet`` (example_id, dataset, role, coords) and ``reducer.joblib`` (the fitted reducer; joblib
is pickle, so it is only ever loaded after its sha256 matches this step's verified record).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from cdco_core.steps.base import Step, StepCall

if TYPE_CHECKING:
    from cdco_core.config import Config
    from cdco_core.plan import Node


def section(cfg: Config, node: Node) -> dict[str, Any]:
    return {"manifold": cfg.manifold.model_dump(mode="json"), "umap_seed": _umap_seed(cfg, node)}


def _umap_seed(cfg: Config, node: Node) -> int:
    from cdco_core.odms.corpora import odms_seed

    return odms_seed(cfg.manifold.seed, node.params.get("seed", 0))


def compute(call: StepCall) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cdco_core.odms.manifold import fit_manifold_apart
    from cdco_core.odms.shards import vectors_table
    from cdco_core.steps.embed import load_embeddings

    frame, vecs = load_embeddings([call.inputs[i] for i in call.node.inputs])  # anchors first, in plan order
    m = call.cfg.manifold
    def on_phase(i: int, what: str) -> None:  # two phases: fit (numba compiles on first use), transform
        if call.on_step is not None:
            call.on_step({"step": i, "total": 2, "unit": "phase", "what": what})

    # in a process of its own: numba's compiler memory and umap's imports never reach this one (bench/README.md)
    coords, sample, timings = fit_manifold_apart(vecs, m.n_components, m.n_neighbors, m.min_dist, m.sample_size,
                                                 _umap_seed(call.cfg, call.node), call.out / "reducer.joblib",
                                                 on_phase)
    table = vectors_table(frame["example_id"].tolist(), frame["dataset"].tolist(), coords)
    table = table.rename_columns(["example_id", "dataset", "coords"])
    table = table.append_column("role", pa.array(frame["role"].tolist(), pa.string()))
    pq.write_table(table, call.out / "coords.parquet")
    return {"rows": len(frame), "sample_rows": len(sample), "n_components": m.n_components,
            **{k: round(v, 3) for k, v in timings.items()}}


def load_coords(path: str | Path) -> pd.DataFrame:
    """The coordinates table as a frame (example_id, dataset, role); the (N, d) array is in ``.attrs["xy"]``."""
    import pyarrow.parquet as pq

    from cdco_core.odms.shards import table_vectors

    table = pq.read_table(path)
    frame = pd.DataFrame({c: table.column(c).to_pylist() for c in ("example_id", "dataset", "role")})
    frame.attrs["xy"] = table_vectors(table, "coords")
    return frame


STEP = Step("manifold", section, compute, label=lambda node: node.id)
