"""The Prefect flow ``cdco`` (deployment ``full-pipeline``): it only orders the step tasks and passes results on.

    prepare_data -> embed_dataset (one per dataset) -> fit_manifold -> build_negative_index
        -> mac_stage (one per stage, in order, per method and seed) -> evaluate (per method and seed)
        -> report -> register_model

Tasks pass paths and digests, never tables or models; each is cached by the digests it reads
(:mod:`tasks._cache`). MLflow gets one parent run per pipeline run and one nested run per step, written
here in the flow's thread after each task returns (cached or not).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cdco_core.cache import Record
from cdco_core.errors import InputError
from flows.runners import task_runner
from tasks import embed, evaluate, manifold, negatives, prepare, register, report, train


class PipelineParams(BaseModel):
    """The flow's parameters, validated before any work: a known profile and ``key.sub=value`` overrides."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field("demo", min_length=1)
    overrides: list[str] = Field(default_factory=list)
    trigger: dict[str, Any] = Field(default_factory=dict)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str) -> str:
        from cdco_core.config import resolve_profile_path

        resolve_profile_path(v)  # ConfigError (a ValueError) lists the available profiles
        return v

    @field_validator("overrides")
    @classmethod
    def _key_value(cls, v: list[str]) -> list[str]:
        from cdco_core.config import parse_override

        for item in v:
            parse_override(item)
        return v


@flow(name="cdco-steps", log_prints=True)
def pipeline_steps(cfg: dict[str, Any], parent_run_id: str, storage: str) -> dict[str, Any]:
    """Every node of the plan, as Prefect tasks on the task runner the config chose (see :func:`cdco`).

    The tasks' data go first; they are checked together before any other task is submitted. Then every node is
    submitted in plan order with its inputs' futures, and logged to MLflow here, in order, as it finishes.
    """
    from cdco_core.plan import build_plan
    from cdco_core.profile import config_from_json, config_to_json
    from cdco_core.runner import check_prepared

    conf = config_from_json(cfg)
    plan = build_plan(conf, report=True)
    wires = {m: config_to_json(c) for m, c in plan.configs.items()}
    futures: dict[str, Any] = {}
    for node in plan.nodes.values():
        if node.step == "prepare":
            futures[node.id] = _submit(node, cfg, futures, storage)
    prepared = {nid: Record.from_dict(futures[nid].result()) for nid in futures}
    check_prepared(plan, list(prepared.values()))
    for node in plan.nodes.values():
        if node.id not in futures:
            futures[node.id] = _submit(node, wires[node.method] if node.method else cfg, futures, storage)
    records, cached = dict(prepared), {}
    for node in plan.nodes.values():
        records[node.id] = Record.from_dict(futures[node.id].result())
        cached[node.id] = futures[node.id].state.name == "Cached"
    registered = _log(conf, parent_run_id, plan, records, cached)
    report_rec = records["report"]
    return {"steps": {nid: {"cached": cached[nid], "digest": r.digest} for nid, r in records.items()
                      if nid in cached},
            "evaluations": {n.id: records[n.id].outputs["averages"] for n in plan.of_step("evaluate")},
            "report": {"dir": report_rec.dir, "csv": str(report_rec.path(report_rec.outputs["csv"])),
                       "md": str(report_rec.path(report_rec.outputs["md"])),
                       "table": report_rec.outputs.get("table") or []},
            "registered": registered}


def _submit(node: Any, wire: dict[str, Any], futures: dict[str, Any], storage: str) -> Any:
    """Submit ``node``'s task with its inputs' futures (Prefect draws the graph's edges from them)."""
    from tasks.run import step_task

    task = step_task(node.step, node.id, storage)
    return task.submit(wire, node.as_dict(), {i: futures[i] for i in node.inputs})


def _log(cfg: Any, parent_run_id: str, plan: Any, records: dict[str, Record],
         cached: dict[str, bool]) -> dict[str, Any] | None:
    """One nested MLflow run per node (the tasks' data together), in plan order, each logging the runs and
    models it read as inputs (:mod:`tasks.lineage`); then the registration. Returns the registration."""
    import mlflow

    from tasks.lineage import Lineage

    experiment_id = mlflow.MlflowClient().get_run(parent_run_id).info.experiment_id
    lin = Lineage(parent_run_id, experiment_id, plan, records, cached)
    roles = register.registered_stages(cfg, plan, records)
    prepare.log_prepare(lin, [n.id for n in plan.of_step("prepare")])
    for n in plan.of_step("embed"):
        embed.log_embed(lin, n.id)
    for n in plan.of_step("manifold"):
        manifold.log_manifold(lin, n.id)
    for n in plan.of_step("negatives"):
        negatives.log_negatives(lin, n.id)
    for n in plan.of_step("train"):
        train.log_stage(lin, n.id, package=register.package(plan, records, n.id) if n.id in roles else None)
    for n in plan.of_step("evaluate"):
        evaluate.log_evaluate(lin, n.id)
    if "report" in plan.nodes:
        report.log_report(lin, "report")
    return register.register_models(lin, cfg, roles)


@flow(name="cdco", log_prints=True, validate_parameters=True)
def cdco(profile: str = "demo", overrides: list[str] | None = None,
         config: dict[str, Any] | None = None, trigger: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole pipeline for one profile; parameters are validated by :class:`PipelineParams`.

    ``config`` is the already validated config as JSON with its digest (``cdco run`` passes it, so the profile is
    validated once per process); a deployment run leaves it out and the profile is loaded here. ``trigger`` says
    why the run started (the dataset trigger passes the event's dataset and digests; see
    :func:`tasks.parent.trigger_tags`), recorded as tags on the MLflow parent run.
    Fails before any work when the config is invalid or the MLflow tracking store cannot be reached.
    """
    from cdco_core.config import config_to_yaml
    from cdco_core.paths import cdco_home
    from cdco_core.profile import config_from_json, config_to_json, load_profile
    from tasks import parent, tracking
    from tasks.lineage import SOURCE_TAGS

    params = PipelineParams(profile=profile, overrides=list(overrides or []), trigger=trigger or {})
    cfg = config_from_json(config) if config else load_profile(params.profile, params.overrides)
    flow_run_id = _flow_run_id()
    tags = {**SOURCE_TAGS, "prefect.flow_run_id": flow_run_id or "", "cdco.profile": cfg.profile,
            "cdco.overrides": " ".join(params.overrides)[:4000], **_prefect_links(),
            **parent.trigger_tags(params.trigger, _read_flow_run(flow_run_id) if not params.trigger else None)}
    name = parent.run_name(cfg.profile, list(cfg.eval.methods))
    with tracking.pipeline_run(cfg.orchestration.experiment, name, tags) as run_id:
        _tag_prefect_run(flow_run_id, run_id)
        _log_config(cfg, params, config_to_yaml(cfg))
        storage = str(cdco_home() / "cache" / "prefect")
        steps = pipeline_steps.with_options(task_runner=task_runner(cfg))
        result = {"profile": cfg.profile, "mlflow_run_id": run_id, "flow_run_id": flow_run_id,
                  **steps(config_to_json(cfg), run_id, storage)}
        links = parent.log_parent(run_id, result)
    return {**result, **{k: links[k] for k in ("mlflow_url", "mlflow_ui", "mlflow_page", "averages")}}


def _prefect_links() -> dict[str, str]:
    """The Prefect flow run's page, when the Prefect server has a UI address (a tag on the MLflow parent)."""
    from prefect.runtime import flow_run

    try:
        url = flow_run.ui_url
    except Exception:  # noqa: BLE001 - no UI configured: nothing to link
        url = None
    # without a UI address Prefect formats "None/flow-runs/..."
    return {"prefect.flow_run_url": str(url)} if str(url).startswith(("http://", "https://")) else {}


def _read_flow_run(flow_run_id: str | None) -> Any:
    """The Prefect flow run (to tell a scheduled run from a manual one), or None outside a server run."""
    if not flow_run_id:
        return None
    from prefect import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(flow_run_id)
    except Exception:  # noqa: BLE001 - the trigger tags are informative; never fail a run over them
        return None


def _log_config(cfg: Any, params: PipelineParams, resolved_yaml: str) -> None:
    import mlflow

    mlflow.log_text(resolved_yaml, "config/resolved.yaml")
    mlflow.log_params({"profile": cfg.profile, "overrides": " ".join(params.overrides)[:500] or "-",
                       "methods": ",".join(cfg.eval.methods), "seeds": ",".join(map(str, cfg.eval.seeds)),
                       "model.source": cfg.model.source, "task_runner": cfg.orchestration.task_runner})


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


def _tag_prefect_run(flow_run_id: str | None, mlflow_run_id: str) -> None:
    """Tag the Prefect flow run with the MLflow run id (tag ``mlflow:<id>`` and label ``mlflow.run_id``)."""
    if not flow_run_id:
        return
    from prefect import get_client
    from prefect.runtime import flow_run

    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run_id, tags=[*flow_run.tags, f"mlflow:{mlflow_run_id}"])
        client.update_flow_run_labels(flow_run_id, {"mlflow.run_id": mlflow_run_id})


def run_pipeline(cfg: Any, profile: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the flow in this process (``cdco run``) on the validated ``cfg`` of ``profile`` + ``overrides``:
    against ``$PREFECT_API_URL`` if set, else Prefect's local mode (a temporary server on a SQLite database under
    ``CDCO_HOME/prefect``). No server is needed.

    Raises:
        InputError: unreachable tracking store, bad task data: before any training.
    """
    from prefect.settings import PREFECT_HOME

    from cdco_core import orphans
    from cdco_core.plan import build_plan
    from cdco_core.profile import config_to_json
    from tasks import tracking

    check_prefect_server()
    orphans.mark_owner()  # the temporary Prefect server inherits it: a later run can tell ours died
    tracking.check_tracking()
    check_tasks(cfg)
    # What the plan refuses (a contrastive method with an empty OOD pool, adapter groups a stage lacks) is one line
    # here; inside the flow it would come after Prefect's server start and its tracebacks. Planning is cheap and
    # computes nothing; the flow plans again because a deployment run has no caller to plan for it.
    build_plan(cfg, report=True)
    tracking.fail_orphaned_runs(cfg.orchestration.experiment)  # RUNNING runs of killed processes -> FAILED
    with local_prefect_settings():
        orphans.stop_orphaned_prefect_servers(PREFECT_HOME.value())
        try:
            return cdco(profile=profile, overrides=list(overrides or []), config=config_to_json(cfg),
                        trigger={"kind": "manual", "via": "cdco run"})
        finally:
            stop_temporary_servers()


def stop_temporary_servers() -> None:
    """Stop Prefect's temporary local server now rather than at interpreter exit, so its goodbye line comes
    before the command's summary instead of after it. The events and log workers are drained first: they send
    to that server (at exit Prefect drains them before its server stops, too)."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:  # pragma: no cover - another Prefect layout: it stops at exit as before
        return
    servers = list(getattr(SubprocessASGIServer, "_instances", {}).values())
    if not servers:
        return
    for worker in (EventsWorker, APILogWorker):
        worker.drain_all(timeout=30)
    for server in servers:
        server.stop()


class PrefectUnavailableError(InputError):
    """``PREFECT_API_URL`` names a server that does not answer."""


def check_prefect_server(timeout: float = 5.0) -> None:
    """With ``PREFECT_API_URL`` set (e.g. left exported after ``make stop``), its server must answer ``/health``.

    Raises:
        PrefectUnavailableError: one line: the URL, what failed, and the two ways out.
    """
    import urllib.error
    import urllib.request

    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return  # local mode: a temporary server is started
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:  # noqa: S310
            if resp.status == 200:
                return
            reason = f"HTTP {resp.status}"
    except (OSError, urllib.error.URLError) as e:
        reason = str(getattr(e, "reason", e))
    raise PrefectUnavailableError(
        f"the Prefect server at PREFECT_API_URL={url} is not reachable ({reason}): `unset PREFECT_API_URL` "
        "to run locally without a server, or start it with `make serve`")


def check_tasks(cfg: Any) -> None:
    """Load every task and apply ``cdco data check``'s checks (and the evaluation protocols') before the flow
    starts.

    Inside the flow the same check fails the flow run, and Prefect prints each failed run's traceback (80 lines
    for one bad task) after starting its temporary server; here it is one line. The canonical tables are cached
    by content, so the flow's prepare tasks then only read them.

    Raises:
        InputError: the first problem, naming the task (and file, split or class).
    """
    from cdco_core.data import load_task, task_specs
    from cdco_core.data.checks import check_task_set, check_task_specs
    from cdco_core.evaluation.protocols import check_protocols

    specs = task_specs(cfg.data)
    check_task_specs(specs)
    tasks = [load_task(spec, cfg.data) for spec in specs]
    check_task_set(tasks)
    check_protocols(cfg, tasks)  # task roles, zero-shot entries, probe budgets


@contextlib.contextmanager
def local_prefect_settings() -> Iterator[None]:
    """Settings for a local run: PREFECT_HOME under CDCO_HOME unless the user set one; no telemetry.

    The temporary server is a subprocess with this environment and the user's terminal. Its PREFECT_HOME (under
    CDCO_HOME) has no record of the SDK's first-run telemetry notice this process showed, so its Prefect import can
    print the notice a second time (Prefect skips it only when that folder already looks used), about a server
    whose analytics are off: ``DO_NOT_TRACK=1`` for the block, unless the user set it.
    """
    with _env_default("DO_NOT_TRACK", "1"), _local_settings():
        yield


@contextlib.contextmanager
def _env_default(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` for the block when unset (a user's own value stays)."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _local_settings() -> Any:
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

    from cdco_core.paths import cdco_home

    updates: dict[Any, Any] = {PREFECT_SERVER_ANALYTICS_ENABLED: False}
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        # The temporary server's default 20 s start budget is too short on a busy 2-core machine.
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 180
    if "PREFECT_HOME" not in os.environ:
        updates[PREFECT_HOME] = str(cdco_home() / "prefect")
    return temporary_settings(updates=updates)
