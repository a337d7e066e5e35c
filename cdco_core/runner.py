"""The local runner: walks a :class:`~cdco_core.plan.Plan` in this process, or with ``jobs`` worker processes.

It is what ``cdco step`` and ``cdco compare`` use; the Prefect flow walks the same plan with the same
:func:`cdco_core.steps.execute`. Every node runs exactly once per call, after the nodes it reads.

With ``jobs > 1`` the training and evaluation nodes go to spawned one-thread workers (``threads_per_job`` torch
threads each, by default the CPU count divided by ``jobs``) as soon as their inputs exist, while the data and
ODMS nodes (fast, or using every core themselves) and the report run here. The rationale: a single process leaves
cores idle in its serial parts (tokenising, head fits, Parquet); two one-thread workers do not (not benchmarked
against one two-thread process). Results equal the serial run's at the same thread count: every node is seeded
on its own and published atomically.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from cdco_core.cache import Record
from cdco_core.config import Config
from cdco_core.errors import InputError
from cdco_core.plan import Node, Plan

STEP_NAMES = ("prepare", "embed", "manifold", "negatives", "train", "evaluate", "report")
WORKER_STEPS = ("train", "evaluate")  # what goes to worker processes when jobs > 1
Progress = Callable[[Node, Record], None]


def run_plan(plan: Plan, targets: list[str] | None = None, jobs: int = 1, threads_per_job: int | None = None,
             on_done: Progress | None = None, on_step: Callable[[dict[str, Any]], None] | None = None,
             ) -> dict[str, Record]:
    """Execute ``targets`` (default: every node) and what they read; returns {node id: record}.

    ``on_done(node, record)`` is called as each node finishes; ``on_step(info)`` as a step reports progress
    (``info``: ``step``, units done in the node, optionally ``total``, ``unit``, ``loss`` or ``what``, plus ``node``,
    the node's id; see :func:`cdco_core.steps.execute`). Reports from worker processes (``jobs > 1``) come back
    through a queue, at most five a second per node, and are passed to ``on_step`` here, in this thread.

    Raises:
        InputError: bad task data, found when the tasks are prepared (before any training).
    """
    if jobs < 1:
        raise InputError(f"jobs must be at least 1; got {jobs}")
    order = plan.upstream(targets) if targets else list(plan.nodes)
    done: dict[str, Record] = {}
    prepare = [n for n in order if plan.nodes[n].step == "prepare"]
    for nid in prepare:  # every task first: bad data stops the run before any other work
        _finish(plan, nid, _run_node(plan, plan.nodes[nid], done, on_step), done, on_done)
    check_prepared(plan, [done[n] for n in prepare])
    rest = [n for n in order if n not in done]
    parallel = [n for n in rest if plan.nodes[n].step in WORKER_STEPS]
    if jobs == 1 or len(parallel) <= 1:
        for nid in rest:
            _finish(plan, nid, _run_node(plan, plan.nodes[nid], done, on_step), done, on_done)
        return done
    threads = threads_per_job or max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    reports = ctx.Queue() if on_step is not None else None  # the workers' progress, back to on_step
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads, reports)) as pool:
        _run_parallel(plan, rest, done, pool, jobs, on_done, on_step, reports)
    return done


def _run_parallel(plan: Plan, order: list[str], done: dict[str, Record], pool: ProcessPoolExecutor, slots: int,
                  on_done: Progress | None, on_step: Callable[[dict[str, Any]], None] | None,
                  reports: Any = None) -> None:
    """Run worker nodes on the pool, at most one per worker at a time, taking the first ready one in plan order;
    run the others here, in plan order.

    Plan order is method by method, seed by seed, each evaluation right after its last stage: a free worker takes
    the earliest method's next node, so whole methods finish (and are scored) one after another instead of every
    method's first stage first. A comparison cut short leaves complete method x seed results behind.
    """
    from cdco_core.profile import config_to_json

    pending = list(order)
    running: dict[Future, str] = {}
    while pending or running:
        for nid in list(pending):
            node = plan.nodes[nid]
            if not all(i in done for i in node.inputs):
                continue
            if node.step in WORKER_STEPS:
                if len(running) >= slots:
                    continue  # queued nodes would run in submission order, not plan order
                if reads_a_running_model(plan, node, running.values()):
                    continue  # its features come from the cache once the other evaluation is done
                wire = config_to_json(plan.config_for(node))
                inputs = {i: done[i].as_dict() for i in node.inputs}
                running[pool.submit(_execute_in_worker, wire, node.as_dict(), inputs)] = nid
                pending.remove(nid)
            else:
                _finish(plan, nid, _run_node(plan, node, done, on_step), done, on_done)
                pending.remove(nid)
        if running:
            finished, _ = wait(list(running), timeout=0.2 if reports is not None else None,
                               return_when=FIRST_COMPLETED)
            _drain(reports, on_step)  # before on_done: a finished node's last report comes before its end
            for fut in finished:
                nid = running.pop(fut)
                _finish(plan, nid, Record.from_dict(fut.result()), done, on_done)


def reads_a_running_model(plan: Plan, node: Node, running: Any) -> bool:
    """Whether ``node`` evaluates the model (the last stage) that a running evaluation scores: two methods that
    share their last stage (:mod:`cdco_core.methods.sharing`). Run one after the other, the second reads every
    feature from the cache (keyed by the stage's record) instead of encoding the same texts beside the first."""
    if node.step != "evaluate":
        return False
    return any(plan.nodes[r].step == "evaluate" and plan.nodes[r].inputs[0] == node.inputs[0] for r in running)


def _run_node(plan: Plan, node: Node, done: dict[str, Record],
              on_step: Callable[[dict[str, Any]], None] | None = None) -> Record:
    from cdco_core.steps import execute

    if on_step is not None:  # the trainer does not know its node; a display of several stages needs it
        outer = on_step
        on_step = lambda info: outer({**info, "node": node.id})  # noqa: E731
    return execute(plan.config_for(node), node, {i: done[i] for i in node.inputs}, on_step)


def _finish(plan: Plan, nid: str, record: Record, done: dict[str, Record], on_done: Progress | None) -> None:
    done[nid] = record
    if on_done is not None:
        on_done(plan.nodes[nid], record)


def _drain(reports: Any, on_step: Callable[[dict[str, Any]], None] | None) -> None:
    """Pass every progress report waiting in the workers' queue to ``on_step``."""
    import queue

    while reports is not None and on_step is not None:
        try:
            info = reports.get_nowait()
        except queue.Empty:
            return
        on_step(info)


_reports: Any = None  # in a worker process: the queue its progress reports go to (None: nobody listens)


def _init_worker(threads: int, reports: Any = None) -> None:
    global _reports
    import torch

    torch.set_num_threads(threads)
    _reports = reports


def _forwarder(node_id: str, min_interval: float = 0.2) -> Callable[[dict[str, Any]], None] | None:
    """A worker's ``on_step`` for node ``node_id``: puts the report on the queue, at most one per ``min_interval``
    seconds (the last unit of a known total always goes), or None when nobody listens."""
    if _reports is None:
        return None
    import time

    last = [0.0]

    def on_step(info: dict[str, Any]) -> None:
        now = time.monotonic()
        final = info.get("total") is not None and info.get("step") == info.get("total")
        if final or now - last[0] >= min_interval:
            last[0] = now
            _reports.put({**info, "node": node_id})

    return on_step


def _execute_in_worker(wire: dict[str, Any], node: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    from cdco_core.profile import config_from_json
    from cdco_core.steps import execute

    n = Node.from_dict(node)
    record = execute(config_from_json(wire), n, {k: Record.from_dict(v) for k, v in inputs.items()},
                     _forwarder(n.id))
    return record.as_dict()


def check_prepared(plan: Plan, records: list[Record]) -> None:
    """Refuse, before any training, tasks that cannot be trained on or scored: the checks ``cdco data check``
    applies (:func:`cdco_core.data.checks.check_task_set`, and the evaluation protocols' own:
    :func:`cdco_core.evaluation.protocols.check_protocols`).

    Raises:
        InputError or ConfigError: the first problem, naming the task (and split, class or key).
    """
    from cdco_core.data import open_task
    from cdco_core.data.checks import check_task_set
    from cdco_core.evaluation.protocols import check_protocols

    tasks = [open_task(r) for r in records]
    check_task_set(tasks)
    check_protocols(plan.cfg, tasks)
    if any(n.params.get("split") == "dev" for n in plan.of_step("evaluate")):
        from cdco_core.evaluation.scoring import check_dev_splits

        check_dev_splits(tasks)


def comparison_plan(cfg: Config, methods: list[str] | None = None, seeds: list[int] | None = None,
                    tuned: dict[str, list[str]] | None = None) -> Plan:
    """The plan :func:`run_comparison` walks: every method x seed, evaluated, and the report.

    Raises:
        InputError: unknown method, bad seeds.
    """
    from cdco_core.plan import build_plan

    return build_plan(cfg, methods, seeds, report=True, tuned=tuned)


def run_comparison(cfg: Config, methods: list[str] | None = None, seeds: list[int] | None = None,
                   out_dir: str | Path | None = None, jobs: int = 1, threads_per_job: int | None = None,
                   tuned: dict[str, list[str]] | None = None, plan: Plan | None = None,
                   on_done: Progress | None = None, on_step: Callable[[dict[str, Any]], None] | None = None,
                   ) -> dict[str, Any]:
    """Train (cached) and evaluate every method x seed, then the report; copy its files to ``out_dir``.

    Args:
        cfg: the validated config (its profile names the default output folder).
        methods: registry names (default ``cfg.eval.methods``); seeds: default ``cfg.eval.seeds``.
        out_dir: default ``CDCO_HOME/compare/<profile>/``.
        jobs, threads_per_job: worker processes and torch threads in each (see the module docstring).
        tuned: method -> overrides from ``cdco tune`` (``--tuned FILE``), each applied to its method only.
        plan: :func:`comparison_plan` of the same arguments, when the caller built it already (to size a progress
            display, or to read the records it gets through ``on_done``).
        on_done, on_step: progress callbacks, as in :func:`run_plan`.

    Returns:
        The report's outputs (table, numbers, bootstrap) with absolute file paths, ``out_dir`` and ``wall_s``
        (the whole comparison, training included where it was not cached).

    Raises:
        InputError: unknown method, bad seeds, bad task data: before any training.
    """
    from cdco_core.paths import cdco_home

    t0 = time.perf_counter()
    plan = plan or comparison_plan(cfg, methods, seeds, tuned)
    report = run_plan(plan, jobs=jobs, threads_per_job=threads_per_job, on_done=on_done, on_step=on_step)["report"]
    out = Path(out_dir) if out_dir is not None else cdco_home() / "compare" / cfg.profile
    out.mkdir(parents=True, exist_ok=True)
    for name in report.files:
        if name not in ("record.json", "outputs.json"):
            shutil.copyfile(report.path(name), out / name)
    o = report.outputs
    return {**o, "csv": str(out / o["csv"]), "md": str(out / o["md"]), "plots": [str(out / p) for p in o["plots"]],
            "out_dir": str(out), "report_dir": report.dir, "wall_s": round(time.perf_counter() - t0, 2)}
