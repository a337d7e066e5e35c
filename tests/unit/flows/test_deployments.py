"""The deployments built from a config (flows/deployments.py): cron, sensor interval, trigger; no server."""

from __future__ import annotations

import datetime

import yaml

from cdco_core.paths import CONF_DIR


def test_deployments_follow_the_config(tmp_path) -> None:
    from flows.deployments import DEPLOYMENT, SENSOR_DEPLOYMENT, build_deployments
    from flows.sensor import EVENT

    raw = yaml.safe_load((CONF_DIR / "smoke.yaml").read_text(encoding="utf-8"))
    raw["profile"] = "nightly"
    raw["orchestration"] = {"schedule_cron": "0 3 * * *", "sensor_interval_seconds": 900}
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")

    pipeline, sensor = build_deployments(str(path), ["train.batch_size=4"])
    assert (pipeline.name, sensor.name) == (DEPLOYMENT, SENSOR_DEPLOYMENT)
    assert [s.schedule.cron for s in pipeline.schedules] == ["0 3 * * *"]
    assert [s.schedule.interval for s in sensor.schedules] == [datetime.timedelta(seconds=900)]
    params = {"profile": str(path), "overrides": ["train.batch_size=4"]}
    assert pipeline.parameters == sensor.parameters == params
    [trigger] = pipeline.triggers
    assert trigger.expect == {EVENT}
    assert trigger.match.root == {"prefect.resource.id": "cdco.dataset.*", "cdco.profile": "nightly"}
    # the run gets the loadable profile path, not the config's label, and what the event says changed
    assert {k: v for k, v in trigger.parameters.items() if k != "trigger"} == params
    assert trigger.parameters["trigger"]["kind"] == "dataset"


def test_trigger_parameter_renders_the_event_into_the_flow_parameter() -> None:
    """Rendered as Prefect's automation renders a deployment trigger's parameters (hydrate + Jinja)."""
    import uuid

    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    from flows.deployments import trigger_parameter
    from flows.full_pipeline import PipelineParams
    from tasks.parent import trigger_tags

    event_id = uuid.uuid4()
    event = {"id": event_id, "event": "cdco.dataset.changed",
             "payload": {"dataset": "ki_file", "digest": "ab" * 32, "previous_digest": None, "profile": "smoke"}}
    rendered = hydrate({"trigger": trigger_parameter()},
                       HydrationContext(render_jinja=True, jinja_context={"event": event}, raise_on_error=True))
    trig = PipelineParams(profile="smoke", trigger=rendered["trigger"]).trigger  # the flow accepts it
    assert trig == {"kind": "dataset", "dataset": "ki_file", "digest": "ab" * 32, "previous_digest": "None",
                    "event_id": str(event_id)}
    tags = trigger_tags(trig)
    assert tags == {"cdco.trigger": "dataset", "cdco.trigger.dataset": "ki_file",
                    "cdco.trigger.digest": "ab" * 32, "cdco.trigger.event_id": str(event_id)}


def test_no_cron_means_no_schedule() -> None:
    from flows.deployments import build_deployments

    pipeline, _ = build_deployments("smoke")
    assert pipeline.schedules == [] or pipeline.schedules is None
