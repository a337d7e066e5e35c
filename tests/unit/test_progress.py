"""The progress bars' own logic: when they are drawn, what a stage bar shows, and the flow tasks' hook."""

from __future__ import annotations

import io
import sys

from cli.progress import Bars, bars_wanted


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal_outside_ci(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert bars_wanted(_Tty()) and not bars_wanted(io.StringIO())
    monkeypatch.setenv("CI", "true")
    assert not bars_wanted(_Tty())
    monkeypatch.delenv("CI")
    monkeypatch.setenv("TERM", "dumb")
    assert not bars_wanted(_Tty())


def _steps(bars: Bars, node: str, n: int) -> None:
    for i in range(1, n + 1):
        bars.on_step({"node": node, "stage": "warmup", "step": i, "loss": 1.0 / i, "total": n})


def test_a_stage_bar_counts_the_stage_steps_with_the_loss(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with Bars(enabled=True) as bars:
        _steps(bars, "train[cdco/seed0/0-warmup]", 6)
        _steps(bars, "train[cdco/seed0/1-euclidean]", 4)
    out = err.getvalue()
    assert "train[cdco/seed0/0-warmup]: 100%" in out and "6/6" in out and "loss=0.1667" in out
    assert "train[cdco/seed0/1-euclidean]: 100%" in out and "4/4" in out and "loss=0.2500" in out


def test_a_resumed_stage_starts_at_its_checkpoint(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with Bars(enabled=True) as bars:
        bars.on_step({"node": "train[x]", "step": 5, "loss": 0.5, "total": 6})
        assert bars._bars["train[x]"].n == 5 and bars._bars["train[x]"].total == 6
        bars.on_step({"node": "train[x]", "step": 6, "loss": 0.4, "total": 6})
        assert "train[x]" not in bars._bars  # closed with its last step


def test_nodes_running_at_once_each_keep_their_own_bar(monkeypatch) -> None:
    """``--jobs 2``: two stages report in turn; neither bar is closed and reopened by the other's steps."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with Bars(enabled=True) as bars:
        for i in range(1, 4):
            bars.on_step({"node": "train[a]", "step": i, "loss": 0.5, "total": 4})
            bars.on_step({"node": "evaluate[b]", "step": i, "total": 5, "unit": "task", "what": f"task{i}"})
        assert bars._bars["train[a]"].n == 3 and bars._bars["evaluate[b]"].n == 3
        assert bars._bars["evaluate[b]"].unit == "task"
    out = err.getvalue()
    assert out.count("train[a]:   0%") <= 1 and "task3" in out


def test_a_bar_without_a_loss_shows_what_it_is_doing(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with Bars(enabled=True) as bars:
        bars.on_step({"node": "manifold[demo]", "step": 0, "total": 2, "unit": "phase", "what": "fit on 500 rows"})
        bars.on_step({"node": "manifold[demo]", "step": 1, "total": 2, "unit": "phase", "what": "transform 20 rows"})
        bars.on_step({"node": "manifold[demo]", "step": 2, "total": 2, "unit": "phase", "what": "done"})
    out = err.getvalue()
    assert "fit on 500 rows" in out and "manifold[demo]: 100%" in out and "2/2" in out


def test_disabled_bars_write_nothing(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with Bars(enabled=False) as bars:
        _steps(bars, "train[x]", 3)
    assert err.getvalue() == ""


def test_the_flow_tasks_report_only_while_someone_listens(smoke_cfg) -> None:
    from cdco_core.plan import build_plan
    from tasks.progress import for_node, reporting

    plan = build_plan(smoke_cfg)
    stage = next(n for n in plan.of_step("train") if n.params["stage"] == 1)
    embed = plan.of_step("embed")[0]
    assert for_node(smoke_cfg, stage) is None
    seen: list[dict] = []
    with reporting(seen.append):
        for_node(smoke_cfg, embed)({"step": 64, "total": 200, "unit": "row"})  # a step sends its own total
        for_node(smoke_cfg, stage)({"step": 1, "loss": 0.5})
    assert seen == [{"step": 64, "total": 200, "unit": "row", "node": embed.id},
                    {"step": 1, "loss": 0.5, "node": stage.id, "total": smoke_cfg.train.stages[1].steps}]
    assert for_node(smoke_cfg, stage) is None  # the block ended

    def broken(info: dict) -> None:
        raise RuntimeError("a display failed")

    with reporting(broken):
        for_node(smoke_cfg, stage)({"step": 1, "loss": 0.5})  # never fails the training step


def test_runner_steps_name_their_node(smoke_cfg, monkeypatch) -> None:
    """The runner adds the node's id to the trainer's info (the stage bar's name and total come from it)."""
    import cdco_core.steps as steps
    from cdco_core import runner
    from cdco_core.plan import build_plan

    plan = build_plan(smoke_cfg)
    node = next(n for n in plan.of_step("train") if n.params["stage"] == 0)
    seen: list[dict] = []

    def fake_execute(cfg, n, inputs, on_step=None):
        on_step({"stage": "warmup", "step": 3, "loss": 0.1})
        return "record"

    monkeypatch.setattr(steps, "execute", fake_execute)
    assert runner._run_node(plan, node, {i: None for i in node.inputs}, seen.append) == "record"
    assert seen == [{"stage": "warmup", "step": 3, "loss": 0.1, "node": node.id}]
    assert Bars(plan, enabled=False)._total({"node": node.id}) == smoke_cfg.train.stages[0].steps


def test_log_records_and_warnings_are_written_above_the_bars(monkeypatch) -> None:
    import logging
    import warnings

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    logger = logging.getLogger("cdco_core")
    before = (list(logger.handlers), warnings.showwarning)
    with Bars(enabled=True, logs=True) as bars:
        bars.on_step({"node": "train[x]", "step": 1, "loss": 0.5, "total": 4})
        logging.getLogger("cdco_core.evaluation.compare").warning("cdco seed 0: a head at its floor")
        warnings.showwarning(FutureWarning("old API"), FutureWarning, "lib.py", 7)
    out = err.getvalue()
    # each once, on a line of its own: tqdm.write clears the bar's line first (written straight to stderr they
    # would continue the bar's line, "...loss=0.5000]cdco seed 0: ...")
    assert out.count("cdco seed 0: a head at its floor\n") == 1 and "]cdco seed 0" not in out
    assert "lib.py:7: FutureWarning: old API\n" in out and "]lib.py" not in out
    assert (list(logger.handlers), warnings.showwarning) == before  # restored at close


def test_worker_reports_come_back_throttled_with_their_node(monkeypatch) -> None:
    """A worker process's steps reach the parent's ``on_step`` through the queue, named by node, at most one per
    interval except a known total's last unit."""
    import queue

    from cdco_core import runner

    q: queue.Queue = queue.Queue()
    monkeypatch.setattr(runner, "_reports", q)
    forward = runner._forwarder("embed[x]", min_interval=3600)
    for i in range(1, 11):
        forward({"step": i, "total": 10, "unit": "row"})
    seen: list[dict] = []
    runner._drain(q, seen.append)
    assert seen == [{"step": 1, "total": 10, "unit": "row", "node": "embed[x]"},
                    {"step": 10, "total": 10, "unit": "row", "node": "embed[x]"}]
    monkeypatch.setattr(runner, "_reports", None)
    assert runner._forwarder("embed[x]") is None  # nobody listens: the steps get no callback
