"""bench/run_times.py: a comparison's time per method, read back from published step folders."""

import json
import os
from pathlib import Path

import pytest

from bench.run_times import run_times
from cdco_core.io import sha256_file


def _publish(home: Path, step: str, name: str, outputs: dict, mtime: float) -> Path:
    """A published step folder as the cache writes it: outputs.json and a record listing its sha256."""
    d = home / "steps" / step / name
    d.mkdir(parents=True)
    (d / "outputs.json").write_text(json.dumps(outputs), encoding="utf-8")
    files = {"outputs.json": sha256_file(d / "outputs.json")}
    record = {"step": step, "label": name, "key": f"key-{name}", "files": files}
    (d / "record.json").write_text(json.dumps(record), encoding="utf-8")
    os.utime(d / "record.json", (mtime, mtime))
    return d


def test_run_times_means_over_finished_runs(tmp_path: Path) -> None:
    t0 = 1_000_000.0
    for seed, shift in ((0, 0.0), (1, 1000.0)):  # two finished runs: stages of 60 s and 40 s, evaluation 30 s
        _publish(tmp_path, "train", f"m-seed{seed}-0-a", {"method": "m", "seed": seed, "index": 0,
                                                          "train": {"seconds": 60.0}}, t0 + shift + 60)
        _publish(tmp_path, "train", f"m-seed{seed}-1-b", {"method": "m", "seed": seed, "index": 1,
                                                          "train": {"seconds": 40.0}}, t0 + shift + 110)
        _publish(tmp_path, "evaluate", f"m-seed{seed}-c", {"method": "m", "seed": seed}, t0 + shift + 140)
    # a run still training (no evaluation yet) and a partial folder: both left out
    _publish(tmp_path, "train", "m-seed2-0-d", {"method": "m", "seed": 2, "index": 0,
                                               "train": {"seconds": 999.0}}, t0 + 5000)
    (tmp_path / "steps" / "train" / "m-seed2-1-e.partial").mkdir()
    times = run_times(tmp_path)
    assert list(times) == ["m"]
    assert times["m"]["runs"] == 2
    assert times["m"]["train_s"] == pytest.approx(100.0)
    assert times["m"]["evaluate_s"] == pytest.approx(30.0)
    assert times["m"]["wall_s"] == pytest.approx(140.0)  # first stage's start (t0) to the evaluate record


def test_run_times_leave_out_a_record_that_does_not_verify(tmp_path: Path) -> None:
    _publish(tmp_path, "train", "m-seed0-0-a", {"method": "m", "seed": 0, "index": 0, "train": {"seconds": 60.0}}, 60.0)
    done = _publish(tmp_path, "evaluate", "m-seed0-b", {"method": "m", "seed": 0}, 90.0)
    assert run_times(tmp_path)["m"]["runs"] == 1
    (done / "outputs.json").write_text(json.dumps({"method": "m", "seed": 0, "edited": True}), encoding="utf-8")
    assert run_times(tmp_path) == {}  # the edited evaluation no longer matches its record: the run is unfinished
