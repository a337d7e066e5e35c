"""MLflow record of one ``cdco compare``: a parent run for the comparison, a child run per method x seed with its
endpoint metrics, and the report's files, written with the same functions as a pipeline run's step runs.

    <profile> <methods> <YYYY-MM-DD HH:MM>Z       parent: the report's mean per method and scope (``<method>.<scope>``,
    |                                             and ``<method>.<scope>.sd`` over two or more seeds), params, tags
    |-- evaluate[<method>/seed<s>]                 per method x seed (:func:`tasks.evaluate.log_evaluate`)
    `-- report                                     comparison.md/.csv, bootstrap.csv, results.json, plots
                                                   (:func:`tasks.report.log_report`)

Every number comes from the records the comparison returned (the verified cache's ``metrics.json`` and the report's
``results.json``); nothing is recomputed here. The training stages are not logged as runs (``cdco run`` does that):
an evaluation names the weights it scored by their sha256 and the stage's node.
"""

from __future__ import annotations

from typing import Any

from cdco_core.cache import Record

SOURCE = {"mlflow.source.type": "LOCAL", "mlflow.source.name": "cdco compare"}


def report_averages(outputs: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{method: {scope: mean over seeds}} and ``<scope>.sd`` where there were two or more seeds, read from the
    report's ``numbers`` (per-entry columns, ``task (metric)``, are left to the child runs: MLflow allows no
    parentheses in a metric name)."""
    out: dict[str, dict[str, float]] = {}
    for method, columns in (outputs.get("numbers") or {}).items():
        row: dict[str, float] = {}
        for column, n in columns.items():
            if " (" in column or not n.get("n"):
                continue
            row[column] = n["mean"]
            if n["n"] > 1:
                row[f"{column}.sd"] = n["sd"]
        out[method] = row
    return out


def log_comparison(cfg: Any, plan: Any, records: dict[str, Record], result: dict[str, Any],
                   settings: dict[str, Any]) -> dict[str, Any]:
    """Log a finished comparison (``records``: {node id: record} of every plan node, ``result``: what
    :func:`cdco_core.runner.run_comparison` returned); returns {"mlflow_run_id", "mlflow_url", "mlflow_ui",
    "mlflow_page"} for the summary.

    ``settings``: how the comparison was asked for (jobs, the tuned file), logged as params.
    """
    import mlflow

    from cdco_core.config import config_to_yaml
    from tasks import evaluate, parent, report, tracking
    from tasks.lineage import Lineage

    methods, seeds = list(result.get("methods") or []), list(result.get("seeds") or [])
    tags = {**SOURCE, "cdco.kind": "compare", "cdco.profile": cfg.profile, "cdco.methods": ",".join(methods),
            "cdco.seeds": ",".join(map(str, seeds)), **parent.trigger_tags({"kind": "manual", "via": "cdco compare"})}
    name = parent.run_name(cfg.profile, methods)
    with tracking.pipeline_run(cfg.orchestration.experiment, name, tags) as run_id:
        mlflow.log_text(config_to_yaml(cfg), "config/resolved.yaml")
        mlflow.log_params({"profile": cfg.profile, "methods": ",".join(methods), "seeds": ",".join(map(str, seeds)),
                           "model.source": cfg.model.source,
                           **{k: str(v)[:500] for k, v in settings.items() if v is not None}})
        experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
        lin = Lineage(run_id, experiment_id, plan, records, {nid: r.cached for nid, r in records.items()})
        for node in plan.of_step("evaluate"):
            evaluate.log_evaluate(lin, node.id)
        report.log_report(lin, "report")
        client = mlflow.MlflowClient()
        for node_id, child in lin.runs.items():  # the step runs say where they come from (they would name the flow)
            node = plan.nodes[node_id]
            extra = {"cdco.method": node.method, "cdco.seed": str(node.params.get("seed"))} if node.method else {}
            for k, v in {**SOURCE, **extra}.items():
                client.set_tag(child, k, v)
        links = parent.log_parent(run_id, {"profile": cfg.profile, "report": {"md": result.get("md")}},
                                  averages=report_averages(records["report"].outputs))
    return {"mlflow_run_id": run_id, **{k: links[k] for k in ("mlflow_url", "mlflow_ui", "mlflow_page")}}
