"""``make serve STACK=team``: the team stack of ``docker-compose.yml``, run natively on 127.0.0.1.

    python -m cli.serve start --stack team [--workers 2] [--dask-workers 2] [--db-url URL]
    python -m cli.serve stop

One PostgreSQL server holds Prefect's database and MLflow's backend store; MLflow serves its artifacts (clients
upload through the server, never into its folder); a Dask scheduler with ``--dask-workers`` worker processes runs
the flows' fan-out; ``python -m flows.deployments register`` puts the deployments into the process work pool
``cdco-process`` and ``--workers`` ``prefect worker start`` processes pull their runs. Every process is started in
its own session with a pid file under ``CDCO_HOME/serve`` (see :mod:`cli.serve`); ``stop`` ends them in
reverse order, PostgreSQL last (fast shutdown, SIGINT).

PostgreSQL: without ``--db-url`` (or ``CDCO_DB_URL``) a cluster is created with ``initdb`` and started with the
``postgres`` binary of Debian's ``postgresql`` package (``scripts/system-deps.sh`` installs it). PostgreSQL
refuses to run as root, so as root the cluster belongs to the ``postgres`` user and lives in a temporary folder
that ``stop`` removes; as another user it lives in ``CDCO_HOME/team/pgdata`` and survives a restart. With
``--db-url postgresql://user:password@host:port`` an existing server is used: it is checked first, and an
address that does not answer or refused credentials stop the start with one message (exit 2).

The commands and environment come from :func:`service_commands`, the same table ``docker-compose.yml`` spells out
(``tests/unit/test_compose.py`` checks that they agree).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from cdco_core.paths import PROJECT_ROOT, cdco_home

POOL = "cdco-process"
DB_USER = "cdco"
HEARTBEAT_S = "30"  # flow-run heartbeat period (Prefect's minimum): a dead worker's run is Crashed after ~90 s
DATABASES = ("prefect", "mlflow", "optuna")  # one per service (optuna: cdco tune's studies), as the compose init
DEFAULT_PORTS = {"postgres": 5432, "prefect": 4200, "mlflow": 5000, "dask": 8786}
PORT_VARS = {"postgres": "CDCO_PG_PORT", "prefect": "CDCO_PREFECT_PORT", "mlflow": "CDCO_MLFLOW_PORT",
             "dask": "CDCO_DASK_PORT"}


def _serve() -> Any:
    from cli import serve  # the process plumbing (pid files, launch, stop) is shared with the local stack

    return serve


def db_password() -> str:
    """``CDCO_DB_PASSWORD``, default ``cdco`` (the compose file's default too)."""
    return os.environ.get("CDCO_DB_PASSWORD", "cdco")


def server_url(host: str, port: int, user: str = DB_USER, password: str | None = None) -> str:
    """``postgresql://user:password@host:port`` (no database: see :func:`database_url`)."""
    pw = db_password() if password is None else password
    return f"postgresql://{quote(user, safe='')}:{quote(pw, safe='')}@{host}:{port}"


def database_url(server: str, database: str, driver: str = "") -> str:
    """The URL of ``database`` on ``server``; ``driver="asyncpg"`` gives SQLAlchemy's ``postgresql+asyncpg``."""
    scheme = "postgresql+asyncpg" if driver == "asyncpg" else "postgresql"
    rest = server.split("://", 1)[1].rstrip("/")
    return f"{scheme}://{rest}/{database}"


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def service_commands(*, host: str, ports: dict[str, int], db_server: str, artifacts: str, api_host: str,
                     profile: str, pool: str = POOL, home: str, mlflow_allowed_hosts: str,
                     dask_address: str, ui_host: str = "127.0.0.1") -> dict[str, tuple[list[str], dict[str, str]]]:
    """{service: (argv, environment)} of the team stack, with console-script names (``prefect``, ``mlflow``,
    ``dask``, ``python``): the same table for the native launcher and ``docker-compose.yml``.

    Args:
        host: the address servers bind to.
        ports: container-side ports {"prefect", "mlflow", "dask"}.
        db_server: ``postgresql://user:password@host:port`` of the PostgreSQL server.
        artifacts: MLflow's served artifact root (a folder the MLflow server owns).
        api_host: how the workers reach the servers' host (``127.0.0.1`` natively, service names in compose:
            then ``prefect-server``, ``mlflow`` and ``dask-scheduler`` are used per service).
        profile: the config the deployments are registered with.
        home: ``CDCO_HOME`` of the workers (caches, checkpoints).
        mlflow_allowed_hosts: MLflow's ``--allowed-hosts`` (DNS-rebinding guard).
        dask_address: the scheduler's address as the workers see it.
        ui_host: the host a browser uses for Prefect's API (``PREFECT_UI_API_URL``).
    """
    def at(service: str) -> str:
        return api_host if api_host == "127.0.0.1" else service

    prefect_api = f"http://{at('prefect-server')}:{ports['prefect']}/api"
    mlflow_uri = f"http://{at('mlflow')}:{ports['mlflow']}"
    # CDCO_OPTUNA_STORAGE: `cdco tune` run on a worker (or by anyone given this URL) fills the team's shared studies
    run_env = {"PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": mlflow_uri, "CDCO_HOME": home,
               "CDCO_OPTUNA_STORAGE": database_url(db_server, "optuna")}
    return {
        "prefect-server": (["prefect", "server", "start", "--host", host, "--port", str(ports["prefect"])],
                           {"PREFECT_API_DATABASE_CONNECTION_URL": database_url(db_server, "prefect", "asyncpg"),
                            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                            "PREFECT_UI_API_URL": f"http://{ui_host}:{ports['prefect']}/api"}),
        "mlflow": (["mlflow", "server", "--host", host, "--port", str(ports["mlflow"]),
                    "--backend-store-uri", database_url(db_server, "mlflow"),
                    "--artifacts-destination", artifacts, "--serve-artifacts", "--workers", "1",
                    "--allowed-hosts", mlflow_allowed_hosts],
                   # MLflow's background job runner (GenAI features) would start 7 consumer processes
                   {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}),
        "dask-scheduler": (["dask", "scheduler", "--host", host, "--port", str(ports["dask"]), "--no-dashboard"],
                           {}),
        # one single-threaded process per worker: the steps use every core through torch already
        "dask-worker": (["dask", "worker", dask_address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
                        dict(run_env)),
        # register also creates the automation that marks runs without heartbeats Crashed (3 missed beats)
        "register": (["python", "-m", "flows.deployments", "register", "--profile", profile, "--work-pool", pool],
                     {"PREFECT_API_URL": prefect_api, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": HEARTBEAT_S}),
        # --limit 1: one flow run at a time per worker (a run uses every core it gets); more runs, more workers
        "worker": (["prefect", "worker", "start", "--pool", pool, "--type", "process", "--limit", "1"],
                   {**run_env, "CDCO_DASK_ADDRESS": dask_address, "CDCO_PROFILE": profile,
                    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": HEARTBEAT_S}),
    }


def native_argv(argv: list[str]) -> list[str]:
    """Console-script names -> this interpreter's modules, so /proc's command line is exactly ``argv``
    (a console script's command line would read ``python /path/bin/prefect ...``)."""
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return [sys.executable, "-m", argv[0], *argv[1:]]


# ---------------------------------------------------------------------------------------------------- postgres


def pg_bindir() -> Path:
    """The folder with ``initdb`` and ``postgres`` (Debian keeps them in /usr/lib/postgresql/<major>/bin).

    Raises:
        ServeError: PostgreSQL is not installed.
    """
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    which = shutil.which("postgres") or shutil.which("initdb")
    if which:
        return Path(which).resolve().parent
    raise _serve().ServeError("PostgreSQL is not installed (no initdb/postgres): run `sudo scripts/system-deps.sh` "
                              "(Debian's postgresql package) or pass --db-url postgresql://user:pw@host:port")


def _cluster_owner() -> str | None:
    """``postgres`` when we are root (PostgreSQL refuses to run as root), else None (ourselves)."""
    return "postgres" if os.geteuid() == 0 else None


def init_cluster(data: Path, password: str, owner: str | None, timeout: float = 300.0) -> None:
    """``initdb`` a new cluster in ``data`` with superuser ``cdco`` and password authentication over TCP.

    Raises:
        ServeError: initdb failed (its output is in the message).
    """
    bindir = pg_bindir()
    data.mkdir(parents=True, exist_ok=True)
    pwfile = data.parent / "pwfile"
    pwfile.write_text(password + "\n", encoding="utf-8")
    pwfile.chmod(0o600)
    if owner:
        info = pwd.getpwnam(owner)
        for p in (data.parent, data, pwfile):
            os.chown(p, info.pw_uid, info.pw_gid)
    argv = [str(bindir / "initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}", "-E", "UTF8",
            "--locale=C", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, user=owner,
                              group=owner, extra_groups=[] if owner else None, cwd=data.parent)
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise _serve().ServeError(f"initdb {data} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")


def postgres_argv(data: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """The server on TCP only (no Unix socket: nothing to clean up, no path permissions to get right)."""
    return [str(pg_bindir() / "postgres"), "-D", str(data), "-p", str(port), "-c", f"listen_addresses={host}",
            "-c", "unix_socket_directories=", "-c", "max_connections=200"]


def _connect(url: str, database: str = "postgres", timeout: int = 5) -> Any:
    import psycopg2

    return psycopg2.connect(database_url(url, database), connect_timeout=timeout)


def check_database(url: str, timeout: int = 5) -> None:
    """Connect once to ``url``'s server; one clear message when it does not answer or refuses the login.

    Raises:
        ServeError: unreachable (names host:port) or bad credentials (names the user); the password is never shown.
    """
    import psycopg2

    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 5432}"
    try:
        _connect(url, timeout=timeout).close()
    except psycopg2.OperationalError as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "authentication failed" in text or "does not exist" in text and "role" in text:
            raise _serve().ServeError(f"the PostgreSQL server at {where} refused user {parts.username!r}: wrong "
                                      f"user or password in {redact(url)} (CDCO_DB_PASSWORD?)") from None
        raise _serve().ServeError(f"the PostgreSQL server at {where} does not answer ({text}); "
                                  f"is it running? URL: {redact(url)}") from None


def wait_postgres(url: str, record: dict[str, Any], timeout: float) -> None:
    """Poll until the server accepts our login; fail naming the log if it dies or time runs out."""
    import psycopg2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _serve().running(record):
            raise _serve().ServeError(f"postgres exited while starting; see {record['log']}")
        try:
            _connect(url, timeout=3).close()
            return
        except psycopg2.OperationalError:
            time.sleep(0.5)
    raise _serve().ServeError(f"postgres did not accept connections within {timeout:.0f} s; see {record['log']}")


def ensure_databases(url: str) -> list[str]:
    """Create the missing databases of :data:`DATABASES`; returns those created."""
    conn = _connect(url)
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    created = []
    try:
        with conn.cursor() as cur:
            for name in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')  # name from our constant, not user input
                    created.append(name)
    finally:
        conn.close()
    return created


# ---------------------------------------------------------------------------------------------------- the stack


def team_ports(overrides: dict[str, int | None] | None = None) -> dict[str, int]:
    """Ports from ``CDCO_{PG,PREFECT,MLFLOW,DASK}_PORT`` (5432, 4200, 5000, 8786), then ``overrides``."""
    out = {}
    for name, default in DEFAULT_PORTS.items():
        raw = os.environ.get(PORT_VARS[name], str(default))
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise _serve().ServeError(f"{PORT_VARS[name]}={raw!r} is not a port number (1-65535)")
        out[name] = int(raw)
    out.update({k: v for k, v in (overrides or {}).items() if v})
    return out


def wait_port(port: int, record: dict[str, Any], timeout: float, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _serve().running(record):
            raise _serve().ServeError(f"{record['name']} exited while starting; see {record['log']}")
        with socket.socket() as s:
            s.settimeout(2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.5)
    raise _serve().ServeError(f"{record['name']} did not listen on {host}:{port} within {timeout:.0f} s; "
                              f"see {record['log']}")


def wait_dask_workers(address: str, n: int, records: list[dict[str, Any]], timeout: float) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    with Client(address, timeout=timeout) as client:
        while time.monotonic() < deadline:
            dead = [r for r in records if not _serve().running(r)]
            if dead:
                raise _serve().ServeError(f"{dead[0]['name']} exited while starting; see {dead[0]['log']}")
            if len(client.scheduler_info(n_workers=-1)["workers"]) >= n:
                return
            time.sleep(0.5)
    raise _serve().ServeError(f"{n} Dask workers did not join {address} within {timeout:.0f} s")


def wait_prefect_workers(api_url: str, pool: str, names: list[str], records: list[dict[str, Any]],
                         timeout: float) -> None:
    """Wait until every worker in ``names`` has sent a heartbeat to the work pool."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        while time.monotonic() < deadline:
            dead = [r for r in records if not _serve().running(r)]
            if dead:
                raise _serve().ServeError(f"{dead[0]['name']} exited while starting; see {dead[0]['log']}")
            try:
                with get_client(sync_client=True) as client:
                    seen = {w.name for w in client.read_workers_for_work_pool(pool)}
                if set(names) <= seen:
                    return
            except Exception:  # the pool may not be visible yet
                pass
            time.sleep(1.0)
    raise _serve().ServeError(f"workers {names} did not register with work pool {pool!r} within {timeout:.0f} s; "
                              f"see {records[0]['log']}")


def start_team(profile: str = "smoke", overrides: list[str] | None = None, home: Path | None = None,
               ports: dict[str, int | None] | None = None, workers: int = 2, dask_workers: int = 2,
               db_url: str | None = None, timeout: float = 300.0, data_home: Path | None = None) -> dict[str, Any]:
    """Start the team stack (each service waited for) and return its URLs, pids and the database URL (redacted).

    ``home`` holds the stack's state (pid files, logs, MLflow artifacts, the cluster when not root);
    ``data_home`` is the ``CDCO_HOME`` of the workers (caches, checkpoints), ``home`` unless given.

    Raises:
        ServeError: already running, a port in use, an unreachable or refusing database, a missing PostgreSQL,
            or a service that did not come up (names its log).
    """
    from cdco_core.profile import load_profile as load_config

    serve = _serve()
    load_config(profile, list(overrides or []))  # a bad profile fails before anything starts
    home = (home or cdco_home()).resolve()
    p = team_ports(ports)
    db_url = db_url or os.environ.get("CDCO_DB_URL") or None
    if db_url and not db_url.startswith(("postgresql://", "postgres://")):
        raise serve.ServeError(f"--db-url {redact(db_url)!r}: expected postgresql://user:password@host:port")
    alive = [n for n, r in serve.read_records(home).items() if serve.running(r)]
    if alive:
        raise serve.ServeError(f"already running under {serve.state_dir(home)}: {', '.join(alive)}; `make stop` first")
    if db_url:
        check_database(db_url)  # before anything starts
    for name in ("prefect", "mlflow", "dask") + (() if db_url else ("postgres",)):
        if not serve.port_free(p[name]):
            raise serve.ServeError(f"port {serve.HOST}:{p[name]} is in use; free it or set {PORT_VARS[name]}")
    records: dict[str, Any] = {}
    try:
        if not db_url:
            db_url = server_url(serve.HOST, p["postgres"])
            records["postgres"] = _start_postgres(home, p["postgres"], timeout)
            wait_postgres(db_url, records["postgres"], timeout)
        ensure_databases(db_url)
        dask_address = f"tcp://{serve.HOST}:{p['dask']}"
        cmds = native_commands(home, p, db_url, profile, data_home)
        urls = serve.urls(p["prefect"], p["mlflow"])
        prefect_home = {"PREFECT_HOME": str(home / "prefect")}

        def go(name: str, service: str, port: int | None, extra: dict[str, str] | None = None) -> dict[str, Any]:
            argv, env = cmds[service]
            records[name] = serve.launch(name, native_argv(argv), {**env, **prefect_home, **(extra or {})},
                                         home, port)
            return records[name]

        go("prefect-server", "prefect-server", p["prefect"])
        go("mlflow", "mlflow", p["mlflow"])
        go("dask-scheduler", "dask-scheduler", p["dask"])
        serve.wait_http(f"{urls['prefect_api']}/health", records["prefect-server"], timeout)
        serve.wait_http(f"{urls['mlflow']}/health", records["mlflow"], timeout)
        wait_port(p["dask"], records["dask-scheduler"], timeout)
        dask_names = [f"dask-worker-{i + 1}" for i in range(dask_workers)]
        for name in dask_names:
            argv, env = cmds["dask-worker"]
            records[name] = serve.launch(name, native_argv([*argv, "--name", name]), env, home, None)
        if dask_workers:
            wait_dask_workers(dask_address, dask_workers, [records[n] for n in dask_names], timeout)
        argv, env = cmds["register"]
        _register((argv + [a for o in overrides or [] for a in ("--set", o)], env), home, timeout)
        worker_names = [f"cdco-worker-{i + 1}" for i in range(workers)]
        for name in worker_names:
            records[name] = start_worker(name, cmds, home)
        if workers:
            wait_prefect_workers(urls["prefect_api"], POOL, worker_names, [records[n] for n in worker_names],
                                 timeout)
    except BaseException:
        serve.stop(home)
        raise
    return {"stack": "team", "urls": {**urls, "dask": dask_address}, "database": redact(db_url),
            "work_pool": POOL, "pids": {n: r["pid"] for n, r in records.items()},
            "state_dir": str(serve.state_dir(home))}


def native_commands(home: Path, ports: dict[str, int], db_server: str, profile: str,
                    data_home: Path | None = None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """:func:`service_commands` as :func:`start_team` runs them on 127.0.0.1: state under ``home``, the workers'
    ``CDCO_HOME`` ``data_home`` (``home`` unless given)."""
    host = _serve().HOST
    return service_commands(
        host=host, ports=ports, db_server=db_server, artifacts=str(home / "mlartifacts"), api_host=host,
        profile=profile, home=str((data_home or home).resolve()), dask_address=f"tcp://{host}:{ports['dask']}",
        mlflow_allowed_hosts=f"localhost,localhost:{ports['mlflow']},{host},{host}:{ports['mlflow']}")


def start_worker(name: str, cmds: dict[str, tuple[list[str], dict[str, str]]], home: Path) -> dict[str, Any]:
    """Launch one ``prefect worker start`` process named ``name`` (its pid file under ``home``); also how a worker
    that died is started again (:func:`native_commands` gives ``cmds``). Returns its record."""
    argv, env = cmds["worker"]
    return _serve().launch(name, native_argv([*argv, "--name", name]),
                           {**env, "PREFECT_HOME": str(home / "prefect")}, home, None)


def _start_postgres(home: Path, port: int, timeout: float) -> dict[str, Any]:
    """initdb (first time) and start the server as its own process; its record says what ``stop`` removes."""
    serve = _serve()
    owner = _cluster_owner()
    if owner:
        # a folder the postgres user owns; CDCO_HOME may sit where that user cannot reach (/root, pytest's tmp)
        root = Path(tempfile.mkdtemp(prefix="cdco-pg-"))
        remove = str(root)
    else:
        root, remove = home / "team", None
    data = root / "pgdata"
    if not (data / "PG_VERSION").exists():
        init_cluster(data, db_password(), owner, timeout)
    rec = serve.launch("postgres", postgres_argv(data, port), {}, home, port, user=owner,
                       extra={"stop_signal": "SIGINT", "remove_after_stop": remove})
    return rec


def _register(cmd: tuple[list[str], dict[str, str]], home: Path, timeout: float) -> None:
    """Apply the deployments to the work pool (creates the pool); a failure names the log."""
    serve = _serve()
    argv, env = cmd
    log = serve.state_dir(home) / "register.log"
    with open(log, "ab") as out:
        proc = subprocess.run(native_argv(argv), cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
    if proc.returncode != 0:
        raise serve.ServeError(f"registering the deployments failed ({proc.returncode}); see {log}")
