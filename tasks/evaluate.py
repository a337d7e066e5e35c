"""MLflow lineage of an ``evaluate`` node: the LoggedModel it scored and every task's splits in, metrics per task
(linked to the model and the task's eval split) and per kind, the predictions table out."""

from __future__ import annotations

from typing import Any

from tasks.lineage import Lineage


def _contexts(rec: Any, split: str | None) -> str:
    if rec.step != "prepare":
        return "model"  # the last training stage: the weights scored
    # OOD/KI tasks train a fresh head on their train split first
    return "evaluation" if split != "train" else "training"


def _splits(rec: Any) -> list[str]:
    from tasks.lineage import eval_split

    ev = eval_split(rec)
    return [ev] if rec.outputs.get("kind") == "ID" else ["train", ev]


def log_evaluate(lin: Lineage, node_id: str) -> None:
    import mlflow

    from tasks import lineage, tracking

    r = lin.records[node_id]
    o = r.outputs
    final = lin.node(node_id).inputs[0]
    model_id = lin.models.get(final)
    final_rec = lin.records[final]
    tags = {"cdco.scored_node": final, "cdco.scored_weights_sha256": str(final_rec.outputs.get("weights_sha256", "")),
            "cdco.scored_model_id": model_id or ""}
    with lineage.step_run(lin, [node_id], node_id, tags) as run_id:
        inputs = lineage.log_upstream(lin, node_id, contexts=_contexts, splits=_splits)
        tasks = {lin.records[i].label: lin.records[i] for i in lin.node(node_id).inputs
                 if lin.records[i].step == "prepare"}
        for task, values in (o.get("metrics") or {}).items():
            rec = tasks.get(task)
            ds = lineage.task_split_dataset(rec, lineage.eval_split(rec))[0] if rec is not None else None
            if isinstance(values, dict):
                lineage.log_linked_metrics(tracking.flatten(values, f"task.{task}"), model_id, ds)
        lineage.log_linked_metrics(tracking.flatten(o.get("averages") or {}, "avg"), model_id)
        # anything else numeric the evaluation reports (OOD seen/unseen, zero-shot, probe budgets), as it comes
        extra = {k: v for k, v in o.items() if k not in ("metrics", "averages", "method", "seed", "main_metric",
                                                           "kinds", "protocol")}
        tracking.log_flat_metrics({k: v for k, v in extra.items() if isinstance(v, dict | int | float)}, prefix="eval")
        outs = [lineage.output_row(lin, node_id, "predictions.parquet", r.files["predictions.parquet"], f"`{r.dir}`")]
        if "metrics.json" in r.files:
            lineage.upload_once(lin, run_id, r.key, lambda: mlflow.log_artifact(str(r.path("metrics.json")),
                                                                                "evaluation"))
            outs.append(lineage.output_row(lin, node_id, "metrics.json", r.files["metrics.json"],
                                           "artifact `evaluation/metrics.json`"))
        weights = str(final_rec.outputs.get("weights_sha256", ""))
        lineage.describe(f"{node_id}: scored weights `{weights[:12]}` of {lin.run_link(final)} on every task",
                         inputs, outs, digest=r.digest)
