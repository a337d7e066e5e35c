"""MLflow lineage of the ``prepare`` nodes: every task's splits as inputs, with our sha256 and row counts."""

from __future__ import annotations

from pathlib import Path

from cdco_core.cache import Record


def log_prepare(parent_run_id: str, records: list[Record]) -> None:
    """Nested run ``prepare_data``: one ``log_input`` per task and split."""
    import mlflow

    from tasks import tracking

    with tracking.step_run(parent_run_id, "prepare_data", tags={"cdco.cached": "false"}):
        for r in sorted(records, key=lambda r: r.label):
            t = r.outputs
            for split, s in sorted(t["splits"].items()):
                tracking.log_table_input(
                    f"{r.label}/{split}", s["digest"], Path(r.dir) / f"{split}.parquet", context=split,
                    extra_tags={"cdco.kind": t["kind"], "cdco.type": t["type"], "cdco.rows": str(s["rows"])},
                )
                mlflow.log_metric(f"rows.{r.label}.{split}", s["rows"])
            mlflow.set_tag(f"cdco.digest.{r.label}", r.digest)
            for split, reasons in (t.get("dropped") or {}).items():  # on_invalid_rows: drop
                for reason, n in reasons.items():
                    mlflow.log_metric(f"dropped.{r.label}.{split}.{reason}", n)
