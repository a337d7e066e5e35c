"""MLflow lineage of a ``negatives`` node: manifold and embeddings in, the hard-negatives table and plots out."""

from __future__ import annotations

from tasks.lineage import Lineage


def run_name(node_id: str) -> str:
    return "build_negative_index" + node_id[len("negatives"):]


def log_negatives(lin: Lineage, node_id: str) -> None:
    import mlflow

    from tasks import lineage, tracking

    r = lin.records[node_id]
    path = r.path("negatives.parquet")
    with lineage.step_run(lin, [node_id], run_name(node_id)) as run_id:
        inputs = lineage.log_upstream(lin, node_id, contexts=lambda rec, split: "input")

        def upload() -> None:
            tracking.log_paths([path], "negatives")
            tracking.log_paths([r.path("manifold.png"), r.path("distances.png")], "plots")

        held = lineage.upload_once(lin, run_id, r.key, upload)
        mlflow.log_metrics({k: r.outputs[k] for k in ("rows", "anchors", "short_anchors") if k in r.outputs})
        where = "artifacts `negatives/`" + ("" if held == run_id else
                                            f" of [run {held[:8]}]({lineage.run_url(lin.experiment_id, held)})")
        out = lineage.output_row(lin, node_id, "negatives.parquet", r.files["negatives.parquet"],
                                 f"{r.outputs.get('rows')} rows, {where}")
        lineage.describe(f"{run_name(node_id)}: hard negatives from the OOD pool", inputs, [out], digest=r.digest)
