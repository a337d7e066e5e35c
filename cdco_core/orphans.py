"""Clean up after a ``cdco run`` that was killed: its temporary Prefect server outlives it.

Prefect's local mode starts its API server as a plain subprocess (``SubprocessASGIServer`` in
``prefect/server/api/server.py``: ``subprocess.Popen`` of uvicorn, stopped by an ``atexit`` hook) with no
parent-death signal and no setting for one, so a ``kill -9`` of the run leaves the server running, holding its
port and its SQLite database. The next run reaps it: :func:`mark_owner` puts the run's identity (pid and
process start time) in the environment that the server inherits, and :func:`stop_orphaned_prefect_servers`
stops the temporary servers of this ``PREFECT_HOME`` whose owner no longer exists.
"""

from __future__ import annotations

import os
from pathlib import Path

OWNER_ENV = "CDCO_OWNER"  # "<pid>:<start time>" of the cdco process that started the flow
SERVER_APP = "prefect.server.api.server:create_app"


def _start_time(pid: int) -> str | None:
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def mark_owner() -> str:
    """Record this process as the owner of the subprocesses it starts from now on (they inherit the variable)."""
    os.environ[OWNER_ENV] = f"{os.getpid()}:{_start_time(os.getpid())}"
    return os.environ[OWNER_ENV]


def _owner_alive(owner: str) -> bool:
    pid, _, started = owner.partition(":")
    return pid.isdigit() and _start_time(int(pid)) == started


def stop_orphaned_prefect_servers(prefect_home: str | os.PathLike, timeout: float = 10.0) -> list[int]:
    """Stop the temporary Prefect servers of ``prefect_home`` whose owning ``cdco`` process is gone.

    A server counts as orphaned when its inherited :data:`OWNER_ENV` names a process that no longer exists or,
    for a server started without one, when it was re-parented to init (pid 1). Servers of other Prefect homes,
    of other users, and of live runs are left alone.

    Returns:
        The pids stopped.
    """
    import psutil

    home = Path(prefect_home).resolve()
    stopped = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            if SERVER_APP not in " ".join(proc.info["cmdline"] or []):
                continue
            env = proc.info["environ"] or {}
            if env.get("PREFECT__SERVER_EPHEMERAL") != "1" or not env.get("PREFECT_HOME"):
                continue
            if Path(env["PREFECT_HOME"]).resolve() != home:
                continue
            owner = env.get(OWNER_ENV)
            if (_owner_alive(owner) if owner else proc.ppid() != 1):
                continue
            proc.terminate()
            try:
                proc.wait(timeout)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
            stopped.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return stopped
