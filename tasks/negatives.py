"""Step 4: index the OOD pool on the manifold (FAISS) and pick each ID anchor's hard negatives."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks._cache import StepCache, cached_task_options, fingerprint

NEGATIVES_CACHE = StepCache(step="negatives", sections=("seed", "model", "embed", "manifold", "negatives"),
                            code=("cdco_core/odms", "tasks/negatives.py"))


@task(name="build_negative_index", cache_policy=NEGATIVES_CACHE, **cached_task_options())
def build_negatives(cfg: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    """``upstream`` = {"manifold": digest}. Returns the negatives Parquet, its digest and plots."""
    from cdco_core.config import Config
    from cdco_core.odms.pipeline import negatives_step

    return fingerprint(negatives_step(Config.model_validate(cfg)))


def log_negatives(parent_run_id: str, result: dict[str, Any], cached: bool) -> None:
    """Nested run ``build_negative_index``: the negatives table as input and artifact, plus its plots."""
    import mlflow

    from cdco_core import tracking

    with tracking.step_run(parent_run_id, "build_negative_index", tags={"cdco.cached": str(cached).lower()}):
        tracking.log_table_input("negatives", result["digest"], result["path"], context="hard_negatives",
                                 extra_tags={"cdco.rows": str(result["rows"])})
        tracking.log_paths([result["path"]], "negatives")
        tracking.log_paths(result.get("plots", []), "plots")
        mlflow.log_metrics({"rows": result["rows"], "anchors": result["anchors"],
                            "short_anchors": result.get("short_anchors", 0)})
