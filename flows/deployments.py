"""The deployments: ``cdco/full-pipeline`` (cron from config, trigger on ``cdco.dataset.changed``) and
``cdco-dataset-sensor/dataset-sensor`` (every ``orchestration.sensor_interval_seconds``).

    python -m flows.deployments serve --profile demo      # serve both in this process (``make serve``)
    python -m flows.deployments register --profile demo --work-pool cdco-process   # for workers (compose)

Both need ``PREFECT_API_URL``. Stopping the serve process leaves the deployments unpaused
(``pause_on_shutdown=False``), so a later serve process, or a worker, picks their runs up again.
``register`` creates the process work pool if needed and applies the same deployments to it, so the cron
schedule always comes from the config (``prefect.yaml`` is the static equivalent for ``prefect deploy``).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Any

DEPLOYMENT = "full-pipeline"
SENSOR_DEPLOYMENT = "dataset-sensor"


def dataset_trigger(label: str, profile: str, overrides: list[str]) -> Any:
    """Run the pipeline with ``profile`` (a name or YAML path) and ``overrides`` when the sensor reports that a
    dataset of the config named ``label`` (its ``profile:`` key, the events' ``cdco.profile``) changed."""
    from prefect.events import DeploymentEventTrigger

    from flows.sensor import EVENT

    return DeploymentEventTrigger(
        name=f"cdco-{label}-dataset-changed",
        expect={EVENT},
        match={"prefect.resource.id": "cdco.dataset.*", "cdco.profile": label},
        parameters={"profile": profile, "overrides": overrides, "trigger": trigger_parameter()},
    )


def trigger_parameter() -> dict[str, Any]:
    """The flow's ``trigger`` parameter, filled from the event when the automation runs the deployment: the
    changed dataset, its new and previous digests, the event's id (tags on the MLflow parent run)."""
    def text(template: str) -> dict[str, str]:  # rendered as a string, whatever the value's type
        return {"__prefect_kind": "jinja", "template": template}

    return {"kind": "dataset", "dataset": text("{{ event.payload.dataset }}"),
            "digest": text("{{ event.payload.digest }}"),
            "previous_digest": text("{{ event.payload.previous_digest }}"), "event_id": text("{{ event.id }}")}


def build_deployments(profile: str, overrides: list[str] | None = None, by_module: bool = False) -> list[Any]:
    """(pipeline, sensor) RunnerDeployments for ``profile``; the config is validated first.

    ``by_module``: entrypoints as module paths (``flows.full_pipeline.cdco``), see :func:`register`.
    """
    from cdco_core.config import load_config
    from flows.full_pipeline import cdco
    from flows.sensor import dataset_sensor

    overrides = list(overrides or [])
    cfg = load_config(profile, overrides)
    params = {"profile": profile, "overrides": overrides}
    extra: dict[str, Any] = {}
    if by_module:
        from prefect.deployments.runner import EntrypointType

        extra["entrypoint_type"] = EntrypointType.MODULE_PATH
    pipeline = cdco.to_deployment(**extra,
        name=DEPLOYMENT, parameters=params, cron=cfg.orchestration.schedule_cron,
        triggers=[dataset_trigger(cfg.profile, profile, overrides)], tags=["cdco", cfg.profile],
        description=f"The cdco pipeline on profile {cfg.profile!r}",
    )
    sensor = dataset_sensor.to_deployment(**extra,
        name=SENSOR_DEPLOYMENT, parameters=params, interval=cfg.orchestration.sensor_interval_seconds,
        tags=["cdco", cfg.profile], description="Emit cdco.dataset.changed when a configured dataset changes",
    )
    return [pipeline, sensor]


def register(profile: str, overrides: list[str] | None, work_pool: str) -> list[str]:
    """Apply both deployments to ``work_pool`` (a process pool, created if missing); returns their ids."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=work_pool, type="process"))
        except ObjectAlreadyExists:
            pass
    from prefect.client.schemas.actions import DeploymentUpdate

    ensure_crash_automation()
    # Module entrypoints: a worker then imports flows.full_pipeline as itself. Loaded from its file it would be a
    # module named "full_pipeline", which a Dask scheduler and its workers cannot import when they unpickle the
    # flow's tasks (an external cluster fails every fan-out with ModuleNotFoundError).
    deployments = build_deployments(profile, overrides, by_module=True)
    ids = [d.apply(work_pool_name=work_pool) for d in deployments]
    # Without a pull step a process worker copies the deployment's folder into a temporary workspace for each
    # run; prefect.yaml's pull step instead runs the flows where the project is installed (the image's /opt/cdco).
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": project_dir()}}]
    with get_client(sync_client=True) as client:
        for deployment_id in ids:
            client.update_deployment(deployment_id, DeploymentUpdate(pull_steps=pull))
    return [str(i) for i in ids]


CRASH_AUTOMATION = "cdco: crash flow runs that stop sending heartbeats"


def crash_automation(heartbeat_s: int) -> Any:
    """A flow run whose process died with its worker (machine lost, ``kill -9``) stays Running for ever; its
    heartbeats stop, and after three missed ones this automation marks it Crashed, so it can be re-run (finished
    stages and steps come from the cache, an interrupted stage resumes from its checkpoint)."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=CRASH_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=3 * heartbeat_s)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {3 * heartbeat_s} s: its worker or process died")],
    )


def ensure_crash_automation() -> None:
    """Create :func:`crash_automation` on the server unless one of that name exists (the workers' heartbeat
    period: ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``)."""
    from prefect.settings import get_current_settings

    try:
        from prefect.automations import Automation

        Automation.read(name=CRASH_AUTOMATION)
        return
    except ValueError:  # not there yet
        pass
    crash_automation(get_current_settings().flows.heartbeat_frequency or 180).create()


def project_dir() -> str:
    """Where the workers find the flows: ``CDCO_PROJECT_DIR`` (the image's /opt/cdco), else this checkout."""
    from cdco_core.paths import PROJECT_ROOT

    return os.environ.get("CDCO_PROJECT_DIR") or str(PROJECT_ROOT)


def main(argv: list[str] | None = None) -> None:
    from prefect import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["serve", "register"], default="serve")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.sub=value")
    parser.add_argument("--work-pool", default="cdco-process", help="register: the process work pool")
    args = parser.parse_args(argv)
    if args.command == "register":
        print("\n".join(register(args.profile, args.overrides, args.work_pool)))
        return
    deployments = build_deployments(args.profile, args.overrides)
    threading.Thread(target=first_sensor_check, args=(args.profile, args.overrides), daemon=True,
                     name="cdco-first-sensor-check").start()
    serve(*deployments, pause_on_shutdown=False)


def first_sensor_check(profile: str, overrides: list[str], timeout: float = 300.0) -> dict[str, Any] | None:
    """Run the dataset sensor once as soon as the pipeline's deployment and its dataset trigger exist.

    The interval schedule's first run comes one interval after ``make serve``; until then a changed dataset
    would go unnoticed, and that first run would take the changed digests as its baseline. Checking at start
    records the baseline at once (first serve) or reports what changed while nothing was served; the trigger
    must exist first, or the event would find no automation to start the pipeline.
    """
    from prefect import get_client

    from flows.sensor import dataset_sensor

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with get_client(sync_client=True) as client:
                dep = client.read_deployment_by_name(f"cdco/{DEPLOYMENT}")
                if client.read_resource_related_automations(f"prefect.deployment.{dep.id}"):
                    break
        except Exception:  # noqa: BLE001 - not registered yet
            pass
        time.sleep(1.0)
    else:
        print(f"first sensor check skipped: deployment cdco/{DEPLOYMENT} not ready within {timeout:.0f} s")
        return None
    return dataset_sensor(profile=profile, overrides=overrides)


if __name__ == "__main__":
    main()
