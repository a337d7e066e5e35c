"""Progress bars for ``cdco run`` and ``cdco compare``: one per running step that takes more than a moment
(a training stage with its loss, steps/s and ETA; an embedding in rows; a manifold fit in phases; an evaluation
in tasks) and, for a comparison, one over the plan's nodes.

The bars are fed by the steps' ``on_step`` callback (:func:`cdco_core.runner.run_plan` adds the node's id and
forwards the reports of its worker processes, ``cdco compare --jobs 2``; ``cdco run``'s Prefect tasks get it through
:mod:`tasks.progress`). Tasks run by a Dask task runner are other processes and are not reported; the node bar
still counts their nodes as they finish.

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


def _postfix(info: dict[str, Any]) -> str:
    """What a bar shows after its rate: a training step's loss, or the item (phase, task) just reached."""
    if info.get("loss") is not None:
        return f"loss={info['loss']:.4f}"
    return str(info.get("what") or "")


class Bars:
    """The bars of one command. ``on_step(info)`` and ``on_done(node, record)`` are the runner's callbacks.

    One bar per node that reports progress (a training stage counts steps with its loss; an embedding counts
    rows; a manifold fit counts its phases; an evaluation counts its tasks), as many at once as nodes run at once
    (``cdco compare --jobs 2``: the workers' steps come through :func:`cdco_core.runner.run_plan`).

    Args:
        plan: the plan being run (each stage's step count, and the node bar's total); without one, a bar's total
            comes with each report (``info["total"]``, :mod:`tasks.progress`).
        nodes: draw the bar over the plan's nodes (``cdco compare``).
        logs: write ``cdco_core``'s log records above the bars (``cdco compare``; under Prefect, ``cdco run``, its
            handlers print them).
        enabled: default :func:`bars_wanted`.
    """

    def __init__(self, plan: Any = None, nodes: bool = False, enabled: bool | None = None, logs: bool = False) -> None:
        self.plan = plan
        self.enabled = bars_wanted() if enabled is None else enabled
        self._lock = threading.Lock()  # Prefect calls on_step from its task threads
        self._bars: dict[str, Any] = {}  # node id -> its open bar
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
        """After a unit of work: ``info`` has ``node``, ``step`` (units done in the node), and optionally ``total``,
        ``unit`` (default "step"), ``loss`` (a training step) or ``what`` (the item just done)."""
        if not self.enabled:
            return
        with self._lock:
            node_id = info.get("node") or info.get("stage", "train")
            bar = self._bars.get(node_id)
            if bar is None:
                from tqdm.auto import tqdm

                done = max(0, int(info["step"]) - 1)  # a resumed stage starts where its checkpoint left it
                bar = tqdm(total=self._total(info), initial=done, desc=node_id, unit=info.get("unit", "step"),
                           file=sys.stderr, leave=self._nodes is None, postfix=_postfix(info), **_width())
                self._bars[node_id] = bar
            elif _postfix(info) != bar.postfix:  # a new loss: with the next draw; a new phase or task: now
                bar.set_postfix_str(_postfix(info), refresh=info.get("loss") is None)
            bar.update(int(info["step"]) - bar.n)
            if bar.total is not None and bar.n >= bar.total:
                bar.refresh()  # tqdm skips draws closer than 0.1 s: the last step is always shown
                self._close(node_id)  # the last step: the bar ends with its node, not with the next one

    def on_done(self, node: Any, record: Any) -> None:
        """A node finished (computed or read from the cache)."""
        if not self.enabled:
            return
        with self._lock:
            self._close(node.id)
            if self._nodes is not None:
                self._nodes.set_postfix_str(f"{node.id}{' (cached)' if getattr(record, 'cached', False) else ''}",
                                            refresh=False)
                self._nodes.update(1)

    def _close(self, node_id: str) -> None:
        bar = self._bars.pop(node_id, None)
        if bar is not None:
            bar.close()

    def close(self) -> None:
        with self._lock:
            for node_id in list(self._bars):
                self._close(node_id)
            if self._nodes is not None:
                self._nodes.close()
                self._nodes = None
            while self._restore:
                self._restore.pop()()

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
