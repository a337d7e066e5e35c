"""MLflow lineage of a ``train`` node: the stage's settings, ID metrics, loss history and weights."""

from __future__ import annotations

import json

from cdco_core.cache import Record


def log_stage(parent_run_id: str, node_id: str, record: Record, cached: bool) -> None:
    """Nested run named by the node (``train[<method>/seed<s>/<i>-<stage>]``)."""
    import mlflow

    from tasks import tracking

    meta = json.loads(record.path("meta.json").read_text(encoding="utf-8"))
    stage = meta["stage"]
    with tracking.step_run(parent_run_id, node_id, tags={"cdco.cached": str(cached).lower(),
                                                         "cdco.weights_sha256": meta["weights_sha256"]}):
        mlflow.log_params({"method": meta["method"], "seed": meta["seed"], "stage": stage["name"],
                           "steps": stage["steps"], "lr": stage["lr"], "groups": ",".join(stage["groups"]),
                           "space": stage["space"], **{f"loss_weight.{k}": v for k, v in stage["losses"].items()}})
        tracking.log_flat_metrics(meta.get("metrics") or {}, prefix="id")
        tracking.log_flat_metrics(meta.get("train") or {}, prefix="train")
        for i, row in enumerate(meta.get("history", [])):
            tracking.log_flat_metrics({k: v for k, v in row.items() if k != "step"},
                                      prefix="step", step=int(row.get("step", i)))
        tracking.log_paths([record.path("weights.safetensors")], "weights")
