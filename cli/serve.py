"""``make serve`` / ``make stop``: the local Prefect server, MLflow server and the deployment's serve process.

    python -m cli.serve start [--profile demo] [--set key=value ...]
    python -m cli.serve stop
    python -m cli.serve status

Everything binds to 127.0.0.1 and keeps its state under ``CDCO_HOME``:

    prefect/          PREFECT_HOME: the Prefect server's SQLite database
    mlflow.db         MLflow's SQLite store (the same one ``cdco run`` uses without a server)
    mlartifacts/      MLflow artifacts
    serve/*.pid       one JSON file per process: pid, command line, port; *.log their output

Each process starts in its own session (process group), so ``stop`` ends it with its children (uvicorn
workers, flow-run subprocesses) and nothing else: it checks that the pid still runs the recorded command
line before signalling. The serve process stops first, and leaves the deployment unpaused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from cdco_core.errors import InputError
from cdco_core.paths import PROJECT_ROOT, cdco_home

ORDER = ("prefect", "mlflow", "deployment")  # the local stack's start order; stop runs the records backwards
HOST = "127.0.0.1"


class ServeError(InputError):
    """A port is taken, a service is already running, or a service did not come up (names the log file)."""


def ports() -> dict[str, int]:
    """``CDCO_PREFECT_PORT`` (4200) and ``CDCO_MLFLOW_PORT`` (5000)."""
    out = {}
    for name, var, default in (("prefect", "CDCO_PREFECT_PORT", 4200), ("mlflow", "CDCO_MLFLOW_PORT", 5000)):
        raw = os.environ.get(var, str(default))
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ServeError(f"{var}={raw!r} is not a port number (1-65535)")
        out[name] = int(raw)
    return out


def state_dir(home: Path | None = None) -> Path:
    return (home or cdco_home()) / "serve"


def urls(prefect_port: int, mlflow_port: int) -> dict[str, str]:
    return {"prefect_api": f"http://{HOST}:{prefect_port}/api", "mlflow": f"http://{HOST}:{mlflow_port}"}


def commands(home: Path, prefect_port: int, mlflow_port: int, profile: str,
             overrides: list[str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """{service: (argv, extra environment)} for the three processes."""
    u = urls(prefect_port, mlflow_port)
    py = sys.executable
    prefect_env = {"PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    sets = [a for o in overrides for a in ("--set", o)]
    return {
        "prefect": ([py, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(prefect_port)],
                    prefect_env),
        "mlflow": ([py, "-m", "mlflow", "server", "--host", HOST, "--port", str(mlflow_port),
                    "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                    "--default-artifact-root", (home / "mlartifacts").as_uri(), "--no-serve-artifacts",
                    "--workers", "1"],
                   # MLflow's background job runner (GenAI features) would start 7 consumer processes
                   {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}),
        "deployment": ([py, "-m", "flows.deployments", "serve", "--profile", profile, *sets],
                       {**prefect_env, "PREFECT_API_URL": u["prefect_api"], "MLFLOW_TRACKING_URI": u["mlflow"],
                        "CDCO_HOME": str(home)}),
    }


def port_free(port: int) -> bool:
    """Whether a server can listen on ``port`` now. SO_REUSEADDR, as the servers themselves bind: connections of
    a server just stopped (TIME_WAIT, about a minute) do not count, a socket listening there does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def running(record: dict[str, Any]) -> bool:
    """True when the recorded pid is alive and still runs the recorded command (not a reused pid)."""
    return _cmdline(record["pid"]) == record["argv"]


def read_records(home: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every pid file under the state folder (either stack's services), in start order."""
    out = {}
    for path in sorted(state_dir(home).glob("*.pid")):
        try:
            out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            path.unlink()  # a torn pid file names no process we can trust
    return dict(sorted(out.items(), key=lambda kv: kv[1].get("started", 0.0)))


def launch(name: str, argv: list[str], env_extra: dict[str, str], home: Path, port: int | None,
           user: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start one service in its own session (as ``user`` if given); write its pid file (JSON) atomically.

    ``extra`` goes into the record: ``stop_signal`` (default SIGTERM), ``remove_after_stop`` (a folder).
    """
    from cdco_core.io import write_json

    sdir = state_dir(home)
    sdir.mkdir(parents=True, exist_ok=True)
    log = open(sdir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child, closed below
    env = {**os.environ, **env_extra, "PYTHONUNBUFFERED": "1"}
    as_user = {"user": user, "group": user, "extra_groups": []} if user else {}
    proc = subprocess.Popen(argv, cwd="/" if user else PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, **as_user)
    log.close()
    _await_exec(proc, argv)
    record = {"name": name, "pid": proc.pid, "argv": argv, "port": port, "log": str(sdir / f"{name}.log"),
              "started": time.time(), **(extra or {})}
    write_json(record, sdir / f"{name}.pid")
    return record


def _await_exec(proc: subprocess.Popen, argv: list[str], timeout: float = 15.0) -> None:
    """Wait until the child has exec'd ``argv``: between fork and exec its /proc cmdline is still ours, and
    :func:`running` would call it dead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and _cmdline(proc.pid) != argv:
        time.sleep(0.05)


def wait_http(url: str, record: dict[str, Any], timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail naming the log if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(record):
            raise ServeError(f"{record['name']} exited while starting; see {record['log']}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback URL we built
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise ServeError(f"{record['name']} did not answer {url} within {timeout:.0f} s; see {record['log']}")


def wait_deployment(api_url: str, record: dict[str, Any], timeout: float, name: str = "cdco/full-pipeline") -> str:
    """Wait until the serve process has registered the deployment; returns its id."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        while time.monotonic() < deadline:
            if not running(record):
                raise ServeError(f"the serve process exited; see {record['log']}")
            try:
                with get_client(sync_client=True) as client:
                    return str(client.read_deployment_by_name(name).id)
            except Exception:  # not registered yet
                time.sleep(1.0)
    raise ServeError(f"deployment {name} was not registered within {timeout:.0f} s; see {record['log']}")


def start(profile: str = "demo", overrides: list[str] | None = None, home: Path | None = None,
          prefect_port: int | None = None, mlflow_port: int | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """Start the three services (each waited for) and return their records and URLs.

    Raises:
        ServeError: already running, a port in use, or a service that did not come up (names its log).
    """
    from cdco_core.profile import load_profile as load_config

    load_config(profile, list(overrides or []))  # a bad profile fails before anything starts
    home = (home or cdco_home()).resolve()
    p = ports()
    prefect_port, mlflow_port = prefect_port or p["prefect"], mlflow_port or p["mlflow"]
    alive = [n for n, r in read_records(home).items() if running(r)]
    if alive:
        raise ServeError(f"already running under {state_dir(home)}: {', '.join(alive)}; `make stop` first")
    for var, port in (("CDCO_PREFECT_PORT", prefect_port), ("CDCO_MLFLOW_PORT", mlflow_port)):
        if not port_free(port):
            raise ServeError(f"port {HOST}:{port} is in use; free it or set {var} to another port")
    cmds = commands(home, prefect_port, mlflow_port, profile, list(overrides or []))
    u = urls(prefect_port, mlflow_port)
    records: dict[str, Any] = {}
    try:
        records["prefect"] = launch("prefect", *cmds["prefect"], home, prefect_port)
        records["mlflow"] = launch("mlflow", *cmds["mlflow"], home, mlflow_port)
        wait_http(f"{u['prefect_api']}/health", records["prefect"], timeout)
        wait_http(f"{u['mlflow']}/health", records["mlflow"], timeout)
        records["deployment"] = launch("deployment", *cmds["deployment"], home, None)
        deployment_id = wait_deployment(u["prefect_api"], records["deployment"], timeout)
    except BaseException:
        stop(home)
        raise
    return {"urls": u, "deployment_id": deployment_id, "pids": {n: r["pid"] for n, r in records.items()},
            "state_dir": str(state_dir(home))}


def stop(home: Path | None = None, timeout: float = 20.0) -> dict[str, str]:
    """Stop exactly the processes named in the pid files (and their process groups), in reverse start order:
    the serve process or workers first, the database last."""
    home = (home or cdco_home()).resolve()
    result = {}
    for name, rec in reversed(read_records(home).items()):
        result[name] = _terminate(rec, timeout) if running(rec) else "not running"
        if rec.get("remove_after_stop"):
            shutil.rmtree(rec["remove_after_stop"], ignore_errors=True)  # a temporary cluster folder
        (state_dir(home) / f"{name}.pid").unlink(missing_ok=True)
    return result


def _terminate(rec: dict[str, Any], timeout: float) -> str:
    """``rec['stop_signal']`` (SIGTERM) to the process group led by ``rec['pid']``; SIGKILL if it outlives
    ``timeout``."""
    pid = rec["pid"]
    # children that left the group (a Prefect process worker starts each flow run in a session of its own)
    escaped = [(c, t) for c, t in _descendants(pid) if _pgid(c) != pid]
    try:
        # start_new_session: the group id is the leader's pid
        os.killpg(pid, getattr(signal, rec.get("stop_signal", "SIGTERM")))
    except ProcessLookupError:
        return "not running"
    outcome = "killed"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(rec):
            outcome = "stopped"
            break
        _reap(pid)
        time.sleep(0.2)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(pid)
    _end_escaped(escaped)
    return outcome


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name: [state, ppid, pgrp, ...]; None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def _pgid(pid: int) -> int | None:
    st = _stat(pid)
    return int(st[2]) if st else None


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below ``root``; the start time tells a reused pid apart later."""
    parent: dict[int, int] = {}
    started: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))):
            parent[int(d.name)], started[int(d.name)] = int(st[1]), st[19]
    out, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += [(c, started[c]) for c in kids]
        frontier += kids
    return out


def _end_escaped(procs: list[tuple[int, str]], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, the recorded descendants that still run (same pid and start time)."""
    def alive() -> list[int]:
        return [p for p, t in procs if (st := _stat(p)) and st[19] == t and st[0] != "Z"]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in alive():
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while alive() and time.monotonic() < deadline:
            time.sleep(0.2)


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (started in this Python process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status(home: Path | None = None) -> dict[str, Any]:
    return {n: {"pid": r["pid"], "port": r.get("port"), "running": running(r), "log": r.get("log")}
            for n, r in read_records(home).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.serve", description="local Prefect + MLflow")
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--profile", default=os.environ.get("CDCO_PROFILE", "demo"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.sub=value")
    parser.add_argument("--stack", choices=["local", "team"], default=os.environ.get("CDCO_STACK", "local"),
                        help="local: SQLite + one serve process; team: PostgreSQL, work pool, workers, Dask")
    parser.add_argument("--workers", type=int, default=2, help="team: prefect worker processes")
    parser.add_argument("--dask-workers", type=int, default=2, help="team: dask worker processes")
    parser.add_argument("--db-url", default=None,
                        help="team: an existing server, postgresql://user:pw@host:port (default: start one)")
    args = parser.parse_args(argv)
    try:
        if args.command == "start" and args.stack == "team":
            from cli.team import start_team

            out = start_team(args.profile, args.overrides, workers=args.workers, dask_workers=args.dask_workers,
                             db_url=args.db_url)
            print(json.dumps(out, indent=2))
            print(f"\nexport PREFECT_API_URL={out['urls']['prefect_api']} MLFLOW_TRACKING_URI={out['urls']['mlflow']}"
                  f"\nprefect deployment run cdco/full-pipeline -p profile={args.profile}")
        elif args.command == "start":
            out = start(args.profile, args.overrides)
            print(json.dumps(out, indent=2))
            print(f"\nexport PREFECT_API_URL={out['urls']['prefect_api']}\n"
                  f"prefect deployment run cdco/full-pipeline      # MLflow UI: {out['urls']['mlflow']}")
        elif args.command == "stop":
            print(json.dumps(stop(), indent=2))
        else:
            print(json.dumps(status(), indent=2))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
