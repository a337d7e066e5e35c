"""MLflow lineage of the ``manifold`` node: the coordinates table, sizes and timings."""

from __future__ import annotations

from cdco_core.cache import Record


def log_manifold(parent_run_id: str, record: Record, cached: bool) -> None:
    import mlflow

    from tasks import tracking

    with tracking.step_run(parent_run_id, "fit_manifold", tags={"cdco.cached": str(cached).lower()}):
        tracking.log_table_input("manifold/coords", record.files["coords.parquet"], record.path("coords.parquet"),
                                 context="manifold")
        mlflow.log_metrics({k: float(v) for k, v in record.outputs.items() if isinstance(v, int | float)})
