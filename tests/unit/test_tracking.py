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


def test_dropped_rows_are_logged_per_reason(tmp_path: Path) -> None:
    """on_invalid_rows: drop (issue 17): the counts per reason reach MLflow, beside the rows kept."""
    import mlflow

    from cdco_core.data.spec import TaskSpec
    from cdco_core.profile import load_profile
    from cdco_core.steps.prepare import prepare
    from tasks.prepare import log_prepare

    (tmp_path / "train.csv").write_text("review,rating\ngood,pos\n,neg\nfine,pos\n  ,pos\nmeh,neg\nok,\nbad,neg\n")
    spec = TaskSpec(name="t", kind="ID", type="classification", text=["review"], label="rating",
                    files={"train": str(tmp_path / "train.csv")}, on_invalid_rows="drop")
    cfg = load_profile("smoke")
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"tasks_file": None, "tasks": [spec]})})
    with pytest.warns(UserWarning, match="train.csv: dropped 3 invalid row"):
        record = prepare(cfg, "t")
    from cdco_core.plan import build_plan
    from tasks.lineage import Lineage

    with tracking.pipeline_run("exp-drop", "parent", {}) as parent:
        lin = Lineage(parent, mlflow.get_run(parent).info.experiment_id, build_plan(cfg, ["frozen"], [0]),
                      {"prepare[t]": record}, {})
        log_prepare(lin, ["prepare[t]"])
    client = mlflow.MlflowClient()
    [child] = client.search_runs([client.get_experiment_by_name("exp-drop").experiment_id],
                                 f"tags.mlflow.parentRunId = '{parent}'")
    dropped = {k: v for k, v in child.data.metrics.items() if k.startswith("dropped.")}
    assert dropped == {"dropped.t.train.empty_text": 2.0, "dropped.t.train.empty_label": 1.0}
    assert sum(v for k, v in child.data.metrics.items() if k.startswith("rows.t.")) == 4  # 7 rows, 3 dropped
