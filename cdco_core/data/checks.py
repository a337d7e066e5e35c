"""The checks a task set must pass before any work starts: one place, used by ``cdco data check`` and ``cdco run``.

:func:`check_task_specs` runs on the specs (before any file is read); :func:`check_task_set` on the loaded tasks
(what the training and evaluation protocol needs of them). Each raises :class:`~cdco_core.errors.InputError`
with one message naming the task and what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cdco_core.data.spec import METRICS_BY_TYPE, TaskSpec
from cdco_core.errors import DataError, InputError

KINDS = ("ID", "OOD", "KI")
CLASS_TYPES = ("classification", "pair_classification", "boolean_qa")


def check_task_specs(specs: Sequence[TaskSpec]) -> None:
    """Refuse an empty task list and repeated task names.

    Raises:
        DataError: no tasks, or names repeated (listed).
    """
    if not specs:
        raise DataError("no tasks configured: set data.tasks_file or data.tasks (a spec file needs 'tasks: [...]' "
                        "with at least one task)")
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"task names must be unique; repeated: {dup}")


def check_task_set(tasks: Sequence[Any]) -> None:
    """Everything ``cdco run`` needs of loaded tasks (:class:`~cdco_core.data.TaskData`), checked before any work.

    Checks: the spec checks above; kind and metric fit; a non-empty ``train`` split and eval split; at least two
    labels declared, and at least two classes present in ``train``, for classification types.

    Raises:
        InputError: the first problem found, naming the task (and split or class).
    """
    check_task_specs([t.spec for t in tasks])
    for t in tasks:
        spec = t.spec
        if spec.kind not in KINDS:
            raise InputError(f"task {t.name!r}: kind {spec.kind!r} is not one of {', '.join(KINDS)}")
        if spec.metric is not None and spec.metric not in METRICS_BY_TYPE[spec.type]:
            raise InputError(f"task {t.name!r}: metric {spec.metric!r} does not fit type {spec.type!r}; "
                             f"allowed: {', '.join(METRICS_BY_TYPE[spec.type])}")
        for split in ("train", t.eval_split):
            if split not in t.splits or len(t.splits[split]) == 0:
                raise InputError(
                    f"task {t.name!r}: split {split!r} is missing or empty; found splits: {sorted(t.splits)} "
                    f"(the protocol needs 'train' and the eval split {t.eval_split!r})"
                )
        if spec.type in CLASS_TYPES:
            _check_classes(t)


def _check_classes(task: Any) -> None:
    names = list(task.label_names)
    if len(names) < 2:
        raise InputError(f"task {task.name!r}: a {task.spec.type} task needs at least two labels; got {names}")
    present = sorted(int(v) for v in set(task.splits["train"]["label"].tolist()))
    if len(present) < 2:
        only = names[present[0]] if present else "none"
        raise InputError(f"task {task.name!r}: the train split has one class ({only!r}) of {names}; a classifier "
                         "needs examples of at least two classes")
