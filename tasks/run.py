"""The one Prefect task that runs a plan node: :func:`cdco_core.steps.execute`, keyed by the step's own key.

Every node becomes a task run named by what it does (``embed[imdb]``, ``train[cdco/seed0/2-poincare]``) under a
task named by its step (``embed``, ``train``); its upstream records arrive as Prefect futures, so the flow graph
shows the true data dependencies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from tasks._cache import StepCache, cached_task_options, wire_inputs


# retries: a training stage checkpoints every ``train.checkpoint_every`` steps, so a retried stage resumes.
@task(name="step", retries=1, retry_delay_seconds=2, **cached_task_options())
def run_step(cfg: dict[str, Any], node: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    """Execute one node; ``cfg`` is the config's JSON with its digest, ``upstream`` {input id: record}."""
    from cdco_core.steps import execute
    from tasks.progress import for_node

    conf, plan_node, inputs = wire_inputs({"cfg": cfg, "node": node, "upstream": upstream})
    return execute(conf, plan_node, inputs, for_node(conf, plan_node)).as_dict()


def step_task(step: str, node_id: str, storage: str) -> Task:
    """``run_step`` named for one node, cached under ``storage`` (``prepare`` is never cached by Prefect: the
    data layer addresses its output by the files it reads)."""
    if step == "prepare":
        return run_step.with_options(name=step, task_run_name=node_id, cache_policy=NO_CACHE, persist_result=False)
    return run_step.with_options(name=step, task_run_name=node_id, cache_policy=StepCache(storage=storage),
                                 result_storage=Path(storage))  # a Path: a plain string names a storage block
