"""MLflow lineage of the ``negatives`` node: the hard-negatives table as input and artifact, and its plots."""

from __future__ import annotations

from cdco_core.cache import Record


def log_negatives(parent_run_id: str, record: Record, cached: bool) -> None:
    import mlflow

    from tasks import tracking

    path = record.path("negatives.parquet")
    with tracking.step_run(parent_run_id, "build_negative_index", tags={"cdco.cached": str(cached).lower()}):
        tracking.log_table_input("negatives", record.files["negatives.parquet"], path, context="hard_negatives",
                                 extra_tags={"cdco.rows": str(record.outputs["rows"])})
        tracking.log_paths([path], "negatives")
        tracking.log_paths([record.path("manifold.png"), record.path("distances.png")], "plots")
        mlflow.log_metrics({k: record.outputs[k] for k in ("rows", "anchors", "short_anchors")})
