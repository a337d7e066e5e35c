"""Step 2: embed one dataset (an ID anchor set or an OOD pool) into verified Parquet shards.

One task per dataset, so a changed dataset re-embeds only itself, and a Dask task runner can embed
datasets on different workers. Inside, only missing or corrupt shards are computed (cdco_core.odms).
"""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks._cache import StepCache, cached_task_options, fingerprint

EMBED_CACHE = StepCache(step="embed", sections=("seed", "model", "embed", "negatives.strict_exclude"),
                        code=("cdco_core/odms", "cdco_core/models/encoder.py", "tasks/embed.py"))


@task(name="embed_dataset", cache_policy=EMBED_CACHE, **cached_task_options())
def embed_dataset(cfg: dict[str, Any], dataset: str, upstream: dict[str, Any]) -> dict[str, Any]:
    """Embed ``dataset``'s train texts; ``upstream`` = {"data": its digest}. Returns its shards and digest."""
    from cdco_core.config import Config
    from cdco_core.odms.pipeline import embed_corpora, odms_corpora

    conf = Config.model_validate(cfg)
    corpora = [c for c in odms_corpora(conf) if c.name == dataset]
    result = embed_corpora(conf, corpora, progress=False)
    return fingerprint({"dataset": dataset, **result["datasets"][dataset], "model": result["model"]})


def embedded_datasets(cfg: dict[str, Any], prepared: dict[str, Any]) -> list[str]:
    """Names ODMS embeds: the ID tasks (anchors) and the OOD tasks not in ``negatives.strict_exclude``."""
    exclude = set(cfg["negatives"]["strict_exclude"])
    return [n for n, t in sorted(prepared["tasks"].items())
            if t["kind"] == "ID" or (t["kind"] == "OOD" and n not in exclude)]


def log_embed(parent_run_id: str, results: list[tuple[dict[str, Any], bool]]) -> None:
    """Nested run ``embed``: each dataset's embedding shards as a derived table (``log_input``)."""
    import mlflow

    from cdco_core import tracking

    tags = {f"cdco.cached.{r['dataset']}": str(c).lower() for r, c in results}
    tags["cdco.cached"] = str(all(c for _, c in results)).lower()
    with tracking.step_run(parent_run_id, "embed", tags=tags):
        for r, _ in results:
            tracking.log_table_input(f"embeddings/{r['dataset']}", r["digest"], r["dir"], context=r["role"],
                                     extra_tags={"cdco.rows": str(r["rows"]), "cdco.shards": str(len(r["shards"]))})
            mlflow.log_metric(f"rows.{r['dataset']}", r["rows"])
            mlflow.log_metric(f"shards_computed.{r['dataset']}", len(r.get("computed") or []))
        if results:
            mlflow.log_params({f"model.{k}": v for k, v in results[0][0]["model"].items()})
