"""Step 7: the comparison table, bootstrap and plots over every evaluated method and seed."""

from __future__ import annotations

from typing import Any

from prefect import task

from cdco_core.io import sha256_json
from tasks._cache import StepCache, cached_task_options, fingerprint

REPORT_CACHE = StepCache(step="report", sections=("seed", "eval"), code=("cdco_core/evaluation", "tasks/report.py"))


@task(name="report", cache_policy=REPORT_CACHE, **cached_task_options())
def report(cfg: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    """``upstream`` = {"evaluations": {"method/seed": digest}}. Writes under reports/<profile>/<key16>/,
    so runs with other inputs (or another profile) never overwrite this one's files."""
    from cdco_core.config import Config, cdco_home
    from cdco_core.evaluation.compare import run_comparison

    conf = Config.model_validate(cfg)
    out_dir = cdco_home() / "reports" / conf.profile / sha256_json(upstream)[:16]
    return fingerprint(run_comparison(conf, conf.eval.methods, conf.eval.seeds, out_dir=out_dir))


def log_report(parent_run_id: str, result: dict[str, Any], cached: bool) -> None:
    """Nested run ``report``: the comparison CSV/Markdown and plots as artifacts, the table as an input."""
    import mlflow

    from cdco_core import tracking

    with tracking.step_run(parent_run_id, "report", tags={"cdco.cached": str(cached).lower()}):
        tracking.log_table_input("comparison", result["_files"][result["csv"]], result["csv"], context="report")
        tracking.log_paths([result["csv"], result["md"]], "comparison")
        tracking.log_paths(result.get("plots", []), "comparison/plots")
        mlflow.log_param("methods", ",".join(result.get("methods", [])))
