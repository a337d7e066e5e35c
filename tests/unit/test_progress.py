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
        assert bars._stage.n == 5 and bars._stage.total == 6
        bars.on_step({"node": "train[x]", "step": 6, "loss": 0.4, "total": 6})
        assert bars._stage is None  # closed with its last step


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
        assert for_node(smoke_cfg, embed) is None  # only training steps are reported
        for_node(smoke_cfg, stage)({"step": 1, "loss": 0.5})
    assert seen == [{"step": 1, "loss": 0.5, "node": stage.id,
                     "total": smoke_cfg.train.stages[1].steps}]
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
