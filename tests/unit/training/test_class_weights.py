"""``class_weights: balanced`` (a task spec option): the weights, the loss, the cache key, and a small imbalanced
task whose unweighted head collapses to the majority class while the balanced one does not."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cdco_core.data.spec import TaskSpec
from cdco_core.errors import ConfigError
from cdco_core.losses import task_loss
from cdco_core.plan import build_plan
from cdco_core.profile import load_profile
from cdco_core.runner import run_plan

LABELS = ["plain", "joy", "gloom"]
OWN_WORDS = [["table", "chair", "door", "wall", "floor"], ["sun", "bright", "smile", "happy", "gold"],
             ["rain", "grey", "cold", "dark", "storm"]]
SHARED = "the a of on in movie film story plot actor scene music time day night good long short".split()


def test_the_balanced_loss_is_the_weighted_mean_worked_out_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1, 2, 0])
    w = (0.5, 2.0, 4.0)
    per_row = F.cross_entropy(logits, labels, reduction="none")
    by_hand = (0.5 * per_row[0] + 2.0 * per_row[1] + 4.0 * per_row[2] + 0.5 * per_row[3]) / (0.5 + 2.0 + 4.0 + 0.5)
    assert task_loss("classification", logits, labels, class_weights=w) == pytest.approx(float(by_hand), rel=1e-6)
    assert task_loss("classification", logits, labels) == pytest.approx(float(per_row.mean()), rel=1e-6)
    with pytest.raises(ValueError, match="class_weights has 2 entries for 3 classes"):
        task_loss("classification", logits, labels, class_weights=(1.0, 1.0))


def test_the_option_is_refused_where_it_has_no_classes_to_weigh() -> None:
    base = {"name": "t", "files": {"train": "x.csv"}, "class_weights": "balanced"}
    TaskSpec.model_validate({**base, "kind": "ID", "type": "classification"})
    for kind, typ in (("ID", "regression"), ("ID", "multiple_choice"), ("OOD", "classification")):
        with pytest.raises(ValueError, match="class_weights is for ID tasks with a fixed set of classes"):
            TaskSpec.model_validate({**base, "kind": kind, "type": typ})


def _write_task(folder: Path, counts: list[int], name: str) -> Path:
    """Rows of three classes, each drawing half its words from a small vocabulary of its own."""
    rng = random.Random(sum(counts))
    rows = [(" ".join(rng.choice(OWN_WORDS[c]) if rng.random() < 0.5 else rng.choice(SHARED) for _ in range(10)),
             LABELS[c]) for c, n in enumerate(counts) for _ in range(n)]
    rng.shuffle(rows)
    path = folder / f"{name}.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


def _config(tmp_path: Path, class_weights: str, steps: int = 120):
    train = _write_task(tmp_path, [160, 20, 20], "train")  # 80% "plain"; 96 rows are sampled (smoke's max_rows)
    test = _write_task(tmp_path, [40, 40, 40], "test")
    task = (f"data.tasks=[{{name: mood, kind: ID, type: classification, files: {{train: {train}, test: {test}}}, "
            f"text: [text], label: label, metric: macro_f1, class_weights: {class_weights}}}]")
    stage = f"train.stages=[{{name: all, groups: [all], losses: {{task: 1.0}}, steps: {steps}, lr: 5.0e-3}}]"
    return load_profile("smoke", ["data.tasks_file=null", task, "data.dev_fraction=0", stage])


def test_balanced_weights_come_from_the_train_split_counts(tmp_path) -> None:
    from cdco_core.data import open_task

    cfg = _config(tmp_path, "balanced")
    task = open_task(run_plan(build_plan(cfg, ["lora_mtl"], [0]), targets=["prepare[mood]"])["prepare[mood]"])
    counts = np.bincount(task.splits["train"]["label"].to_numpy(), minlength=3)
    n = counts.sum()
    assert task.class_weights() == pytest.approx(tuple(n / (3 * c) for c in counts))
    assert min(counts) > 0 and max(task.class_weights()) > 2 > 1 > min(task.class_weights())


def test_changing_class_weights_retrains(tmp_path) -> None:
    """The option does not change the task's rows (its content digest), but every step reading the task is
    keyed by it: an edit to it must never reuse the unweighted weights."""
    from cdco_core.steps import node_key

    keys = []
    for cw in ("none", "balanced"):
        plan = build_plan(_config(tmp_path, cw), ["lora_mtl"], [0])
        done = run_plan(plan, targets=["prepare[mood]"])
        node = plan.of_step("train")[0]
        keys.append((done["prepare[mood]"].digest, node_key(plan.config_for(node), node, done)))
    assert keys[0][0] == keys[1][0] and keys[0][1] != keys[1][1]


def test_an_imbalanced_task_collapses_unweighted_and_not_balanced(tmp_path) -> None:
    """The issue's case in small: the same rows, model and steps; the unweighted head predicts the majority class
    for every test row (and the comparison's floor warning names it), the balanced head predicts all three."""
    from cdco_core.data import open_task
    from cdco_core.evaluation.compare import floor_warnings, majority_floors

    got = {}
    for cw in ("none", "balanced"):
        done = run_plan(build_plan(_config(tmp_path, cw), ["lora_mtl"], [0]), targets=["evaluate[lora_mtl/seed0]"])
        ev = done["evaluate[lora_mtl/seed0]"]
        preds = pd.read_parquet(ev.path("predictions.parquet"))
        floors = majority_floors([open_task(done["prepare[mood]"])])
        result = {"method": "lora_mtl", "seed": 0, "metrics": ev.outputs["metrics"]}
        got[cw] = (set(preds["pred"].astype(int)), ev.outputs["metrics"]["mood"]["macro_f1"],
                   floor_warnings([result], floors))
    assert got["none"][0] == {LABELS_SORTED_INDEX["plain"]} and got["none"][1] < 0.2
    assert len(got["none"][2]) == 1 and "mood" in got["none"][2][0] and "lora_mtl seed 0" in got["none"][2][0]
    assert got["balanced"][0] == {0, 1, 2} and got["balanced"][1] > 0.6 and got["balanced"][2] == []


LABELS_SORTED_INDEX = {name: i for i, name in enumerate(sorted(LABELS))}  # inferred label sets are sorted


def test_class_weights_on_the_wrong_task_is_one_clear_error(tmp_path) -> None:
    path = _write_task(tmp_path, [5, 5, 5], "x")
    with pytest.raises(ConfigError, match="class_weights"):
        load_profile("smoke", [f"data.tasks=[{{name: r, kind: ID, type: regression, files: {{train: {path}}}, "
                               "text: [text], label: label, class_weights: balanced}]"])
