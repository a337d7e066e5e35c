"""kill -9 in the middle of a contrastive stage, run again: the same weights and metrics as a run never killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("resume_script.py")
PROJECT = Path(__file__).resolve().parents[3]
# Poincaré stage of 11 steps, checkpoints every 4: killed after its step 9 (global 6 + 4 + 9 = 19), the rerun
# resumes from its step-8 checkpoint, whose negative bank came from the refresh at step 5 (refresh every 5).
OVERRIDES = ["train.stages.2.steps=11", "train.checkpoint_every=4", "train.negative_refresh_every=5"]
KILL_AT = 19


def _log(out: Path, kill_at: int) -> Path:
    return Path(f"{out}.{kill_at}.log")


def _run(home: Path, out: Path, kill_at: int) -> subprocess.Popen:
    env = {**os.environ, "CDCO_HOME": str(home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(PROJECT)}
    with _log(out, kill_at).open("ab") as log:  # a file, not a pipe: a run nobody reads yet never blocks on it
        return subprocess.Popen([sys.executable, str(SCRIPT), str(out), "cdco", str(kill_at), *OVERRIDES],
                                env=env, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)


def _output(proc: subprocess.Popen) -> str:
    _script, out, _method, kill_at = proc.args[1:5]
    return _log(Path(out), int(kill_at)).read_text(errors="replace")[-3000:]


def _finish(proc: subprocess.Popen) -> None:
    proc.wait(timeout=300)
    assert proc.returncode == 0, _output(proc)


def _essence(result: dict) -> list:
    # Not the keys of stages 1..3: a stage's key reads the previous stage's record digest, and that record holds
    # its wall time (meta.json / outputs.json "seconds"), so two homes never share those keys (see the report).
    return [(node, r["outputs"]["weights_sha256"], r["outputs"]["metrics"], r["outputs"]["train"]["last_loss"])
            for node, r in result.items()]


def test_kill_minus_nine_then_resume_matches_uninterrupted(tmp_path):
    ref_out, out = tmp_path / "ref.json", tmp_path / "resumed.json"
    ref = _run(tmp_path / "home_ref", ref_out, -1)  # the uninterrupted run, beside the victim (its own home)
    home = tmp_path / "home"
    victim = _run(home, out, KILL_AT)
    ready = Path(f"{out}.ready")
    deadline = time.time() + 240  # a hang guard, not a speed target: the child is killed and the test fails
    while not ready.exists():
        assert victim.poll() is None, _output(victim)
        if time.time() > deadline:
            victim.kill()
            pytest.fail("the training process never reached the kill step within 240 s")
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    partial = list((home / "steps" / "train").glob("cdco-seed0-2-*.partial/ckpt-00000008"))
    assert len(partial) == 1, "the killed stage left its step-8 checkpoint"
    assert not out.exists()

    _finish(ref)
    _finish(_run(home, out, -1))
    a, b = json.loads(ref_out.read_text()), json.loads(out.read_text())
    assert _essence(b) == _essence(a)
    assert next(iter(b.values()))["key"] == next(iter(a.values()))["key"]  # same config, data and code
    stages = list(b.values())
    assert len(stages) == 4 and [s["cached"] for s in stages] == [True, True, False, False]
    assert stages[2]["outputs"]["train"]["resumed_from"] == 8
    assert list(a.values())[2]["outputs"]["train"]["resumed_from"] is None
    assert not list((home / "steps" / "train").glob("*.partial"))
