"""Where each task is used: the training mixture, the ODMS pool, the OOD/KI probe, the two OOD protocols.

    ID tasks                         the training mixture (and the ODMS anchors)
    pool      OOD tasks not unseen and not in negatives.strict_exclude: their train texts, labels unused
    probed    OOD and KI tasks with ``probe: true`` (the default): a fresh head, scored on the eval split
    seen      OOD tasks with ``ood_protocol: seen``   (in the pool: like task-adaptive pre-training)
    unseen    OOD tasks with ``ood_protocol: unseen`` (in no form in the pool: must be in strict_exclude)

An OOD task without ``ood_protocol`` keeps today's behaviour (pool unless excluded, probed unless ``probe: false``).
"""

from __future__ import annotations

from collections.abc import Iterable

from cdco_core.config import Config
from cdco_core.data.spec import TaskSpec
from cdco_core.errors import ConfigError


def pool_tasks(specs: Iterable[TaskSpec], strict_exclude: Iterable[str]) -> list[str]:
    """OOD tasks whose train texts form the ODMS pool, in spec order."""
    excluded = set(strict_exclude)
    return [s.name for s in specs if s.kind == "OOD" and s.ood_protocol != "unseen" and s.name not in excluded]


def probed_tasks(specs: Iterable[TaskSpec]) -> list[str]:
    """OOD and KI tasks scored by the fresh-head probe, in spec order."""
    return [s.name for s in specs if s.kind in ("OOD", "KI") and s.probe]


def ood_protocol_of(specs: Iterable[TaskSpec]) -> dict[str, str]:
    """Probed OOD task -> "seen" | "unseen" | "undeclared", for tables and averages per protocol."""
    return {s.name: s.ood_protocol or "undeclared" for s in specs if s.kind == "OOD" and s.probe}


def check_task_roles(cfg: Config, specs: list[TaskSpec]) -> None:
    """Refuse a profile whose task roles contradict each other, before any work.

    Raises:
        ConfigError: an unseen task missing from ``negatives.strict_exclude`` (it would enter the pool), a seen or
            pool-only task listed there (it would not), or a zero-shot entry naming an unknown task, a source that
            is not an ID task, or a target that is an ID task.
    """
    by_name = {s.name: s for s in specs}
    excluded = set(cfg.negatives.strict_exclude)
    problems = []
    for s in specs:
        if s.ood_protocol == "unseen" and s.name not in excluded:
            problems.append(f"task {s.name!r} is ood_protocol: unseen but not in negatives.strict_exclude "
                            "(its train texts would enter the ODMS pool); add it there")
        if s.name in excluded and (s.ood_protocol == "seen" or not s.probe):
            why = "ood_protocol: seen" if s.ood_protocol == "seen" else "probe: false (pool-only)"
            problems.append(f"task {s.name!r} is {why} but listed in negatives.strict_exclude, which keeps it out "
                            "of the pool")
    for i, zs in enumerate(cfg.eval.zero_shot):
        for role, name in (("source", zs.source), ("target", zs.target)):
            if name not in by_name:
                problems.append(f"eval.zero_shot.{i}.{role}: unknown task {name!r}; configured: "
                                f"{', '.join(sorted(by_name))}")
        if zs.source in by_name and by_name[zs.source].kind != "ID":
            problems.append(f"eval.zero_shot.{i}.source: {zs.source!r} is {by_name[zs.source].kind}; only an ID "
                            "task has a trained head")
        if zs.target in by_name and by_name[zs.target].kind == "ID":
            problems.append(f"eval.zero_shot.{i}.target: {zs.target!r} is an ID task (trained on): not zero-shot")
    if problems:
        raise ConfigError("invalid task roles:\n  " + "\n  ".join(problems))
