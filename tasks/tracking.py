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
import json
import os
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cdco_core.errors import InputError
from cdco_core.paths import cdco_home

MLFLOW_DIGEST_LEN = 36  # MLflow's limit on a dataset digest


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
    return uri


def ensure_experiment(name: str) -> str:
    """The experiment's id, created if needed (artifacts under CDCO_HOME for local stores)."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (cdco_home() / "mlartifacts" / name).as_uri() if is_local_store(uri) else None
    try:
        return client.create_experiment(name, artifact_location=location)
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
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        yield run.info.run_id


@contextlib.contextmanager
def step_run(parent_run_id: str, name: str, tags: dict[str, str] | None = None) -> Iterator[str]:
    """A nested run under ``parent_run_id`` (explicit, so it works from any thread)."""
    import mlflow

    parent = mlflow.MlflowClient().get_run(parent_run_id)
    with mlflow.start_run(experiment_id=parent.info.experiment_id, run_name=name, nested=True,
                          parent_run_id=parent_run_id, tags=tags or {}) as run:
        yield run.info.run_id


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
