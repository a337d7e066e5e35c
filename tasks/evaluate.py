"""Step 6: score one trained method and seed on every ID, OOD and KI task (same protocol for every method)."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks._cache import StepCache, cached_task_options, fingerprint

EVAL_CACHE = StepCache(step="evaluate",
                       sections=("seed", "model", "adapters", "train", "methods", "negatives", "eval.head_epochs",
                                 "eval.head_lr", "eval.head_batch_size", "eval.batch_size"),
                       code=("cdco_core/evaluation", "tasks/evaluate.py"))


@task(name="evaluate", cache_policy=EVAL_CACHE, **cached_task_options())
def evaluate(cfg: dict[str, Any], method: str, seed: int, upstream: dict[str, Any]) -> dict[str, Any]:
    """``upstream`` = {"trained": last stage digest, "data": every task's digest}. Returns metrics + paths."""
    from cdco_core.config import Config
    from cdco_core.evaluation.pipeline import evaluate_step

    return fingerprint(evaluate_step(Config.model_validate(cfg), method, seed))


def log_evaluate(parent_run_id: str, result: dict[str, Any], cached: bool) -> None:
    """Nested run ``evaluate/<method>/<seed>``: metrics per task and per kind, predictions as a derived table."""
    from cdco_core import tracking

    name = f"evaluate/{result['method']}/seed{result['seed']}"
    with tracking.step_run(parent_run_id, name, tags={"cdco.cached": str(cached).lower()}):
        tracking.log_flat_metrics(result.get("metrics") or {}, prefix="task")
        tracking.log_flat_metrics(result.get("averages") or {}, prefix="avg")
        preds = result.get("predictions")
        if preds and preds in result["_files"]:
            tracking.log_table_input(f"predictions/{result['method']}/seed{result['seed']}",
                                     result["_files"][preds], preds, context="evaluation")
