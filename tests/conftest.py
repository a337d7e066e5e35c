"""Shared fixtures. Everything a test writes goes under tmp_path; nothing reaches the hub."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Prefect creates PREFECT_HOME (default ~/.prefect) at import: point it at a temporary folder before any test
# imports prefect, and never talk to a user's server.
_SESSION_DIRS = [tempfile.mkdtemp(prefix="cdco-test-prefect-")]
os.environ["PREFECT_HOME"] = _SESSION_DIRS[0]
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# One numba cache for the whole session (subprocesses inherit it): UMAP's JIT compilation is paid once,
# not once per test's private CDCO_HOME.
if "NUMBA_CACHE_DIR" not in os.environ:
    _SESSION_DIRS.append(tempfile.mkdtemp(prefix="cdco-test-numba-"))
    os.environ["NUMBA_CACHE_DIR"] = _SESSION_DIRS[-1]
# Leave nothing behind in /tmp once the session ends.
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _SESSION_DIRS])

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def cdco_home(tmp_path_factory, monkeypatch) -> Path:
    """A private CDCO_HOME per test (caches, checkpoints, MLflow store)."""
    home = tmp_path_factory.mktemp("cdco_home")
    monkeypatch.setenv("CDCO_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home}/mlflow.db")
    return home


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread per test: the tiny models gain nothing from threads, and two threads on a busy
    2-core machine spin and run many times slower. Tests that spawn processes set their own."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def smoke_cfg():
    """The smoke profile, validated."""
    from cdco_core.profile import load_profile

    return load_profile("smoke")


@pytest.fixture(scope="session")
def tiny_model():
    """(model, tokenizer, identity) of the smoke profile's tiny random BERT with the real tokenizer."""
    from cdco_core.config import load_config
    from cdco_core.models.encoder import load_encoder

    return load_encoder(load_config("smoke").model)
