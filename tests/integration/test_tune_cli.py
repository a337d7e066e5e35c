"""`cdco tune` end to end on the smoke profile: real shortened training scored on dev splits, an Optuna study that
survives kill -9, MLflow child runs per trial, and `cdco compare --tuned` applying the best settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
TUNE = ["-m", "cli.main", "tune", "--profile", "smoke", "--method", "lora_mtl", "--trials", "2",
        "--set", "data.dev_fraction=0.25", "--set", "data.max_rows.train=48", "--steps-fraction", "0.25"]

pytestmark = pytest.mark.integration


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "CDCO_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _tune(home: Path, *extra: str) -> dict:
    out = subprocess.run([sys.executable, *TUNE, *extra], env=_env(home), cwd=PROJECT, capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    return yaml.safe_load(out.stdout)  # the JSON summary is YAML too


def test_tune_resumes_after_kill_to_the_same_best_trial_and_compare_applies_it(tmp_path):
    whole = _tune(tmp_path / "whole")  # uninterrupted, tracked in MLflow

    killed_home = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, *TUNE, "--no-track"], env=_env(killed_home), cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # a hang guard, not a speed target
    for line in proc.stderr:  # the first trial's line: the study holds one complete trial, the second begins
        if "-> dev primary" in line:
            break
        if time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    resumed = _tune(killed_home, "--no-track")
    assert resumed["best"] == whole["best"] and resumed["best_value"] == pytest.approx(whole["best_value"])
    tuned_file = Path(resumed["tuned_file"])
    assert yaml.safe_load(tuned_file.read_text()) == {"lora_mtl": whole["best"]}

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'whole' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["cdco"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("cdco.kind") == "tune"]
    trials = [r for r in runs if r.data.tags.get("cdco.kind") == "tune-trial"]
    assert len(parents) == 1 and len(trials) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    best_run = max(trials, key=lambda r: r.data.metrics["dev_primary"])
    assert best_run.data.metrics["dev_primary"] == pytest.approx(whole["best_value"])
    assert best_run.data.params == dict(o.split("=", 1) for o in whole["best"])  # the trial's settings, as params

    # compare --tuned: the tuned method trains with the file's settings (another key), the other one as before
    from cdco_core.plan import build_plan
    from cdco_core.profile import load_profile
    from cdco_core.tuning import read_tuned

    cfg = load_profile("smoke")
    plain = build_plan(cfg, ["lora_mtl", "frozen"], [0])
    tuned = build_plan(cfg, ["lora_mtl", "frozen"], [0], tuned=read_tuned(tuned_file, ["lora_mtl", "frozen"]))
    r = next(o for o in whole["best"] if o.startswith("adapters.r="))
    assert tuned.configs["lora_mtl"].adapters.r == int(r.split("=")[1])
    assert tuned.configs["frozen"] == plain.configs["frozen"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_xl: [adapters.r=4]\n")
    out = subprocess.run([sys.executable, "-m", "cli.main", "compare", "--profile", "smoke", "--methods", "lora_mtl",
                          "--tuned", str(bad)], env=_env(tmp_path / "bad"), cwd=PROJECT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "unknown method(s) ['lora_xl']" in out.stderr
    assert not (tmp_path / "bad" / "steps").exists()
