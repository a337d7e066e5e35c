"""One real local stack per session: Prefect server + MLflow server + the deployment's serve process.

Started with ``cli.serve.start`` on free loopback ports, with its state (PREFECT_HOME, the MLflow
store, CDCO_HOME) under a temporary folder; every integration test runs against this one Prefect server.
The test profile is the smoke profile plus a KI task read from a CSV in the temporary folder (so a test can
change one dataset), with the Dask task runner (2 local workers) for the served runs.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdco_core.paths import CONF_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_ki_csv(path: Path, variant: int = 0) -> None:
    """40 rows of a tiny knowledge task; ``variant`` changes one row's text (a changed dataset)."""
    rows = ["text,label"] + [f"fact number {i} about topic {i % 4},{'yes' if i % 2 else 'no'}" for i in range(40)]
    if variant:
        rows[1] = f"fact number 0 revised {variant},no"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_profile(folder: Path) -> Path:
    raw = yaml.safe_load((CONF_DIR / "smoke.yaml").read_text(encoding="utf-8"))
    raw["profile"] = "itest"
    raw["data"]["tasks"] = [{"name": "ki_file", "kind": "KI", "type": "classification",
                             "files": {"train": str(folder / "ki_file.csv")}, "text": ["text"], "label": "label"}]
    raw["orchestration"] = {"task_runner": "dask", "dask_workers": 2, "experiment": "cdco-itest"}
    path = folder / "itest.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The running stack: {"home", "profile", "urls", "pids", "ki_csv"}; stopped by PID at the end."""
    from cli import serve

    root = tmp_path_factory.mktemp("stack")
    home = root / "home"
    write_ki_csv(root / "ki_file.csv")
    profile = write_profile(root)
    info = serve.start(str(profile), home=home, prefect_port=free_port(), mlflow_port=free_port(), timeout=180)
    try:
        yield {**info, "home": home, "profile": str(profile), "ki_csv": root / "ki_file.csv"}
    finally:
        serve.stop(home)


@pytest.fixture
def on_stack(stack, monkeypatch, tmp_path) -> Iterator[dict[str, Any]]:
    """This test talks to the stack's Prefect and MLflow servers and uses the stack's CDCO_HOME (its caches)."""
    from tests.helpers import stack_settings

    with stack_settings(stack, monkeypatch, tmp_path / "prefect-client") as s:
        yield s
