"""MLflow lineage of an ``evaluate`` node: metrics per task and per kind, predictions as a derived table."""

from __future__ import annotations

from cdco_core.cache import Record


def log_evaluate(parent_run_id: str, node_id: str, record: Record, cached: bool) -> None:
    from tasks import tracking

    o = record.outputs
    with tracking.step_run(parent_run_id, node_id, tags={"cdco.cached": str(cached).lower()}):
        tracking.log_flat_metrics(o.get("metrics") or {}, prefix="task")
        tracking.log_flat_metrics(o.get("averages") or {}, prefix="avg")
        tracking.log_table_input(f"predictions/{o['method']}/seed{o['seed']}", record.files["predictions.parquet"],
                                 record.path("predictions.parquet"), context="evaluation")
