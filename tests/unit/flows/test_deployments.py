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
    assert trigger.parameters == params  # the run gets the loadable profile path, not the config's label


def test_no_cron_means_no_schedule() -> None:
    from flows.deployments import build_deployments

    pipeline, _ = build_deployments("smoke")
    assert pipeline.schedules == [] or pipeline.schedules is None
