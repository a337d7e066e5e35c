"""MLflow helpers (tasks/tracking.py) on a SQLite store under tmp_path (the autouse cdco_home fixture)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tasks import tracking


def test_tracking_uri_defaults_under_cdco_home(monkeypatch, cdco_home) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri() == f"sqlite:///{cdco_home / 'mlflow.db'}"
    assert tracking.is_local_store(tracking.tracking_uri()) and not tracking.is_local_store("http://h:5000")


def test_unreachable_server_fails_with_a_clear_message() -> None:
    from tests.integration.conftest import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(tracking.TrackingUnavailableError, match=f"MLflow tracking server {uri} cannot be reached"):
        tracking.check_tracking(uri, timeout=2)


def test_unwritable_sqlite_store_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(tracking.TrackingUnavailableError, match="SQLite store .* cannot be opened"):
        tracking.check_tracking(f"sqlite:///{blocker}/sub/mlflow.db")
    assert tracking.check_tracking(f"sqlite:///{tmp_path}/ok/mlflow.db").endswith("ok/mlflow.db")


def test_nested_step_run_logs_our_digest_and_artifacts(cdco_home, tmp_path: Path) -> None:
    import mlflow

    table = tmp_path / "negatives.parquet"
    table.write_bytes(b"rows")
    sha = hashlib.sha256(b"rows").hexdigest()
    with tracking.pipeline_run("exp-test", "parent", {"prefect.flow_run_id": "fr-1"}) as parent:
        with tracking.step_run(parent, "negatives"):
            tracking.log_table_input("negatives", sha, table, context="hard_negatives", extra_tags={"cdco.rows": "4"})
            tracking.log_paths([table, tmp_path / "missing.png"], "negatives")
            tracking.log_flat_metrics({"a": {"b": 1, "c": "text", "d": True}, "e": 2.5})
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("exp-test")
    assert exp.artifact_location == (cdco_home / "mlartifacts" / "exp-test").as_uri()  # not ./mlruns
    [child] = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    [inp] = child.inputs.dataset_inputs
    tags = {t.key: t.value for t in inp.tags}
    assert inp.dataset.digest == sha[:36] and tags["cdco.sha256"] == sha and tags["mlflow.data.context"] == \
        "hard_negatives"
    assert inp.dataset.source == f'{{"uri": "{table}"}}'
    assert child.data.metrics == {"a.b": 1.0, "e": 2.5}  # strings and booleans are not metrics
    assert [a.path for a in client.list_artifacts(child.info.run_id, "negatives")] == ["negatives/negatives.parquet"]
    assert "missing.png" in child.data.tags["cdco.missing_artifacts.negatives"]
    assert client.get_run(parent).data.tags["prefect.flow_run_id"] == "fr-1"


def test_flatten() -> None:
    assert tracking.flatten({"a": {"b": {"c": 1}}, "d": 2}, "p") == {"p.a.b.c": 1, "p.d": 2}
