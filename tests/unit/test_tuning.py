"""cdco tune's core: search spaces checked before any trial, a seeded study that resumes after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cdco_core.errors import ConfigError, InputError
from cdco_core.profile import load_profile as load_config
from cdco_core.tuning import (
    SEARCH_SPACES,
    Choice,
    Float,
    best_overrides,
    check_search_space,
    read_tuned,
    run_study,
    write_best,
)

SCRIPT = Path(__file__).with_name("tuning_script.py")
PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(SCRIPT.parent))
from tuning_script import cheap_score  # noqa: E402


@pytest.mark.parametrize("profile", ["smoke", "benchmark-cpu"])
def test_every_declared_search_space_fits_the_profiles(profile):
    cfg = load_config(profile)
    for method in SEARCH_SPACES:
        check_search_space(cfg, method)
    assert {"cdco", "lora_mtl", "frozen", "top_half_ft", "ca_mtl", "ego_plm"} <= set(SEARCH_SPACES)
    assert all("train.head_lr" in space for space in SEARCH_SPACES.values())  # every method tunes its heads' lr


@pytest.mark.parametrize(("space", "match"), [
    ({"train.stages.9.lr": Float(1e-4, 1e-3)}, r"the config has no key train.stages.9.lr"),
    ({"train.lr": Float(1e-4, 1e-3)}, r"the config has no key train.lr"),
    ({"method_settings.ca_mtl.bogus": Choice((1, 2))},
     r"bogus is not a setting of method_settings.ca_mtl; allowed: .*freeze_fraction"),
    ({"adapters.r": Choice((0, 8))}, r"adapters.r"),
    ({"method_settings.ca_mtl.freeze_fraction": Float(0.5, 2.0)}, r"method_settings.ca_mtl.freeze_fraction"),
])
def test_a_bad_search_space_fails_before_any_trial(tmp_path, space, match):
    calls = []
    with pytest.raises(ConfigError, match=match):
        run_study(load_config("smoke"), "ca_mtl", lambda o: calls.append(o) or 0.0, n_trials=1,
                  storage=f"sqlite:///{tmp_path}/s.db", space=space)
    assert calls == []
    assert not (tmp_path / "s.db").exists()  # not even a study was created
    with pytest.raises(InputError, match="no search space for method 'sideways'"):
        check_search_space(load_config("smoke"), "sideways")


def _child(storage: str, markers: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT)}
    return subprocess.Popen([sys.executable, str(SCRIPT), storage, str(markers), mode], env=env, cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_two_trials_killed_after_the_first_resume_to_the_same_best_trial(tmp_path):
    killed_db = f"sqlite:///{tmp_path}/killed.db"
    proc = _child(killed_db, tmp_path, "hang")
    deadline = time.monotonic() + 240  # a hang guard, not a speed target
    while not (tmp_path / "second-started").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the child never reached trial 2: {proc.communicate()[0].decode()[-2000:]}")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    study = optuna.load_study(study_name="smoke/lora_mtl", storage=killed_db)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]  # killed mid-trial 2

    resumed = _child(killed_db, tmp_path, "normal")
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, out.decode()[-2000:]
    study = optuna.load_study(study_name="smoke/lora_mtl", storage=killed_db)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]

    whole = run_study(load_config("smoke"), "lora_mtl", cheap_score, n_trials=2, seed=7,
                      storage=f"sqlite:///{tmp_path}/whole.db")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert [t.user_attrs["overrides"] for t in complete] == [t.user_attrs["overrides"] for t in whole.trials]
    assert best_overrides(study) == best_overrides(whole) and study.best_value == whole.best_value
    # the killed trial proposed what the resumed one then ran: the k-th complete trial depends on seed and k only
    assert study.trials[1].user_attrs["overrides"] == complete[1].user_attrs["overrides"]
    # running again with the study complete runs nothing; another seed proposes other settings
    again = run_study(load_config("smoke"), "lora_mtl", lambda o: pytest.fail("no trial should run"), n_trials=2,
                      seed=7, storage=killed_db)
    assert len(again.trials) == 3
    other = run_study(load_config("smoke"), "lora_mtl", cheap_score, n_trials=1, seed=8,
                      storage=f"sqlite:///{tmp_path}/other.db")
    assert other.trials[0].user_attrs["overrides"] != complete[0].user_attrs["overrides"]


def test_overrides_apply_and_the_best_settings_round_trip(tmp_path):
    study = run_study(load_config("smoke"), "lora_mtl", cheap_score, n_trials=2, seed=0,
                      storage=f"sqlite:///{tmp_path}/s.db")
    best = best_overrides(study)
    cfg = load_config("smoke", best)  # every override is a valid --set
    assert cfg.train.stages[0].lr == pytest.approx(study.best_params["train.stages.0.lr"])
    path = write_best(tmp_path / "tuned.yaml", {"lora_mtl": best})
    write_best(path, {"frozen": ["train.head_lr=0.01"]})  # merged, not replaced
    assert read_tuned(path, ["lora_mtl", "frozen"]) == {"frozen": ["train.head_lr=0.01"], "lora_mtl": best}
    with pytest.raises(InputError, match=r"unknown method\(s\) \['frozen'\]"):
        read_tuned(path, ["lora_mtl"])
