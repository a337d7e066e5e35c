"""MLflow lineage of a ``manifold`` node: the embeddings it was fitted on, the coordinates table it wrote."""

from __future__ import annotations

from tasks.lineage import Lineage


def run_name(node_id: str) -> str:
    return "fit_manifold" + node_id[len("manifold"):]


def log_manifold(lin: Lineage, node_id: str) -> None:
    import mlflow

    from tasks import lineage

    r = lin.records[node_id]
    with lineage.step_run(lin, [node_id], run_name(node_id)):
        inputs = lineage.log_upstream(lin, node_id, contexts=lambda rec, split: "input")
        mlflow.log_metrics({k: float(v) for k, v in r.outputs.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)})
        out = lineage.output_row(lin, node_id, "coords.parquet", r.files["coords.parquet"], f"`{r.dir}`")
        lineage.describe(f"{run_name(node_id)}: UMAP manifold of the anchors and the OOD pool", inputs, [out],
                         digest=r.digest)
