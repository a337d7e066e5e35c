"""The pipeline's steps. Each is a pure function of its inputs: the records of the nodes it reads (paths and
digests), the config section it declares, and its code. A step never runs the steps before it.

    prepare   a task's canonical table (content-addressed by the data layer itself; always checked)
    embed     one dataset's sentence vectors, as verified Parquet shards
    manifold  UMAP coordinates of every embedded row
    negatives each ID anchor's hard OOD negatives on the manifold, with plots
    train     one training stage of one method and seed
    evaluate  one trained method and seed scored on every task
    report    the comparison table, paired bootstrap and plots over the evaluations

:func:`execute` runs one plan node: it computes the node's key (:func:`cdco_core.cache.step_key`) and returns
the verified record under that key, computing it first when there is none. Both runners call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cdco_core.cache import Record, run_cached
from cdco_core.steps.base import Step, StepCall

if TYPE_CHECKING:  # the plan imports steps, never the other way: a step's code digest must not hold the planner
    from cdco_core.config import Config
    from cdco_core.plan import Node


def _steps() -> dict[str, Step]:
    from cdco_core.steps import embed, evaluate, manifold, negatives, report, train

    return {s.name: s for s in (embed.STEP, manifold.STEP, negatives.STEP, train.STEP, evaluate.STEP, report.STEP)}


def get_step(name: str) -> Step:
    """The cached step ``name`` (every step but ``prepare``, which the data layer addresses itself)."""
    return _steps()[name]


def node_key(cfg: Config, node: Node, inputs: dict[str, Record]) -> str | None:
    """The cache key of ``node`` given its input records (None for ``prepare``: see :func:`execute`)."""
    if node.step == "prepare":
        return None
    return get_step(node.step).key(cfg, node, inputs)


def execute(cfg: Config, node: Node, inputs: dict[str, Record],
            on_step: Callable[[dict[str, Any]], None] | None = None) -> Record:
    """Run one node: its verified cached record, or compute it (see the module docstring).

    Args:
        cfg: the config the node reads (the plan's :meth:`~cdco_core.plan.Plan.config_for`).
        node: the plan node.
        inputs: a record for every id in ``node.inputs``.
        on_step: progress reports of the node (a display, tests): every training step of a ``train`` node, the
            rows of an ``embed`` node, the phases of a ``manifold`` fit, the tasks of an ``evaluate`` node.
    """
    missing = [i for i in node.inputs if i not in inputs]
    if missing:
        raise ValueError(f"{node.id}: missing input record(s) {missing}")  # a runner bug, not user input
    inputs = {i: inputs[i] for i in node.inputs}
    if node.step == "prepare":
        from cdco_core.steps.prepare import prepare

        return prepare(cfg, node.params["task"])
    step = get_step(node.step)
    key = step.key(cfg, node, inputs)
    return run_cached(step.name, step.label(node), key,
                      lambda out, scratch: step.compute(StepCall(cfg, node, inputs, key, out, scratch, on_step)),
                      collective=step.collective)
