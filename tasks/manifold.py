"""Step 3: fit UMAP on a sample of the embedded union and map every point onto the manifold."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks._cache import StepCache, cached_task_options, fingerprint

MANIFOLD_CACHE = StepCache(step="manifold", sections=("seed", "model", "embed", "manifold", "negatives.strict_exclude"),
                           code=("cdco_core/odms", "tasks/manifold.py"))


@task(name="fit_manifold", cache_policy=MANIFOLD_CACHE, **cached_task_options())
def fit_manifold(cfg: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    """``upstream`` = {"embeddings": {dataset: digest}}. Returns the coordinates' path and digest."""
    from cdco_core.config import Config
    from cdco_core.odms.pipeline import manifold_step

    return fingerprint(manifold_step(Config.model_validate(cfg)))


def log_manifold(parent_run_id: str, result: dict[str, Any], cached: bool) -> None:
    """Nested run ``fit_manifold``: the coordinates table as a derived input, sizes and timings."""
    import mlflow

    from cdco_core import tracking

    with tracking.step_run(parent_run_id, "fit_manifold", tags={"cdco.cached": str(cached).lower()}):
        tracking.log_table_input("manifold/coords", result["digest"], result["path"], context="manifold")
        mlflow.log_metrics({"rows": result["rows"], "sample_rows": result["sample_rows"],
                            "seconds": result.get("seconds", 0.0)})
