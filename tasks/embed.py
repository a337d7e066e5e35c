"""MLflow lineage of an ``embed`` node: the task split it read, and its shards' digest as the output."""

from __future__ import annotations

from tasks.lineage import Lineage


def log_embed(lin: Lineage, node_id: str) -> None:
    """Nested run ``embed[<dataset>]``: input the prepared train split, output the embedding shards' digest."""
    import mlflow

    from tasks import lineage

    r = lin.records[node_id]
    o = r.outputs
    with lineage.step_run(lin, [node_id], node_id, {"cdco.role": str(o.get("role", ""))}):
        inputs = lineage.log_upstream(lin, node_id, contexts=lambda rec, split: "input")
        mlflow.log_metric("rows", o.get("rows", 0))
        mlflow.log_metric("shards_computed", len(o.get("computed_shards") or []))
        out = lineage.output_row(lin, node_id, "embeddings", r.digest,
                                 f"{len(o.get('shards') or [])} shard(s), {o.get('rows')} rows, `{r.dir}`")
        lineage.describe(f"{node_id}: sentence vectors of {o.get('dataset')} ({o.get('role')})", inputs, [out],
                         digest=r.digest)
