"""The console command: fast help, and bad input as one message with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cdco(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)


def test_help_lists_commands_without_importing_torch():
    out = _cdco("--help")
    assert out.returncode == 0
    for cmd in ("run", "step", "compare", "bench", "data"):
        assert cmd in out.stdout
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys, cli.main; print('torch' in sys.modules, 'prefect' in sys.modules)"],
        capture_output=True, text=True, cwd=ROOT)
    assert probe.stdout.split() == ["False", "False"]


def _check_one_csv_task(tmp_path: Path, name: str, csv: str) -> subprocess.CompletedProcess:
    """Write train.csv and a one-task spec for it, then run ``cdco data check`` on the spec."""
    (tmp_path / "train.csv").write_text(csv)
    (tmp_path / "tasks.yaml").write_text(
        f"tasks:\n  - {{name: {name}, kind: ID, type: classification, files: {{train: train.csv}},"
        " text: [review], label: rating}\n")
    return _cdco("data", "check", "--tasks", str(tmp_path / "tasks.yaml"), env={"CDCO_HOME": str(tmp_path / "h")})


def test_data_check_prints_rows_labels_digests(tmp_path):
    out = _check_one_csv_task(tmp_path, "mine", "review,rating\ngood,pos\nbad,neg\nfine,pos\nawful,neg\nok,pos\n")
    assert out.returncode == 0, out.stderr
    assert "mine  kind=ID" in out.stdout
    assert "train       rows=4" in out.stdout and "validation  rows=1" in out.stdout and "digest=" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--profile", "smoke", "--set", "train.nope=1"], "train.nope: unknown key"),
        (["run", "--profile", "nope"], "unknown profile 'nope'"),
        (["run", "--profile", "smoke", "--methods", "cdco,nope"], "unknown method 'nope'; available:"),
        (["data", "check", "--tasks", "missing.yaml"], "task spec file not found: missing.yaml"),
        (["step", "fly", "--profile", "smoke"], "unknown step 'fly'"),
    ],
)
def test_bad_input_is_one_message_and_exit_2(args, message, tmp_path):
    out = _cdco(*args, env={"CDCO_HOME": str(tmp_path / "h")})
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "h").exists() or not any((tmp_path / "h").rglob("*.parquet"))


def test_bad_data_file_exits_2_and_names_row(tmp_path):
    out = _check_one_csv_task(tmp_path, "m", "review,rating\ngood,pos\n,neg\n")
    assert out.returncode == 2
    assert "train.csv row 2: column 'review' is empty or NaN" in out.stderr


def test_stale_prefect_api_url_is_one_line_and_exit_2(tmp_path):
    """PREFECT_API_URL left exported after `make stop`: one line naming the URL and both ways out."""
    from tests.integration.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/api"
    out = _cdco("run", "--profile", "smoke", env={"CDCO_HOME": str(tmp_path / "h"), "PREFECT_API_URL": url,
                                                  "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"})
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"error: the Prefect server at PREFECT_API_URL={url} is not "
                                                       "reachable")
    assert "unset PREFECT_API_URL" in lines[0] and "make serve" in lines[0]
    assert not (tmp_path / "h" / "steps").exists()  # before any work


def test_run_summary_reads_like_a_report():
    from cli.summary import compare_summary, run_summary

    result = {"profile": "smoke", "steps": {"a": {"cached": False}, "b": {"cached": True}},
              "averages": {"cdco": {"ID": 0.5, "OOD": 0.25, "overall": 0.4},
                           "lora_mtl": {"ID": 0.45, "OOD": 0.3, "KI": 0.2, "overall": 0.35}},
              "report": {"md": "/h/comparison.md"}, "mlflow_url": None,
              "mlflow_ui": "mlflow ui --backend-store-uri sqlite:////h/mlflow.db",
              "registered": {"name": "cdco-smoke", "version": "3", "weights_sha256": "ab" * 32, "reused": True,
                             "aliases": ["latest_run"]}}
    text = run_summary(result, 61.23)
    lines = text.splitlines()
    assert lines[0] == "cdco run: profile smoke, 2 steps (1 computed, 1 from cache), 61.2 s"
    assert lines[2].split() == ["method", "ID", "OOD", "KI", "overall"]
    assert lines[4].split() == ["cdco", "0.500", "0.250", "-", "0.400"]
    assert lines[5].split() == ["lora_mtl", "0.450", "0.300", "0.200", "0.350"]
    assert "report      /h/comparison.md" in lines
    assert "registered  cdco-smoke version 3 @latest_run (unchanged, weights abababababab)" in lines
    assert lines[-1].startswith("MLflow      mlflow ui --backend-store-uri sqlite:////h/mlflow.db")
    comp = compare_summary({"methods": ["cdco"], "seeds": [0, 1], "md": "/o/comparison.md", "csv": "/o/c.csv",
                            "table": [{"method": "cdco", "imdb (accuracy)": "0.5 ± 0.1", "ID": "0.6 ± 0.0",
                                       "overall": "0.55 ± 0.05"}]}, 3.0).splitlines()
    assert comp[2].split() == ["method", "ID", "overall"] and comp[4].split() == ["cdco", "0.6", "±", "0.0", "0.55",
                                                                                    "±", "0.05"]
    assert not any(ln.startswith("MLflow") for ln in comp)  # --no-track: no run to name
    twins = compare_summary({"methods": ["cdco", "cdco_no_poincare"], "seeds": [0], "table": [],
                             "same_weights": [["cdco", "cdco_no_poincare"]]}, 1.0).splitlines()
    assert twins[-1].startswith("one model   cdco = cdco_no_poincare: the same weights at every seed, their scores")
    tracked = compare_summary({"methods": ["cdco"], "seeds": [0], "table": [], "mlflow_run_id": "r1",
                               "mlflow_url": "http://mlflow:5000/#/experiments/1/runs/r1"}, 3.0).splitlines()
    assert tracked[-1] == "MLflow      http://mlflow:5000/#/experiments/1/runs/r1"


def test_compare_fails_before_training_when_tracking_is_unreachable(tmp_path):
    env = {**os.environ, "CDCO_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-m", "cli.main", "compare", "--profile", "smoke", "--methods", "frozen",
                          "--seeds", "0"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "MLflow tracking server http://127.0.0.1:9 cannot be reached" in out.stderr
    assert not (tmp_path / "steps").exists()  # nothing was computed
