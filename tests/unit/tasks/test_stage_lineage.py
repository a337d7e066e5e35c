"""Which splits a stage's MLflow run lists as its inputs (``tasks.train``).

A stage scores the ID tasks' dev splits (its own check, ``train.dev_select``) and links those metrics to the dev
split's dataset. The run must list that split among its inputs itself (``lineage.log_dataset``, which retries when
another run inserts the same dataset at that moment); otherwise ``mlflow.log_metrics`` logs it on its own, with
no retry, and two runs of one benchmark at once can fail on the dataset's unique key.
"""

from __future__ import annotations

from types import SimpleNamespace

from tasks.train import _contexts, _upstream_splits


def _task(kind: str, splits: list[str]) -> SimpleNamespace:
    return SimpleNamespace(step="prepare", outputs={"kind": kind, "splits": {s: {"rows": 1} for s in splits}})


def test_an_id_task_with_a_dev_split_lists_it_beside_train_and_eval() -> None:
    task = _task("ID", ["train", "dev", "validation"])
    assert _upstream_splits(task) == ["train", "validation", "dev"]
    assert [_contexts(task, s) for s in _upstream_splits(task)] == ["training", "evaluation", "dev"]


def test_without_a_dev_split_train_and_eval_only_and_ood_text_train_only() -> None:
    assert _upstream_splits(_task("ID", ["train", "validation", "test"])) == ["train", "validation"]
    assert _upstream_splits(_task("ID", ["train", "test"])) == ["train", "test"]
    assert _upstream_splits(_task("OOD", ["train", "dev", "test"])) == ["train"]
