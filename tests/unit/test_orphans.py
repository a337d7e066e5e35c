"""A killed `cdco run` leaves its temporary Prefect server running; the next run stops it (and only it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from cdco_core.orphans import SERVER_APP, stop_orphaned_prefect_servers
from tests.helpers import wait_for_file

ROOT = Path(__file__).resolve().parents[2]

VICTIM = """
import sys, time
from pathlib import Path
from prefect import flow
from cdco_core.orphans import mark_owner

mark_owner()

@flow
def hang():
    Path(sys.argv[1]).write_text("x")
    time.sleep(600)

hang()
"""


def _servers(home: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            if SERVER_APP in " ".join(p.info["cmdline"] or []) and \
                    (p.info["environ"] or {}).get("PREFECT_HOME") == str(home):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_server_of_a_killed_run_is_stopped_by_the_next(tmp_path):
    home = tmp_path / "prefect"
    ready = tmp_path / "ready"
    env = {**os.environ, "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    env.pop("PREFECT_API_URL", None)
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, str(ready)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_file(ready, victim, 400, "the flow never started")
        [server] = _servers(home)
        assert stop_orphaned_prefect_servers(home) == []  # its run is alive: left alone
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        time.sleep(1)
        assert server.is_running()  # the attack: the server outlives the killed run
        assert stop_orphaned_prefect_servers(tmp_path / "another-home") == []  # not that home's server
        assert stop_orphaned_prefect_servers(home) == [server.pid]
        assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    finally:
        if victim.poll() is None:
            victim.kill()
        for p in _servers(home):
            p.kill()
