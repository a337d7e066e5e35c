"""MLflow lineage of the ``report`` node: the comparison CSV/Markdown and plots as artifacts."""

from __future__ import annotations

from cdco_core.cache import Record


def log_report(parent_run_id: str, record: Record, cached: bool) -> None:
    import mlflow

    from tasks import tracking

    o = record.outputs
    with tracking.step_run(parent_run_id, "report", tags={"cdco.cached": str(cached).lower()}):
        tracking.log_table_input("comparison", record.files[o["csv"]], record.path(o["csv"]), context="report")
        tracking.log_paths([record.path(o["csv"]), record.path(o["md"])], "comparison")
        tracking.log_paths([record.path(p) for p in o.get("plots", [])], "comparison/plots")
        mlflow.log_param("methods", ",".join(o.get("methods", [])))
