"""The flow's task runner: Prefect's thread pool, a local Dask cluster, or an existing Dask scheduler.

    orchestration.task_runner: thread | dask
    orchestration.dask_address: tcp://host:8786      # an existing scheduler (dask scheduler + dask worker ...)
    CDCO_DASK_ADDRESS=tcp://host:8786                # the same, set by whoever runs the worker (wins over the key)

The environment variable is how an operator points every flow run a worker executes at the team's Dask cluster
without editing profiles (``make serve STACK=team`` and ``docker-compose.yml`` set it on the Prefect workers). It
applies only when the config asks for Dask: ``task_runner: thread`` runs the steps in the flow's process.
"""

from __future__ import annotations

import os
from typing import Any

from cdco_core.errors import ConfigError

ENV = "CDCO_DASK_ADDRESS"


def dask_address(cfg: Any) -> str | None:
    """The scheduler to use: ``$CDCO_DASK_ADDRESS``, else ``orchestration.dask_address``, else None (local).

    Raises:
        ConfigError: an address that is not ``tcp://host:port`` (or tls://, inproc://, ucx://).
    """
    env = os.environ.get(ENV, "").strip()
    address, where = (env, ENV) if env else (cfg.orchestration.dask_address, "orchestration.dask_address")
    if not address:
        return None
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in {"tcp", "tls", "inproc", "ucx"} or not rest:
        raise ConfigError(f"{where}={address!r}: expected a Dask scheduler address such as tcp://127.0.0.1:8786")
    return address


def task_runner(cfg: Any) -> Any:
    """Prefect's thread pool, or prefect-dask's DaskTaskRunner on an existing scheduler or a local cluster."""
    from prefect.task_runners import ThreadPoolTaskRunner

    o = cfg.orchestration
    if o.task_runner != "dask":
        return ThreadPoolTaskRunner(max_workers=1)  # steps already use every core through torch
    from prefect_dask import DaskTaskRunner

    address = dask_address(cfg)
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": o.dask_workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})
