"""Progress bars for ``cdco run`` and ``cdco compare``: one per training stage (loss, steps/s, ETA) and, for a
comparison, one over the plan's nodes.

The stage bars are fed by the trainer's ``on_step`` callback (:func:`cdco_core.runner.run_plan` adds the node's id;
``cdco run``'s Prefect tasks get it through :mod:`tasks.progress`). Steps that run in other processes (``cdco
compare --jobs 2``, a Dask task runner) are not reported; the node bar still counts their nodes as they finish.

Bars are drawn on stderr, only when it is a terminal and ``CI`` is unset: a log file or a CI job gets none.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any


def bars_wanted(stream: Any = None) -> bool:
    """Whether to draw bars: ``stream`` (default stderr) is a terminal, ``CI`` is unset, ``TERM`` is not dumb."""
    stream = stream if stream is not None else sys.stderr
    if os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def _width() -> dict[str, Any]:
    """tqdm's size options: follow the terminal's size, or 100 x 24 where it reports none. A terminal whose size
    was never set (``docker exec -t`` at first, a test's pseudo-terminal) says 0 x 0, and tqdm then draws nothing
    at all (it hides bars below the last of 0 rows)."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        size = os.terminal_size((0, 0))
    return {"dynamic_ncols": True} if min(size) > 0 else {"ncols": 100, "nrows": 24}


class Bars:
    """The bars of one command. ``on_step(info)`` and ``on_done(node, record)`` are the runner's callbacks.

    Args:
        plan: the plan being run (each stage's step count, and the node bar's total); without one, a stage's
            step count comes with each step (``info["total"]``, :mod:`tasks.progress`).
        nodes: draw the bar over the plan's nodes (``cdco compare``).
        logs: write ``cdco_core``'s log records above the bars (``cdco compare``; under Prefect, ``cdco run``, its
            handlers print them).
        enabled: default :func:`bars_wanted`.
    """

    def __init__(self, plan: Any = None, nodes: bool = False, enabled: bool | None = None, logs: bool = False) -> None:
        self.plan = plan
        self.enabled = bars_wanted() if enabled is None else enabled
        self._lock = threading.Lock()  # Prefect calls on_step from its task thread
        self._stage: Any = None
        self._stage_node: str | None = None
        self._nodes: Any = None
        self._restore: list[Any] = []
        if self.enabled:
            self._write_above_bars(logs)
        if self.enabled and nodes:
            from tqdm.auto import tqdm

            self._nodes = tqdm(total=len(plan.nodes), desc="nodes", unit="node", file=sys.stderr, **_width())

    def _write_above_bars(self, logs: bool) -> None:
        """Our log records and Python warnings go through ``tqdm.write`` while bars are shown: written to stderr
        directly they would land in the middle of a bar's line (until :meth:`close`)."""
        import logging
        import warnings

        from tqdm.auto import tqdm

        class Above(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                tqdm.write(self.format(record), file=sys.stderr)

        logger = logging.getLogger("cdco_core")  # without a handler, logging's last resort prints the bare message
        if logs and not logger.handlers:
            handler = Above(logging.WARNING)
            logger.addHandler(handler)
            self._restore.append(lambda: logger.removeHandler(handler))
        shown = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
            text = warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n")
            tqdm.write(text, file=sys.stderr)

        warnings.showwarning = showwarning
        self._restore.append(lambda: setattr(warnings, "showwarning", shown))

    def _total(self, info: dict[str, Any]) -> int | None:
        from cdco_core.steps.train import stages_of

        if info.get("total") is not None or self.plan is None:
            return info.get("total")
        node = self.plan.nodes.get(info.get("node"))
        if node is None or node.step != "train":
            return None
        return stages_of(self.plan.config_for(node), node)[node.params["stage"]].steps

    def on_step(self, info: dict[str, Any]) -> None:
        """After a training step: ``info`` has ``node``, ``step`` (steps done in the stage) and ``loss``."""
        if not self.enabled:
            return
        with self._lock:
            node_id = info.get("node") or info.get("stage", "train")
            if node_id != self._stage_node:
                self._close_stage()
                from tqdm.auto import tqdm

                done = max(0, int(info["step"]) - 1)  # a resumed stage starts where its checkpoint left it
                self._stage = tqdm(total=self._total(info), initial=done, desc=node_id, unit="step",
                                   file=sys.stderr, leave=self._nodes is None, **_width(),
                                   position=1 if self._nodes is not None else None)
                self._stage_node = node_id
            self._stage.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
            self._stage.update(int(info["step"]) - self._stage.n)
            if self._stage.total is not None and self._stage.n >= self._stage.total:
                self._stage.refresh()  # tqdm skips draws closer than 0.1 s: the last step is always shown
                self._close_stage()  # the last step: the bar ends with the stage, not with the next one

    def on_done(self, node: Any, record: Any) -> None:
        """A node finished (computed or read from the cache)."""
        if not self.enabled:
            return
        with self._lock:
            if node.id == self._stage_node:
                self._close_stage()
            if self._nodes is not None:
                self._nodes.set_postfix_str(f"{node.id}{' (cached)' if getattr(record, 'cached', False) else ''}",
                                            refresh=False)
                self._nodes.update(1)

    def _close_stage(self) -> None:
        if self._stage is not None:
            self._stage.close()
        self._stage, self._stage_node = None, None

    def close(self) -> None:
        with self._lock:
            self._close_stage()
            if self._nodes is not None:
                self._nodes.close()
                self._nodes = None
            while self._restore:
                self._restore.pop()()

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
