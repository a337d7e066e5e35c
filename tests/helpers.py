"""Small helpers several test files share (imported as ``tests.helpers``)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def wait_for_file(path: Path, child: subprocess.Popen, seconds: float, what: str) -> None:
    """Poll until ``child`` writes ``path``. A child that exits first fails with its output; one that never
    writes it within ``seconds`` (a hang guard, not a speed target) is killed and the test fails with ``what``."""
    deadline = time.time() + seconds
    while not path.exists():
        assert child.poll() is None, child.communicate()[0].decode()[-3000:]
        if time.time() > deadline:
            child.kill()
            pytest.fail(what)
        time.sleep(0.05)


@contextmanager
def stack_settings(stack: dict[str, Any], monkeypatch: Any, client_home: Path) -> Iterator[dict[str, Any]]:
    """This process talks to a running stack's Prefect and MLflow servers and uses its CDCO_HOME (its caches)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    monkeypatch.setenv("CDCO_HOME", str(stack["home"]))
    monkeypatch.setenv("PREFECT_API_URL", stack["urls"]["prefect_api"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack["urls"]["mlflow"])
    with temporary_settings(updates={PREFECT_API_URL: stack["urls"]["prefect_api"],
                                     PREFECT_HOME: str(client_home)}):
        yield stack
