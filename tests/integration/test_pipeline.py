"""End to end on the session's real stack (see conftest.py): served run through the API on Dask, MLflow
lineage, cache hit on an unchanged re-run, partial recompute after one dataset changes, the sensor's event
and the deployment's trigger, model reload, and stopping by PID. Tests run in file order."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration

STEP_RUNS = {"prepare_data", "embed[rotten_tomatoes]", "embed[sms_spam]", "embed[imdb]", "fit_manifold[seed0]",
             "build_negative_index[seed0]", "evaluate[cdco/seed0]", "report",
             "register_model"}
STAGES = ["0-warmup", "1-euclidean", "2-poincare", "3-consolidate"]
OVERRIDES = ["orchestration.task_runner=thread"]  # orchestration settings are not part of any cache key


def _run_pipeline(profile: str) -> dict[str, Any]:
    from cdco_core.profile import load_profile
    from flows.full_pipeline import run_pipeline

    return run_pipeline(load_profile(profile, OVERRIDES), profile, OVERRIDES)


def _plan(profile: str) -> Any:
    from cdco_core.plan import build_plan
    from cdco_core.profile import load_profile

    return build_plan(load_profile(profile, OVERRIDES), report=True)


def _mlflow(stack: dict[str, Any]) -> Any:
    import mlflow

    mlflow.set_tracking_uri(stack["urls"]["mlflow"])
    return mlflow.MlflowClient()


def _children(client: Any, parent_id: str, experiment_id: str) -> dict[str, Any]:
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.info.run_name: r for r in runs}


def test_served_run_through_the_api_on_dask(on_stack) -> None:
    from prefect import get_client
    from prefect.deployments import run_deployment

    flow_run = run_deployment("cdco/full-pipeline", parameters={"profile": on_stack["profile"], "overrides": []},
                              timeout=600, poll_interval=2)
    assert flow_run.state.is_completed(), flow_run.state
    client = _mlflow(on_stack)
    exp = client.get_experiment_by_name("cdco-itest")
    [parent] = client.search_runs([exp.experiment_id], f"tags.`prefect.flow_run_id` = '{flow_run.id}'")
    children = _children(client, parent.info.run_id, exp.experiment_id)
    assert STEP_RUNS | {f"train[cdco/seed0/{s}]" for s in STAGES} <= set(children)
    with get_client(sync_client=True) as pc:  # the Prefect run is tagged with the MLflow run id
        assert f"mlflow:{parent.info.run_id}" in pc.read_flow_run(flow_run.id).tags
        # and carries the results table with the MLflow run's address; the MLflow parent links back
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        [art] = pc.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[flow_run.id])))
        assert f"#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}" in art.data and "| cdco |" in art.data
    assert parent.data.tags["prefect.flow_run_url"].endswith(f"/flow-runs/flow-run/{flow_run.id}")
    assert parent.data.tags["cdco.trigger"] == "manual" and parent.data.metrics["cdco.overall"] >= 0
    assert client.download_artifacts(parent.info.run_id, "config/resolved.yaml").endswith("resolved.yaml")

    inputs = {d.dataset.name: d for d in children["prepare_data"].inputs.dataset_inputs}
    assert {"rotten_tomatoes/train", "sms_spam/train", "imdb/train", "ki_file/train"} <= set(inputs)
    full = {t.key: t.value for t in inputs["ki_file/train"].tags}["cdco.sha256"]
    assert len(full) == 64 and inputs["ki_file/train"].dataset.digest == full[:36]
    neg = children["build_negative_index[seed0]"]
    assert {d.dataset.name for d in neg.inputs.dataset_inputs} >= {"manifold[seed0]", "embed[imdb]"}  # its upstream
    assert [a.path for a in client.list_artifacts(neg.info.run_id, "negatives")] == ["negatives/negatives.parquet"]
    assert {a.path for a in client.list_artifacts(neg.info.run_id, "plots")} == {"plots/manifold.png",
                                                                                "plots/distances.png"}
    stage = children["train[cdco/seed0/1-euclidean]"]
    [model] = [o.model_id for o in client.get_run(stage.info.run_id).outputs.model_outputs]  # its LoggedModel
    assert "weights.safetensors" in {a.path for a in client.list_logged_model_artifacts(model)}
    assert "step.loss" in stage.data.metrics and "train.last_loss" in stage.data.metrics
    assert any(k.startswith("avg.") for k in children["evaluate[cdco/seed0]"].data.metrics)
    report = {a.path for a in client.list_artifacts(children["report"].info.run_id, "comparison")}
    assert {"comparison/comparison.csv", "comparison/comparison.md"} <= report
    assert client.get_model_version("cdco-itest", "1").tags["cdco.method"] == "cdco"


def test_unchanged_rerun_recomputes_nothing(on_stack) -> None:
    # thread runner here: orchestration settings are not part of any cache key
    result = _run_pipeline(on_stack["profile"])
    # prepare is never cached by Prefect (the data layer addresses it by the files it reads)
    computed = [name for name, s in result["steps"].items() if not s["cached"] and not name.startswith("prepare[")]
    assert computed == []
    # every task + 3 embedded datasets (2 ID anchors, 1 OOD pool) + manifold + negatives + 4 stages + evaluate + report
    plan = _plan(on_stack["profile"])
    assert set(result["steps"]) == set(plan.nodes)
    assert len(plan.nodes) == len(plan.of_step("prepare")) + 11 and len(plan.of_step("embed")) == 3
    assert result["registered"]["reused"] is True


def test_registered_model_reloads_with_equal_logits(on_stack) -> None:
    import mlflow
    import numpy as np
    import pandas as pd

    from cdco_core.data import open_task
    from cdco_core.runner import run_plan
    from cdco_core.steps.train import load_trained
    from tasks.pyfunc_model import predict_frame

    mlflow.set_tracking_uri(on_stack["urls"]["mlflow"])
    model = mlflow.pyfunc.load_model("models:/cdco-itest/1")
    frame = pd.DataFrame({"task": ["rotten_tomatoes", "sms_spam", "sms_spam"],
                          "text_a": ["a warm, funny film", "WIN a free prize now", "see you at six"]})
    got = model.predict(frame)
    plan = _plan(on_stack["profile"])
    last = plan.last_stage("cdco", 0).id
    done = run_plan(plan, targets=[last])  # every step from the flow's cache (the same keys)
    assert all(r.cached for n, r in done.items() if not n.startswith("prepare["))
    cfg = plan.config_for(plan.nodes[last])
    tasks = [open_task(done[i]) for i in plan.nodes[last].inputs
             if i.startswith("prepare[") and done[i].outputs["kind"] == "ID"]  # the heads the model carries
    ref_model, tok = load_trained(cfg, "cdco", 0, done[last], tasks)
    ref = predict_frame(ref_model, tok, cfg.model.max_length, frame)
    np.testing.assert_allclose(np.stack(got["logits"]), np.stack(ref["logits"]), rtol=0, atol=1e-6)
    with ref_model.adapters_disabled():  # the adapters matter: the check above could fail
        bare = predict_frame(ref_model, tok, cfg.model.max_length, frame)
    assert not np.allclose(np.stack(bare["logits"]), np.stack(ref["logits"]))


def test_dataset_change_recomputes_dependents_emits_event_and_triggers(on_stack) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
    from prefect.events.filters import EventFilter, EventNameFilter

    from flows.sensor import EVENT, dataset_sensor, state_path
    from tests.integration.conftest import write_ki_csv

    # the serve process checked the datasets once at start: the baseline exists without waiting an interval
    assert _poll(lambda: state_path(on_stack["profile"], []).exists(), 120), "no sensor check at serve start"
    assert dataset_sensor(on_stack["profile"])["changed"] == {}
    before = _run_pipeline(on_stack["profile"])["steps"]
    write_ki_csv(on_stack["ki_csv"], variant=1)  # one KI dataset changes
    result = _run_pipeline(on_stack["profile"])
    steps = result["steps"]
    computed = {name for name, s in steps.items() if not s["cached"] and not name.startswith("prepare[")}
    # nothing upstream of evaluation; the report reads every task (each classification task's majority-class
    # floor), so the changed KI task recomputes it whether or not the evaluation's files changed
    assert steps["prepare[ki_file]"]["digest"] != before["prepare[ki_file]"]["digest"]
    assert computed == {"evaluate[cdco/seed0]", "report"}

    since = time.time()
    sensed = dataset_sensor(on_stack["profile"])
    assert list(sensed["changed"]) == ["ki_file"] and sensed["events"][0]
    with get_client(sync_client=True) as pc:
        flt = EventFilter(event=EventNameFilter(name=[EVENT]))
        events = _poll(lambda: [e for e in pc.read_events(flt, limit=50).events  # the server allows <= 50
                                if e.resource.get("cdco.dataset") == "ki_file"], 30)
        assert events[0].resource["cdco.digest"] == sensed["changed"]["ki_file"]
        # the deployment's trigger creates a run (it then runs from cache; the stack's stop ends it)
        by_dep = DeploymentFilter(id=DeploymentFilterId(any_=[pc.read_deployment_by_name("cdco/full-pipeline").id]))
        runs = _poll(lambda: [r for r in pc.read_flow_runs(flow_run_filter=FlowRunFilter(), deployment_filter=by_dep)
                              if r.created.timestamp() >= since - 1], 60)
    assert runs, "the cdco.dataset.changed trigger did not create a run of cdco/full-pipeline"
    params = runs[0].parameters
    assert (params["profile"], params["overrides"]) == (on_stack["profile"], [])
    assert params["trigger"]["dataset"] == "ki_file" and params["trigger"]["digest"] == sensed["changed"]["ki_file"]


def test_stop_by_pid_leaves_deployment_unpaused(on_stack) -> None:
    from prefect import get_client

    from cli import serve

    records = serve.read_records(on_stack["home"])
    assert serve._terminate(records["deployment"], 30) == "stopped"
    with get_client(sync_client=True) as pc:
        assert pc.read_deployment_by_name("cdco/full-pipeline").paused is False
    stopped = serve.stop(on_stack["home"])
    assert stopped["mlflow"] == "stopped" and stopped["prefect"] == "stopped"
    assert not any(serve.running(r) for r in records.values())


def _poll(fn: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(2)
