"""The parent MLflow run of one pipeline run: its name, why it ran, the overall numbers per method, and the
two-way link with the Prefect flow run (a tag here, a Markdown artifact there).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

TRIGGER_KEYS = ("kind", "dataset", "digest", "previous_digest", "event_id", "via")


def run_name(profile: str, methods: list[str], when: dt.datetime | None = None) -> str:
    """``<profile> <m1>+<m2> <YYYY-MM-DD HH:MM>Z``: what ran on which data, and when (UTC)."""
    when = when or dt.datetime.now(dt.UTC)
    shown = "+".join(methods) if len(methods) <= 4 else f"{'+'.join(methods[:3])}+{len(methods) - 3} more"
    return f"{profile} {shown} {when:%Y-%m-%d %H:%M}Z"


def trigger_tags(trigger: dict[str, Any] | None, flow_run: Any = None) -> dict[str, str]:
    """``cdco.trigger`` (manual | schedule | dataset | automation | deployment) and what the flow knows of it.

    ``trigger``: the flow's ``trigger`` parameter (``cdco run`` passes {"kind": "manual", "via": "cdco run"}; the
    deployment's dataset trigger passes the event's dataset and digests); ``flow_run``: the Prefect flow run, read
    when the parameter says nothing (a scheduled run is ``auto_scheduled``, a run an automation created says so in
    ``created_by``).
    """
    t = {k: str(v) for k, v in (trigger or {}).items() if k in TRIGGER_KEYS and v not in (None, "", "None")}
    if "kind" not in t:
        if flow_run is None or getattr(flow_run, "deployment_id", None) is None:
            t["kind"] = "manual"
        elif getattr(flow_run, "auto_scheduled", False):
            t["kind"] = "schedule"
        elif str(getattr(getattr(flow_run, "created_by", None), "type", "") or "").upper() == "AUTOMATION":
            t["kind"] = "automation"
        else:
            t["kind"] = "manual"
            t.setdefault("via", "deployment run")
    return {"cdco.trigger" if k == "kind" else f"cdco.trigger.{k}": v for k, v in t.items()}


def method_averages(evaluations: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{method: {kind: mean over seeds}} from ``{"evaluate[<method>/seed<s>]": averages}`` (numbers only; nested
    averages flattened as ``a.b``)."""
    from tasks.tracking import flatten

    sums: dict[str, dict[str, list[float]]] = {}
    for node_id, averages in evaluations.items():
        m = re.match(r"evaluate\[(.+)/seed\d+\]", node_id)
        if not m:
            continue
        for k, v in flatten(averages or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                sums.setdefault(m.group(1), {}).setdefault(k, []).append(float(v))
    return {meth: {k: sum(v) / len(v) for k, v in kinds.items()} for meth, kinds in sums.items()}


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page on an MLflow server; None for a local store (no server to link to)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    from tasks.lineage import run_url

    return f"{tracking_uri.rstrip('/')}/{run_url(experiment_id, run_id)}"


def mlflow_ui_command(tracking_uri: str) -> str:
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def results_table(averages: dict[str, dict[str, float]]) -> list[str]:
    """A Markdown table: one row per method, a column per kind (ID, OOD, KI, ... overall last)."""
    if not averages:
        return ["_no evaluations_"]
    cols: list[str] = []
    for kinds in averages.values():
        cols += [k for k in kinds if k not in cols]
    cols = [c for c in cols if c != "overall"] + (["overall"] if any("overall" in k for k in averages.values())
                                                  else [])
    rows = [f"| method | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
    for meth, kinds in averages.items():
        rows.append(f"| {meth} | " + " | ".join(f"{kinds[c]:.3f}" if c in kinds else "-" for c in cols) + " |")
    return rows


def results_markdown(profile: str, averages: dict[str, dict[str, float]], mlflow_link: str | None,
                     ui_command: str, registered: dict[str, Any] | None, report_md: str | None) -> str:
    """The Prefect flow run's artifact: the results table and where to look in MLflow."""
    lines = [f"# cdco: profile `{profile}`", "", *results_table(averages), ""]
    lines.append(f"MLflow run: [{mlflow_link}]({mlflow_link})" if mlflow_link
                 else f"MLflow run: local store; browse it with `{ui_command}`")
    if registered:
        lines.append(f"Registered: `{registered['name']}` version {registered['version']} "
                     f"(weights sha256 `{registered['weights_sha256'][:12]}`)")
    if report_md:
        lines.append(f"Report: `{report_md}`")
    return "\n".join(lines)


def artifact_key(profile: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for the profile's results."""
    return "cdco-" + re.sub(r"[^a-z0-9-]+", "-", profile.lower()).strip("-") + "-results"


def log_parent(run_id: str, result: dict[str, Any], averages: dict[str, dict[str, float]] | None = None
               ) -> dict[str, Any]:
    """Metrics per method, the description and the links on the parent run; the Prefect artifact. Returns
    {"mlflow_url" (None for a local store), "mlflow_ui" (the command that serves a local store), "mlflow_page"
    (the run's page on that server), "averages"} for the caller's summary.

    ``averages``: {method: {kind: value}} to log as they are (``cdco compare`` passes the report's own means);
    default: :func:`method_averages` of ``result["evaluations"]``.
    """
    import mlflow

    from tasks import tracking

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    if averages is None:
        averages = method_averages(result.get("evaluations") or {})
    for meth, kinds in averages.items():
        tracking.log_flat_metrics(kinds, prefix=meth)
    uri = tracking.tracking_uri()
    url = mlflow_run_url(uri, experiment_id, run_id)
    ui = mlflow_ui_command(uri)
    page = url or mlflow_run_url("http://127.0.0.1:5000", experiment_id, run_id)  # where `mlflow ui` serves it
    reg = result.get("registered")
    md = results_markdown(result.get("profile", ""), averages, url, ui, reg, (result.get("report") or {}).get("md"))
    note = md
    if reg:
        client.set_tag(run_id, "cdco.registered_model", f"{reg['name']}/{reg['version']}")
        # in the MLflow UI, the version's page (relative: it is the same server)
        note += f"\n\n[{reg['name']} version {reg['version']}](#/models/{reg['name']}/versions/{reg['version']})"
    client.set_tag(run_id, "mlflow.note.content", note)
    _prefect_artifact(result.get("profile", ""), md)
    return {"mlflow_url": url, "mlflow_ui": ui, "mlflow_page": page, "averages": averages}


def _prefect_artifact(profile: str, markdown: str) -> None:
    """The results table on the Prefect flow run (no-op outside a flow run)."""
    import sys

    if "prefect" not in sys.modules:  # no flow run in this process (``cdco compare``): nothing to import Prefect for
        return
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    if not flow_run.id:
        return
    create_markdown_artifact(markdown=markdown, key=artifact_key(profile),
                             description="cdco results and the MLflow run")
