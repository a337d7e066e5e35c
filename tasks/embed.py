"""MLflow lineage of the ``embed`` nodes: each dataset's embedding shards as a derived table."""

from __future__ import annotations

from cdco_core.cache import Record


def log_embed(parent_run_id: str, records: list[Record], cached: dict[str, bool]) -> None:
    """Nested run ``embed``: every embedded dataset, its shards' digest, rows and shards recomputed."""
    import mlflow

    from tasks import tracking

    tags = {f"cdco.cached.{r.outputs['dataset']}": str(cached[r.key]).lower() for r in records}
    tags["cdco.cached"] = str(all(cached.values())).lower()
    with tracking.step_run(parent_run_id, "embed", tags=tags):
        for r in records:
            o = r.outputs
            tracking.log_table_input(f"embeddings/{o['dataset']}", r.digest, r.dir, context=o["role"],
                                     extra_tags={"cdco.rows": str(o["rows"]), "cdco.shards": str(len(o["shards"]))})
            mlflow.log_metric(f"rows.{o['dataset']}", o["rows"])
            mlflow.log_metric(f"shards_computed.{o['dataset']}", len(o.get("computed_shards") or []))
