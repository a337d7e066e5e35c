"""``cdco compare`` as a user runs it: logged to a real MLflow store (SQLite under this test's CDCO_HOME), with
progress bars in a terminal and none in a pipe.

Smoke profile, two cheap methods (frozen, lora_mtl). The piped run trains seed 0 and is read back from MLflow; the
terminal run (a pseudo-terminal) trains seed 1 in the same CDCO_HOME, so its stages are computed (and shown) too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_terminal import run_in_pty

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["frozen", "lora_mtl"]
ARGS = ["-m", "cli.main", "compare", "--profile", "smoke", "--methods", ",".join(METHODS)]
# tqdm writes the rate as steps per second, or seconds per step when below one
STAGE_BAR = re.compile(r"train\[lora_mtl/seed1/\d-\w+\]: +100%\|[^\r\n]*\| *(\d+)/\1 \[[^\]]*(step/s|s/step), loss=\d")
NODE_BAR = re.compile(r"nodes: +\d+%\|[^\r\n]*\| *\d+/\d+ \[")


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "CDCO_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
           "TERM": "xterm"}
    env.pop("CI", None)  # bars are shown in a terminal unless CI says otherwise
    env.pop("PREFECT_API_URL", None)
    return env


def test_compare_logs_to_mlflow_and_draws_bars_only_in_a_terminal(tmp_path) -> None:
    import mlflow

    home = tmp_path / "home"
    piped = subprocess.run([sys.executable, *ARGS, "--seeds", "0", "--json"], env=_env(home), cwd=ROOT,
                           capture_output=True, text=True, timeout=1200)
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert not NODE_BAR.search(piped.stderr) and "loss=" not in piped.stderr  # no bars in a pipe
    result = json.loads(piped.stdout)
    numbers = json.loads((Path(result["out_dir"]) / "results.json").read_text())["numbers"]

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    parent = client.get_run(result["mlflow_run_id"])
    assert re.fullmatch(r"smoke frozen\+lora_mtl \d{4}-\d\d-\d\d \d\d:\d\dZ", parent.info.run_name)
    assert parent.data.tags["cdco.kind"] == "compare" and parent.data.tags["cdco.trigger.via"] == "cdco compare"
    assert parent.data.params["methods"] == "frozen,lora_mtl" and parent.data.params["seeds"] == "0"
    for m in METHODS:  # the report's means, as results.json holds them (not recomputed)
        for scope in ("ID", "OOD", "KI", "overall", "primary"):
            assert parent.data.metrics[f"{m}.{scope}"] == numbers[m][scope]["mean"]

    children = {r.info.run_name: r for r in client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert set(children) == {"evaluate[frozen/seed0]", "evaluate[lora_mtl/seed0]", "report"}
    for m in METHODS:
        child = children[f"evaluate[{m}/seed0]"]
        assert child.data.tags["cdco.method"] == m and child.data.tags["cdco.seed"] == "0"
        for scope in ("ID", "OOD", "KI", "overall", "primary"):  # one seed: its value is the report's mean
            assert numbers[m][scope]["n"] == 1
            assert child.data.metrics[f"avg.{scope}"] == numbers[m][scope]["mean"]
        task_cols = [c for c in numbers[m] if " (" in c]
        assert task_cols and all(child.data.metrics[f"task.{c.split(' (')[0]}.{c.split(' (')[1][:-1]}"]
                                 == numbers[m][c]["mean"] for c in task_cols)
        scored = child.data.tags["cdco.scored_weights_sha256"]
        assert re.fullmatch(r"[0-9a-f]{64}", scored)

    report = children["report"]
    logged = {a.path for a in client.list_artifacts(report.info.run_id, "comparison")}
    assert {f"comparison/{f}" for f in ("comparison.md", "comparison.csv", "bootstrap.csv", "results.json",
                                        "kinds.png", "deltas.png")} <= logged
    md = Path(mlflow.artifacts.download_artifacts(run_id=report.info.run_id, artifact_path="comparison/comparison.md",
                                                  dst_path=str(tmp_path / "dl"))).read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    # the plots through the tracking server's artifact route, not a path relative to the UI's address
    assert images and all(i.startswith("get-artifact?") and report.info.run_id in i for i in images)
    logged_json = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=report.info.run_id, artifact_path="comparison/results.json", dst_path=str(tmp_path / "dl"))).read_text())
    assert logged_json["numbers"] == numbers

    code, out = run_in_pty([sys.executable, *ARGS, "--seeds", "1"], _env(home), timeout=1200)
    assert code == 0, out[-3000:]
    assert STAGE_BAR.search(out), out[-3000:]  # a bar per computed stage: steps, steps/s, loss
    assert NODE_BAR.search(out), out[-3000:]  # and the one over the plan's nodes
    assert "Prefect collects anonymous usage data" not in out  # a comparison has no flow: Prefect is not imported
    assert out.rstrip().splitlines()[-1].startswith("MLflow      mlflow ui --backend-store-uri sqlite:///")
