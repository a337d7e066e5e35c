"""Progress (training steps, embedded rows, manifold phases, evaluated tasks) from the flow's step tasks to whoever
displays it (``cdco run``'s bars, :mod:`cli.progress`).

A Prefect task's parameters are its cache inputs and must be data, so the display's callback cannot travel as
one: ``cdco run`` installs it here for the process, and :func:`tasks.run.run_step` hands it to the step with
the node's id. Tasks run by Prefect's thread pool (``orchestration.task_runner: thread``) run in this process and
report; Dask workers are other processes, where nothing is installed and nothing is reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

StepCallback = Callable[[dict[str, Any]], None]
_callback: StepCallback | None = None


@contextlib.contextmanager
def reporting(callback: StepCallback | None) -> Iterator[None]:
    """Send every training step of the step tasks run in this process to ``callback`` for the block."""
    global _callback
    before, _callback = _callback, callback
    try:
        yield
    finally:
        _callback = before


def for_node(cfg: Any, node: Any) -> StepCallback | None:
    """The step's ``on_step`` for the plan node ``node`` run with ``cfg`` (the info gets ``node``, its id, and for a
    training stage ``total``, its step count; other steps send their own), or None when nobody listens."""
    callback = _callback
    if callback is None:
        return None
    extra: dict[str, Any] = {"node": node.id}
    if node.step == "train":
        from cdco_core.steps.train import stages_of

        extra["total"] = stages_of(cfg, node)[node.params["stage"]].steps

    def on_step(info: dict[str, Any]) -> None:
        try:
            callback({**info, **extra})
        except Exception:  # noqa: BLE001 - a display must never fail a training step
            pass

    return on_step
