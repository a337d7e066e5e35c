"""The MLflow SQLite store is created once under a file lock (two fresh runs raced on the schema), a half-built
store is one clear error, and runs of a process that died are marked FAILED instead of RUNNING forever."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdco_core.errors import InputError
from tasks import tracking
from tests.helpers import wait_for_file

ROOT = Path(__file__).resolve().parents[2]

RACER = """
import os, sys, time
from pathlib import Path
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.01)
from tasks import tracking
import mlflow
exp = tracking.ensure_experiment("race")
with tracking.pipeline_run("race", f"p{os.getpid()}", {}) as run_id:
    mlflow.log_metric("m", 1.0)
print("ok", exp)
"""


def _env(home: Path) -> dict:
    return {**os.environ, "CDCO_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
            "PYTHONPATH": str(ROOT)}


def test_concurrent_first_runs_on_a_fresh_home_do_not_race_on_the_schema(tmp_path):
    home = tmp_path / "home"
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(go)], env=_env(home), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    time.sleep(3)  # let each interpreter start and wait at the barrier: they then open the store together
    go.touch()
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert len({o.split()[-1] for o in outs}) == 1  # one experiment, found or created by all three
    assert (home / "mlflow.db.lock").exists()


def _webhooks_revisions() -> tuple[str, str]:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    for rev in script.walk_revisions():
        if "webhooks" in (rev.doc or "").lower() and rev.down_revision:
            return rev.revision, rev.down_revision
    raise AssertionError("no migration creating the webhooks table")


def test_half_built_store_is_one_clear_error(tmp_path):
    """What a full disk in the middle of MLflow's migrations leaves: the schema version still says the migration
    before 'webhooks', the webhooks table exists, webhook_events does not. MLflow then fails on every start with
    'table webhooks already exists'."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.prepare_store(uri)
    _, before = _webhooks_revisions()
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("drop table webhook_events")
        db.execute("update alembic_version set version_num = ?", (before,))
    with pytest.raises(InputError, match=r"MLflow store .*mlflow\.db is half-built") as err:
        tracking.prepare_store(uri)
    assert "\n" not in str(err.value) and "mv " in str(err.value)


def test_interrupted_creation_leaves_no_half_built_store(tmp_path, monkeypatch):
    """The schema is built in a temporary file and renamed into place: a failure half-way (ENOSPC) leaves no
    store at all, and the next run builds it."""
    import mlflow.store.db.utils as db_utils

    real = db_utils._upgrade_db

    def full_disk(engine):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(db_utils, "_upgrade_db", full_disk)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(InputError, match="could not be created: no space left on device"):
        tracking.prepare_store(uri)
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.glob(".tmp-*"))
    monkeypatch.setattr(db_utils, "_upgrade_db", real)
    tracking.prepare_store(uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    assert mlflow.MlflowClient().search_experiments()  # the Default experiment: a complete store


OWNER = """
import os, sys, time
from pathlib import Path
from tasks import tracking
with tracking.pipeline_run("own", "victim", {}) as run_id:
    with tracking.step_run(run_id, "step"):
        Path(sys.argv[1]).write_text(run_id)
        time.sleep(600)
"""


def test_runs_of_a_killed_process_are_marked_failed(tmp_path, cdco_home):
    import mlflow

    ready = tmp_path / "ready"
    victim = subprocess.Popen([sys.executable, "-c", OWNER, str(ready)], env=_env(cdco_home), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for_file(ready, victim, 300, "the child never started its run")
    dead_parent = ready.read_text()
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    with tracking.pipeline_run("own", "alive", {}) as alive:  # ours: its owner (this process) is alive
        client = mlflow.MlflowClient()
        exp = client.get_experiment_by_name("own")
        runs = client.search_runs([exp.experiment_id])
        assert {r.info.status for r in runs} == {"RUNNING"} and len(runs) == 3
        tags = client.get_run(dead_parent).data.tags
        assert tags["cdco.owner.pid"] == str(victim.pid) and tags["cdco.owner.host"] and tags["cdco.owner.start"]
        marked = tracking.fail_orphaned_runs()
        assert sorted(marked) == sorted(r.info.run_id for r in runs if r.info.run_id != alive)
        assert client.get_run(dead_parent).info.status == "FAILED"
        assert client.get_run(alive).info.status == "RUNNING"
        assert client.get_run(dead_parent).data.tags["cdco.failed_reason"].startswith("owner process")
    assert tracking.fail_orphaned_runs() == []


@pytest.mark.parametrize("other_run_tagged", [True, False])
def test_an_untagged_experiment_tagged_by_two_runs_at_once(cdco_home, monkeypatch, other_run_tagged):
    """An experiment created before it carried the kind tag: two runs tag it at once, the store looks the tag up
    and inserts it, and the second insert fails on the tag's key. That run finds the tag set and goes on; a failure
    that left no tag is raised."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking.tracking_uri())
    tracking.prepare_store(tracking.tracking_uri())
    exp_id = mlflow.MlflowClient().create_experiment("old")  # no kind tag
    real = mlflow.MlflowClient.set_experiment_tag

    def raced(self, experiment_id, key, value):
        if other_run_tagged:  # the other run's insert lands first
            real(self, experiment_id, key, value)
        raise MlflowException("duplicate key value violates unique constraint \"experiment_tag_pk\"")

    monkeypatch.setattr(mlflow.MlflowClient, "set_experiment_tag", raced)
    if other_run_tagged:
        assert tracking.ensure_experiment("old") == exp_id
    else:
        with pytest.raises(MlflowException, match="experiment_tag_pk"):
            tracking.ensure_experiment("old")
