"""The parent run's helpers (tasks/parent.py) and the report's UI links (tasks/report.py): our own logic."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from tasks import parent
from tasks.report import ui_markdown


def test_run_name_says_profile_methods_and_utc_time() -> None:
    when = dt.datetime(2026, 11, 30, 17, 5, tzinfo=dt.UTC)
    assert parent.run_name("smoke", ["cdco", "ca_mtl"], when) == "smoke cdco+ca_mtl 2026-11-30 17:05Z"
    many = parent.run_name("demo", ["a", "b", "c", "d", "e", "f"], when)
    assert many == "demo a+b+c+3 more 2026-11-30 17:05Z"


def test_trigger_tags_from_the_parameter_or_the_flow_run() -> None:
    assert parent.trigger_tags({"kind": "manual", "via": "cdco run"}) == {"cdco.trigger": "manual",
                                                                           "cdco.trigger.via": "cdco run"}
    assert parent.trigger_tags(None) == {"cdco.trigger": "manual"}  # no deployment: started by hand
    scheduled = SimpleNamespace(deployment_id="d", auto_scheduled=True, created_by=None)
    assert parent.trigger_tags({}, scheduled) == {"cdco.trigger": "schedule"}
    automation = SimpleNamespace(deployment_id="d", auto_scheduled=False, created_by=SimpleNamespace(type="AUTOMATION"))
    assert parent.trigger_tags({}, automation) == {"cdco.trigger": "automation"}
    by_hand = SimpleNamespace(deployment_id="d", auto_scheduled=False, created_by=None)
    assert parent.trigger_tags({}, by_hand) == {"cdco.trigger": "manual", "cdco.trigger.via": "deployment run"}


def test_method_averages_mean_over_seeds_and_tolerate_new_keys() -> None:
    got = parent.method_averages({
        "evaluate[cdco/seed0]": {"ID": 0.5, "overall": 0.4, "OOD": {"seen": 0.2, "unseen": 0.4}},
        "evaluate[cdco/seed1]": {"ID": 0.7, "overall": 0.6, "OOD": {"seen": 0.4, "unseen": None}},
        "evaluate[ca_mtl/seed0]": {"ID": 0.1, "note": "text"},
    })
    assert got["cdco"] == {"ID": 0.6, "overall": 0.5, "OOD.seen": 0.30000000000000004, "OOD.unseen": 0.4}
    assert got["ca_mtl"] == {"ID": 0.1}
    table = parent.results_table(got)
    assert table[0] == "| method | ID | OOD.seen | OOD.unseen | overall |"
    assert table[3] == "| ca_mtl | 0.100 | - | - | - |"


def test_mlflow_links() -> None:
    assert parent.mlflow_run_url("http://127.0.0.1:5000/", "3", "abc") == \
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"  # not the GenAI view
    assert parent.mlflow_run_url("sqlite:////x/mlflow.db", "3", "abc") is None
    assert parent.mlflow_ui_command("sqlite:////x/mlflow.db") == "mlflow ui --backend-store-uri sqlite:////x/mlflow.db"
    assert parent.artifact_key("My_Profile.v2") == "cdco-my-profile-v2-results"


def test_report_images_point_at_the_server_artifact_route() -> None:
    md = "text ![kinds](kinds.png) and ![d](deltas.png) ![web](https://x/y.png) [link](a.md)"
    out = ui_markdown(md, "run1")
    assert "![kinds](get-artifact?path=comparison%2Fkinds.png&run_uuid=run1)" in out
    assert "![d](get-artifact?path=comparison%2Fdeltas.png&run_uuid=run1)" in out
    assert "![web](https://x/y.png)" in out and "[link](a.md)" in out
    assert ui_markdown(out, "run2") == out  # already rewritten: left alone
    absolute = ui_markdown(md, "run1", server="http://127.0.0.1:5000/")  # what MLflow's artifact viewer shows
    assert "![kinds](http://127.0.0.1:5000/get-artifact?path=comparison%2Fkinds.png&run_uuid=run1)" in absolute
    assert ui_markdown(absolute, "run2") == absolute


def test_a_dataset_inserted_by_another_run_at_once_is_logged_on_retry(monkeypatch) -> None:
    """Two team workers log the same dataset at the same moment: the loser's unique-key error is retried."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from tasks import lineage

    calls = []

    def log_input(dataset, context=None, tags=None):
        calls.append(context)
        if len(calls) == 1:
            raise MlflowException("BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value violates "
                                  'unique constraint "dataset_pk"')

    monkeypatch.setattr(mlflow, "log_input", log_input)
    lineage.log_dataset(object(), "ab" * 32, "training")
    assert calls == ["training", "training"]
    calls.clear()
    monkeypatch.setattr(mlflow, "log_input", lambda *a, **k: (_ for _ in ()).throw(MlflowException("other")))
    with pytest.raises(MlflowException, match="other"):  # anything else is not retried
        lineage.log_dataset(object(), "ab" * 32, "training")


def test_compare_parent_metrics_are_the_report_means_by_scope() -> None:
    from tasks.compare import report_averages

    numbers = {"cdco": {"imdb (accuracy)": {"mean": 0.5, "sd": 0.1, "n": 2}, "ID": {"mean": 0.6, "sd": 0.05, "n": 2},
                        "s/step": {"mean": 0.3, "sd": 0.0, "n": 2}, "KI": {"mean": float("nan"), "sd": 0.0, "n": 0}},
               "frozen": {"ID": {"mean": 0.4, "sd": 0.0, "n": 1}}}
    # per-entry columns stay on the child runs (no parentheses in MLflow names); sd only over two or more seeds
    expected = {"cdco": {"ID": 0.6, "ID.sd": 0.05, "s/step": 0.3, "s/step.sd": 0.0}, "frozen": {"ID": 0.4}}
    assert report_averages({"numbers": numbers}) == expected
