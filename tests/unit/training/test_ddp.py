"""DDP training for real: ``torchrun`` starts two CPU processes (gloo) that train the smoke profile's first two cdco
stages with half of each batch per rank (cdco_core/training/distributed.py).

- stage 0 (task loss only): the two-process weights equal one process's on the full batch within 1e-6 (measured:
  1.5e-8, float summation order); the contrastive stage 1 is not compared across world sizes (its in-batch terms
  see only a rank's rows);
- kill -9 of rank 1 in stage 1: the launcher ends rank 0, and the re-run resumes from rank 0's checkpoint and ends
  with the same weights as the uninterrupted two-process run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_script.py")
PROJECT = Path(__file__).resolve().parents[3]
# stage 0: 4 steps; stage 1 (contrastive): 10 steps, checkpoint at 4 and 8, bank refreshed at 0 and 5.
OVERRIDES = ["train.stages.0.steps=4", "train.stages.1.steps=10", "train.checkpoint_every=4",
             "train.negative_refresh_every=5"]
KILL_AT = 4 + 6  # global step: stage 1's step 6, after the step-4 checkpoint
TOLERANCE = 1e-6

pytestmark = pytest.mark.slow


def _run(home: Path, out: Path, kill_at: int, nproc: int) -> subprocess.Popen:
    env = {**os.environ, "CDCO_HOME": str(home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(PROJECT)}
    # --standalone: a rendezvous on a free local port (tests may run side by side)
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    return subprocess.Popen([sys.executable, *launcher, str(SCRIPT), str(out), "1", str(kill_at), *OVERRIDES],
                            env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_all(proc: subprocess.Popen) -> None:
    """The launcher and its ranks (torchrun starts each rank in a process group of its own)."""
    from cli.serve import _descendants

    for pid, _ in _descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.wait()


def _finish(proc: subprocess.Popen) -> None:
    try:
        output, _ = proc.communicate(timeout=420)  # a hang guard, not a speed target
    except subprocess.TimeoutExpired:
        _kill_all(proc)
        raise
    assert proc.returncode == 0, output.decode()[-4000:]


def _weights(path: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "weights.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_processes_match_one_and_resume_after_kill_minus_nine(tmp_path) -> None:
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    procs = [_run(tmp_path / "home1", one, -1, 1), _run(tmp_path / "home2", two, -1, 2)]
    for p in procs:
        _finish(p)
    r1, r2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert (r1["world"], r2["world"]) == (1, 2)
    # stage 0's key is the same whatever the world size; later keys chain on the weights' digest, which differ
    # in the last bits between world sizes (float summation order), so they are compared by value, not key
    assert Path(r1["stage0_path"]).name == Path(r2["stage0_path"]).name
    diff0 = _max_diff(_weights(r1["stage0_path"]), _weights(r2["stage0_path"]))
    print(f"stage 0, 2 processes x 4 rows vs 1 process x 8 rows: max |dw| = {diff0:.2e}")
    assert diff0 <= TOLERANCE

    # kill -9 of rank 1 during stage 1, then the same command again
    home, out = tmp_path / "home3", tmp_path / "resumed.json"
    victim = _run(home, out, KILL_AT, 2)
    ready = Path(f"{out}.ready")
    deadline = time.time() + 360  # a hang guard, not a speed target
    while not ready.exists():
        assert victim.poll() is None, victim.communicate()[0].decode()[-4000:]
        if time.time() > deadline:
            _kill_all(victim)
            pytest.fail("rank 1 never reached the kill step")
        time.sleep(0.1)
    os.kill(json.loads(ready.read_text())["pid"], signal.SIGKILL)
    output, _ = victim.communicate(timeout=180)  # the launcher notices, ends rank 0 and fails
    assert victim.returncode != 0, output.decode()[-3000:]
    assert not out.exists()
    ckpts = [p.name for p in (home / "steps" / "train").glob("cdco-*.partial/ckpt-*")]
    assert ckpts == ["ckpt-00000004"], ckpts
    ready.unlink()
    _finish(_run(home, out, -1, 2))
    resumed = json.loads(out.read_text())
    assert resumed["train"]["resumed_from"] == 4
    diff1 = _max_diff(_weights(resumed["path"]), _weights(r2["path"]))
    print(f"stage 1, resumed vs uninterrupted (2 processes): max |dw| = {diff1:.2e}")
    assert diff1 <= TOLERANCE
