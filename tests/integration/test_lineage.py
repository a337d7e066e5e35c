"""The lineage a person follows in the MLflow UI, read back from a real MLflow store (SQLite, this test's
CDCO_HOME) after ``cdco run``'s flow on the smoke profile with two methods (local Prefect mode).

Tests run in file order and share one store: the first runs the pipeline, the last runs it again unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

OVERRIDES = ["orchestration.task_runner=thread", "eval.methods=[cdco,lora_mtl]"]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lineage-home")


@pytest.fixture
def store(home, monkeypatch) -> Any:
    """This module's CDCO_HOME and MLflow store (the autouse fixture gives each test its own otherwise)."""
    import mlflow

    monkeypatch.setenv("CDCO_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home}/mlflow.db")
    mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
    return mlflow.MlflowClient()


def _run() -> dict[str, Any]:
    from cdco_core.profile import load_profile
    from flows.full_pipeline import run_pipeline

    return run_pipeline(load_profile("smoke", OVERRIDES), "smoke", OVERRIDES)


def _children(client: Any, parent_id: str) -> dict[str, Any]:
    exp = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.info.run_name: client.get_run(r.info.run_id) for r in runs}  # get_run: with model inputs


def _inputs(run: Any) -> dict[str, Any]:
    return {d.dataset.name: d for d in run.inputs.dataset_inputs}


def _tags(dataset_input: Any) -> dict[str, str]:
    return {t.key: t.value for t in dataset_input.tags}


RESULT: dict[str, Any] = {}


def test_stage_runs_log_their_upstream_and_their_adapters(store) -> None:
    RESULT.update(_run())
    parent = store.get_run(RESULT["mlflow_run_id"])
    assert parent.info.run_name.startswith("smoke cdco+lora_mtl ")  # profile, methods, UTC time
    assert parent.data.tags["cdco.trigger"] == "manual" and parent.data.tags["cdco.trigger.via"] == "cdco run"
    assert {"cdco.overall", "lora_mtl.overall", "cdco.ID"} <= set(parent.data.metrics)
    exp = store.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs table

    runs = _children(store, parent.info.run_id)
    neg_digest = RESULT["steps"]["negatives[seed0]"]["digest"]
    stage = runs["train[cdco/seed0/1-euclidean]"]
    inputs = _inputs(stage)
    # the negatives table it trained on: its digest, and the run that produced it
    assert inputs["negatives[seed0]"].dataset.digest == neg_digest[:36]
    assert _tags(inputs["negatives[seed0]"])["cdco.sha256"] == neg_digest
    assert _tags(inputs["negatives[seed0]"])["cdco.produced_by"] == runs["build_negative_index[seed0]"].info.run_id
    # the ID datasets (train split for training), the OOD texts, the previous stage
    assert _tags(inputs["rotten_tomatoes/train"])["mlflow.data.context"] == "training"
    assert "imdb/train" in inputs and "train[cdco/seed0/0-warmup]" in inputs
    [warmup_model] = [o.model_id for o in runs["train[cdco/seed0/0-warmup]"].outputs.model_outputs]
    # (MLflow also lists a run's own model among its inputs once metrics are logged against it)
    assert warmup_model in [m.model_id for m in stage.inputs.model_inputs]
    # its adapters: a LoggedModel carrying the weights' sha256, with the ID metrics linked to the eval datasets
    [model_id] = [o.model_id for o in stage.outputs.model_outputs]
    model = store.get_logged_model(model_id)
    sha = stage.data.tags["cdco.weights_sha256"]
    assert model.tags["cdco.weights_sha256"] == sha and model.source_run_id == stage.info.run_id
    assert {a.path for a in store.list_logged_model_artifacts(model_id)} >= {"weights.safetensors", "meta.json"}
    linked = {m.key: m.dataset_name for m in model.metrics}
    assert linked["id.rotten_tomatoes.accuracy"] == "rotten_tomatoes/validation"
    # the chain upstream: negatives <- manifold <- embeddings <- the prepared split
    neg_inputs = _inputs(runs["build_negative_index[seed0]"])
    assert {"manifold[seed0]", "embed[imdb]"} <= set(neg_inputs)
    assert set(_inputs(runs["fit_manifold[seed0]"])) == {"embed[rotten_tomatoes]", "embed[sms_spam]", "embed[imdb]"}
    assert _inputs(runs["embed[imdb]"])["imdb/train"].dataset.digest == \
        _inputs(runs["prepare_data"])["imdb/train"].dataset.digest
    # the description links the producing runs (clickable in the UI)
    assert f"runs/{runs['build_negative_index[seed0]'].info.run_id}" in stage.data.tags["mlflow.note.content"]


def test_evaluation_names_the_weights_it_scored(store) -> None:
    runs = _children(store, RESULT["mlflow_run_id"])
    final = runs["train[cdco/seed0/3-consolidate]"]
    [final_model] = [o.model_id for o in final.outputs.model_outputs]
    ev = runs["evaluate[cdco/seed0]"]
    assert [m.model_id for m in ev.inputs.model_inputs] == [final_model]  # the run logs no model of its own
    assert ev.data.tags["cdco.scored_weights_sha256"] == final.data.tags["cdco.weights_sha256"]
    assert _tags(_inputs(ev)["imdb/validation"])["mlflow.data.context"] == "evaluation"
    scored = {m.key: m.dataset_name for m in store.get_logged_model(final_model).metrics}
    assert scored["task.imdb.accuracy"] == "imdb/validation" and "avg.overall" in scored


def test_registered_version_points_at_its_stage_and_model(store) -> None:
    import mlflow

    from tasks.register import champion
    reg = RESULT["registered"]
    runs = _children(store, RESULT["mlflow_run_id"])
    final = runs["train[cdco/seed0/3-consolidate]"]
    [final_model] = [o.model_id for o in final.outputs.model_outputs]
    v = store.get_model_version_by_alias("cdco-smoke", "latest_run")
    assert str(v.version) == reg["version"] and v.run_id == final.info.run_id and v.source == f"models:/{final_model}"
    assert v.tags["cdco.weights_sha256"] == final.data.tags["cdco.weights_sha256"] == reg["weights_sha256"]
    assert float(v.tags["cdco.metric.eval.avg.overall"]) == pytest.approx(RESULT["averages"]["cdco"]["overall"])
    assert "cdco.metric.train.last_loss" in v.tags
    info = mlflow.models.get_model_info("models:/cdco-smoke@latest_run")
    assert [c.name for c in info.signature.inputs.inputs] == ["task", "text_a", "text_b"]
    assert info.saved_input_example_info is not None
    # champion: the better of the two methods by mean overall score (one seed)
    best = max(("cdco", "lora_mtl"), key=lambda m: RESULT["averages"][m]["overall"])
    assert RESULT["registered"].get("champion", {}).get("method", "cdco") == best
    champ = store.get_model_version_by_alias("cdco-smoke", "champion")
    assert champ.tags["cdco.method"] == best
    assert champion is not None
    parent = store.get_run(RESULT["mlflow_run_id"])  # the parent links the version it produced
    assert parent.data.tags["cdco.registered_model"] == f"cdco-smoke/{reg['version']}"
    assert f"#/models/cdco-smoke/versions/{reg['version']})" in parent.data.tags["mlflow.note.content"]
    reg_run = runs["register_model"]
    assert final_model in [m.model_id for m in reg_run.inputs.model_inputs]
    assert reg_run.data.params["version"] == reg["version"] and reg_run.data.metrics


def test_report_logs_bootstrap_results_and_a_working_image_link(store) -> None:
    runs = _children(store, RESULT["mlflow_run_id"])
    rep = runs["report"]
    paths = {a.path for a in store.list_artifacts(rep.info.run_id, "comparison")}
    assert {"comparison/comparison.csv", "comparison/comparison.md", "comparison/bootstrap.csv",
            "comparison/results.json", "comparison/kinds.png"} <= paths
    md = Path(store.download_artifacts(rep.info.run_id, "comparison/comparison.md")).read_text(encoding="utf-8")
    assert f"get-artifact?path=comparison%2Fkinds.png&run_uuid={rep.info.run_id}" in md
    assert "](kinds.png)" not in md


def test_unchanged_rerun_references_instead_of_uploading(store) -> None:
    first = _children(store, RESULT["mlflow_run_id"])
    exp = store.get_run(RESULT["mlflow_run_id"]).info.experiment_id
    models_before = {m.model_id for m in store.search_logged_models([exp])}
    again = _run()
    runs = _children(store, again["mlflow_run_id"])
    assert not any(s["cached"] is False for n, s in again["steps"].items() if not n.startswith("prepare["))
    stage = runs["train[cdco/seed0/1-euclidean]"]
    assert stage.data.tags["cdco.cached"] == "true"
    assert stage.data.tags["cdco.artifacts_run_id"] == first["train[cdco/seed0/1-euclidean]"].info.run_id
    assert [o.model_id for o in stage.outputs.model_outputs] == \
        [o.model_id for o in first["train[cdco/seed0/1-euclidean]"].outputs.model_outputs]
    assert {m.model_id for m in store.search_logged_models([exp])} == models_before  # no second copy
    for name in ("build_negative_index[seed0]", "report"):
        assert store.list_artifacts(runs[name].info.run_id) == []
        assert runs[name].data.tags["cdco.artifacts_run_id"] == first[name].info.run_id
    # the parent still links the model version, through its register_model run
    assert again["registered"]["reused"] is True
    assert runs["register_model"].data.params["version"] == RESULT["registered"]["version"]
