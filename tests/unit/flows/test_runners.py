"""flows/runners.py: which task runner a config gets, and where CDCO_DASK_ADDRESS points it."""

from __future__ import annotations

import pytest

from cdco_core.config import load_config
from cdco_core.errors import ConfigError
from flows import runners


def test_thread_runner_ignores_the_address(monkeypatch) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    monkeypatch.setenv("CDCO_DASK_ADDRESS", "tcp://127.0.0.1:8786")
    assert isinstance(runners.task_runner(load_config("smoke")), ThreadPoolTaskRunner)


def test_env_wins_over_the_config_key(monkeypatch) -> None:
    cfg = load_config("smoke", ["orchestration.task_runner=dask", "orchestration.dask_address=tcp://127.0.0.2:8787"])
    monkeypatch.delenv("CDCO_DASK_ADDRESS", raising=False)
    assert runners.dask_address(cfg) == "tcp://127.0.0.2:8787"
    monkeypatch.setenv("CDCO_DASK_ADDRESS", "tcp://127.0.0.1:8786")
    assert runners.dask_address(cfg) == "tcp://127.0.0.1:8786"
    runner = runners.task_runner(cfg)
    assert runner.address == "tcp://127.0.0.1:8786"  # an existing scheduler: no local cluster is started


def test_no_address_starts_a_local_cluster(monkeypatch) -> None:
    monkeypatch.delenv("CDCO_DASK_ADDRESS", raising=False)
    runner = runners.task_runner(load_config("smoke", ["orchestration.task_runner=dask"]))
    assert runner.address is None and runner.cluster_kwargs["n_workers"] == 2


@pytest.mark.parametrize("bad", ["127.0.0.1:8786", "http://127.0.0.1:8786", "tcp://"])
def test_bad_address_names_the_variable(monkeypatch, bad) -> None:
    monkeypatch.setenv("CDCO_DASK_ADDRESS", bad)
    with pytest.raises(ConfigError, match=r"^CDCO_DASK_ADDRESS="):
        runners.task_runner(load_config("smoke", ["orchestration.task_runner=dask"]))
