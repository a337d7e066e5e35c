"""MLflow lineage for pipeline runs: one parent run per pipeline run, one nested run per step.

Everything here imports ``mlflow`` lazily, so ``cdco_core`` imports without it. The tracking URI is
``$MLFLOW_TRACKING_URI`` or a SQLite store under ``CDCO_HOME`` (MLflow refuses the file store since 3.17).
Local stores put their artifacts under ``CDCO_HOME/mlartifacts`` (MLflow's default would be ``./mlruns``
in whatever directory the process started in).

Datasets and derived tables are logged with ``log_input`` carrying *our* sha256 (MLflow's pandas digest
reads only the first 10,000 rows; its digest field holds at most 36 characters, so it gets the first 36
hex digits and the input tag ``cdco.sha256`` the whole digest).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sqlite3
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cdco_core.errors import InputError
from cdco_core.paths import cdco_home

MLFLOW_DIGEST_LEN = 36  # MLflow's limit on a dataset digest
# MLflow 3's UI opens an experiment of unknown kind on its GenAI overview; ours is model training (the runs table).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


class TrackingUnavailableError(InputError):
    """The MLflow tracking server or store cannot be reached: the run fails before any work."""


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<CDCO_HOME>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{cdco_home() / 'mlflow.db'}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or "://" not in uri


def check_tracking(uri: str | None = None, timeout: float = 5.0) -> str:
    """Fail fast when the tracking store cannot be used; return the URI checked.

    HTTP servers are asked for ``/health``; a SQLite store must be creatable and writable.

    Raises:
        TrackingUnavailableError: names the URI, what failed, and how to fix it.
    """
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - user-configured URI
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}")
        except (OSError, urllib.error.URLError) as e:
            raise TrackingUnavailableError(
                f"MLflow tracking server {uri} cannot be reached ({e}). Start it (`make serve`), or set "
                "MLFLOW_TRACKING_URI to a reachable server or to sqlite:///path/mlflow.db"
            ) from None
    elif uri.startswith("sqlite:"):
        path = Path(uri.split("sqlite:///", 1)[-1])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sqlite3.connect(path, timeout=timeout).execute("select 1").close()
        except (OSError, sqlite3.Error) as e:
            raise TrackingUnavailableError(
                f"MLflow SQLite store {uri} cannot be opened ({e}); set MLFLOW_TRACKING_URI to a writable path"
            ) from None
        prepare_store(uri)
    return uri


# ------------------------------------------------------------------------------------- the SQLite store
@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed), held for the block; released if the process dies."""
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _schema_state(db: Path) -> tuple[str, str | None, list[str]]:
    """("empty" | "current" | "behind", the schema revision, ORM tables missing) of an MLflow SQLite file."""
    import sqlalchemy
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version

    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    try:
        tables = {t for t in sqlalchemy.inspect(engine).get_table_names() if not t.startswith("alembic_")}
        if not tables:
            return "empty", None, []
        rev = _get_schema_version(engine)
    finally:
        engine.dispose()
    missing = sorted(set(Base.metadata.tables) - tables)
    return ("current" if rev == _get_latest_schema_revision() and not missing else "behind"), rev, missing


def _build_beside(db: Path, build: Any) -> None:
    """Run ``build(engine)`` on a temporary copy of ``db`` (or an empty file) and rename it onto ``db``.

    SQLite runs MLflow's migrations without one enclosing transaction, so a failure half-way (a full disk)
    leaves a schema that no later start can finish; building aside means ``db`` is either the old file or the
    complete new one.
    """
    import sqlalchemy

    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{db.name}-", dir=db.parent)
    os.close(fd)
    try:
        if db.exists() and db.stat().st_size:
            with sqlite3.connect(db) as src, sqlite3.connect(tmp) as dst:
                src.backup(dst)  # a consistent copy even if someone is reading it
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
        quiet = logging.getLogger("mlflow.store.db.utils")  # its "Creating initial MLflow database tables..."
        level = quiet.level  # lines would stand before the one-line error of a failed build
        quiet.setLevel(logging.WARNING)
        try:
            build(engine)
        finally:
            quiet.setLevel(level)
            engine.dispose()
        os.replace(tmp, db)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:120]


def _disk_full(e: BaseException) -> bool:
    """Whether ``e`` or an exception it wraps (SQLAlchemy keeps the driver's as ``orig``) is a full disk/quota."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(x, sqlite3.Error) and getattr(x, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        todo += [getattr(x, "orig", None), x.__cause__, x.__context__]
    return False


def prepare_store(uri: str | None = None) -> None:
    """Create or migrate a local MLflow SQLite store once, under a lock, before anything else opens it.

    A no-op for other URIs and for a store already at MLflow's current schema. The lock is
    ``<db>.lock`` beside the database (``fcntl.flock``): concurrent first runs wait for one builder instead of
    racing on ``CREATE TABLE``. The schema is built, or an older one upgraded, on a copy that is renamed into
    place only when complete (:func:`_build_beside`).

    Raises:
        InputError: the store is half-built (an interrupted migration) or cannot be written; one line saying
            what to do.
    """
    uri = uri or tracking_uri()
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(db.with_name(db.name + ".lock")):
        try:
            state, rev, missing = _schema_state(db) if db.exists() else ("empty", None, [])
        except Exception as e:  # noqa: BLE001 - garbage in place of a database
            raise InputError(f"MLflow store {db} is not a readable SQLite database ({str(e).splitlines()[0][:120]}); "
                             f"move it aside (mv {db} {db}.broken) and run again") from None
        if state == "current":
            return
        from mlflow.store.db import utils as db_utils

        done = "created" if state == "empty" else "upgraded"
        left = "nothing was left behind" if state == "empty" else "the old store is unchanged"
        try:
            _build_beside(db, db_utils._initialize_tables if state == "empty" else db_utils._upgrade_db)
        except Exception as e:  # noqa: BLE001 - sorted below; every branch is one line
            if _disk_full(e):  # SQLite says "database or disk is full": not a broken store, just no room
                raise InputError(f"MLflow store {db} could not be {done}: no space left on device ({left}); free "
                                 "some space and run again, or set MLFLOW_TRACKING_URI to a folder with room") from None
            if state == "empty" or isinstance(e, OSError):
                raise InputError(f"MLflow store {db} could not be {done} ({_first_line(e)}; {left}); set "
                                 "MLFLOW_TRACKING_URI to a writable path") from None
            raise InputError(
                f"MLflow store {db} is half-built (schema revision {rev}, {len(missing)} table(s) missing, migration "
                f"fails: {_first_line(e)}): its creation was interrupted, e.g. by a full disk. "
                f"Move it aside (mv {db} {db}.broken) and run again"
            ) from None


def ensure_experiment(name: str) -> str:
    """The experiment's id, created if needed (artifacts under CDCO_HOME for local stores)."""
    import mlflow

    uri = tracking_uri()
    prepare_store(uri)
    mlflow.set_tracking_uri(uri)
    # MLflow draws a bar per artifact download (registering a model reads back a few small files): noise in every
    # log and between our bars. A user who wants them sets the variable.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            try:
                client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
            except Exception:  # two runs tagging at once: the store looks the tag up, then inserts it
                if client.get_experiment(exp.experiment_id).tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
                    raise
        return exp.experiment_id
    location = (cdco_home() / "mlartifacts" / name).as_uri() if is_local_store(uri) else None
    try:
        return client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
    except Exception:  # another run created it between our read and our write
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@contextlib.contextmanager
def pipeline_run(experiment: str, run_name: str, tags: dict[str, str]) -> Iterator[str]:
    """Start the parent run of one pipeline run; yields its id. Fails fast when tracking is down."""
    import mlflow

    check_tracking()
    experiment_id = ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags={**tags, **owner_tags()}) as run:
        yield run.info.run_id


@contextlib.contextmanager
def step_run(parent_run_id: str, name: str, tags: dict[str, str] | None = None) -> Iterator[str]:
    """A nested run under ``parent_run_id`` (explicit, so it works from any thread)."""
    import mlflow

    parent = mlflow.MlflowClient().get_run(parent_run_id)
    with mlflow.start_run(experiment_id=parent.info.experiment_id, run_name=name, nested=True,
                          parent_run_id=parent_run_id, tags={**(tags or {}), **owner_tags()}) as run:
        yield run.info.run_id


# ------------------------------------------------------------------------------------- orphaned runs
OWNER_TAGS = ("cdco.owner.pid", "cdco.owner.host", "cdco.owner.start")


def _start_time(pid: int) -> str | None:
    """The process' start time (seconds since the epoch, as text), or None when no such process exists.

    With the pid it identifies a process: a pid reused by a later process has another start time.
    """
    import psutil

    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def owner_tags() -> dict[str, str]:
    """Tags naming the process that creates a run: pid, host name and the process' start time."""
    return dict(zip(OWNER_TAGS, (str(os.getpid()), socket.gethostname(), _start_time(os.getpid()) or ""),
                    strict=True))


def fail_orphaned_runs(experiment: str | None = None) -> list[str]:
    """Mark FAILED every RUNNING run whose owner process (on this host) no longer exists; returns their ids.

    A killed ``cdco run`` cannot end its MLflow runs, which then stay RUNNING forever. Runs started on another
    host, or without owner tags (started by something else), are left alone.

    Args:
        experiment: only this experiment's runs; default all experiments.
    """
    import mlflow
    from mlflow.entities import ViewType

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        ids = [exp.experiment_id] if exp is not None else []
    else:
        ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    if not ids:
        return []
    host, marked = socket.gethostname(), []
    for run in client.search_runs(ids, "attributes.status = 'RUNNING'", run_view_type=ViewType.ALL,
                                  max_results=50000):
        tags = run.data.tags
        pid, owner_host, started = (tags.get(k) for k in OWNER_TAGS)
        if not pid or owner_host != host or not pid.isdigit():
            continue
        alive = _start_time(int(pid))
        if alive is not None and (not started or alive == started):
            continue  # the owner is still running
        client.set_tag(run.info.run_id, "cdco.failed_reason",
                       f"owner process {pid} on {host} (started {started}) no longer exists")
        client.set_terminated(run.info.run_id, status="FAILED")
        marked.append(run.info.run_id)
    return marked


def log_table_input(name: str, sha256: str, path: str | os.PathLike, context: str,
                    extra_tags: dict[str, str] | None = None) -> None:
    """``log_input`` of a dataset or derived table by reference: our digest, its path, no data copied."""
    import mlflow
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset

    source = get_dataset_source_from_json(json.dumps({"uri": str(path)}), source_type="local")
    dataset = MetaDataset(source=source, name=name, digest=sha256[:MLFLOW_DIGEST_LEN])
    tags = {"cdco.sha256": sha256, **(extra_tags or {})}
    mlflow.log_input(dataset, context=context, tags=tags)


def log_flat_metrics(metrics: dict[str, Any], prefix: str = "", step: int | None = None) -> None:
    """Log a nested dict of numbers as ``a.b.c`` metrics; non-numbers are skipped."""
    import mlflow

    flat = {k: float(v) for k, v in flatten(metrics, prefix).items()
            if isinstance(v, int | float) and not isinstance(v, bool)}
    if flat:
        mlflow.log_metrics(flat, step=step)


def log_paths(paths: list[str | os.PathLike], artifact_path: str) -> None:
    """Log files and folders that exist as artifacts; missing ones are skipped (logged as a tag)."""
    import mlflow

    missing = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            mlflow.log_artifacts(str(p), artifact_path=f"{artifact_path}/{p.name}")
        elif p.is_file():
            mlflow.log_artifact(str(p), artifact_path=artifact_path)
        else:
            missing.append(str(p))
    if missing:
        mlflow.set_tag(f"cdco.missing_artifacts.{artifact_path}", ", ".join(missing)[:4000])


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
