"""The flow's parameters and task runner choice (flows/full_pipeline.py); the flow itself runs in
tests/integration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.full_pipeline import PipelineParams
from flows.runners import task_runner


def test_params_accept_a_profile_and_overrides() -> None:
    p = PipelineParams(profile="smoke", overrides=["train.batch_size=4"])
    assert (p.profile, p.overrides) == ("smoke", ["train.batch_size=4"])
    assert PipelineParams().profile == "demo"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"profile": "nope"}, "unknown profile 'nope'; available: .*smoke"),
    ({"profile": "smoke", "overrides": ["train.batch_size"]}, "must look like key.sub=value"),
    ({"profile": "smoke", "extra": 1}, "Extra inputs are not permitted"),
    ({"profile": ""}, "at least 1 character"),
])
def test_params_reject_bad_input(kwargs, match) -> None:
    with pytest.raises(ValidationError, match=match):
        PipelineParams(**kwargs)


def test_task_runner_follows_config(smoke_cfg) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(task_runner(smoke_cfg), ThreadPoolTaskRunner)
    smoke_cfg.orchestration.task_runner = "dask"
    local = task_runner(smoke_cfg)
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 2
    smoke_cfg.orchestration.dask_address = "tcp://10.0.0.5:8786"
    assert task_runner(smoke_cfg).address == "tcp://10.0.0.5:8786"


def test_flow_fails_at_start_when_tracking_is_unreachable(monkeypatch, cdco_home) -> None:
    from flows.full_pipeline import cdco
    from tasks.tracking import TrackingUnavailableError
    from tests.integration.conftest import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TrackingUnavailableError, match=r"MLflow tracking server http://127\.0\.0\.1:\d+ cannot be"):
        cdco.fn(profile="smoke")  # the flow body, as a served run executes it
    assert not (cdco_home / "cache").exists()  # failed before any step


def test_run_pipeline_fails_before_prefect_starts(monkeypatch, cdco_home) -> None:
    from flows.full_pipeline import run_pipeline
    from tasks.tracking import TrackingUnavailableError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(TrackingUnavailableError, match="make serve"):
        run_pipeline("smoke", [])
    assert not (cdco_home / "prefect").exists()  # not even the local Prefect server was started


def test_local_runs_keep_the_temporary_server_from_repeating_the_telemetry_notice(monkeypatch, cdco_home) -> None:
    import os

    from flows.full_pipeline import local_prefect_settings

    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    with local_prefect_settings():
        assert os.environ["DO_NOT_TRACK"] == "1"  # the server subprocess inherits it
    assert "DO_NOT_TRACK" not in os.environ
    monkeypatch.setenv("DO_NOT_TRACK", "0")  # a user's own choice stays
    with local_prefect_settings():
        assert os.environ["DO_NOT_TRACK"] == "0"
