"""Two evaluation protocols of the benchmark (issue 13), as functions the evaluation step calls.

**Zero-shot transfer** (``eval.zero_shot``): the trained head of an ID task (sst2) applied, unchanged, to another
task's eval split (amazon_multidomain, imdb). The target's rows are encoded with the *source* task's id (what the
head was trained behind), the head's logits give the prediction, and the target's labels are mapped into the
source's label space by name through ``label_map`` (target name -> source name), declared in the config:

    ŷ_i = argmax_k f_src(enc(x_i; task = src))_k,     y_i = index_src(label_map[names_tgt[y_i^tgt]])

Nothing is trained: no label of the target is used except for scoring.

**Probe label budgets** (``eval.probe_budgets``): the fresh OOD/KI head (:func:`~cdco_core.evaluation.heads.train_head`)
trained on a seeded, stratified sample of N train rows, and on the full (capped) train split. The features are
computed once per split and shared by every budget (the caller passes the arrays). Stratified: each class gets
``floor(N · n_k / n)`` rows, the remainder goes to the classes with the largest fractional parts (ties to the
smaller class id), and every class present gets at least one row when N allows; within a class the rows are a
``default_rng([seed, N])`` permutation. Regression and multiple choice (no classes to keep) draw N rows uniformly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cdco_core.errors import InputError
from cdco_core.evaluation.features import Features, split_features
from cdco_core.evaluation.heads import CLASS_TYPES, HeadBudget, train_head

FULL = "full"  # the budget name of the whole (capped) train split


# ------------------------------------------------------------------------------------------ gate
def check_protocols(cfg: Any, tasks: list[Any]) -> None:
    """Refuse, before any training, a profile whose evaluation cannot run: contradicting task roles
    (:func:`~cdco_core.data.roles.check_task_roles`), a zero-shot entry that cannot be scored, a probe budget
    larger than a probed task's train split.

    Args:
        cfg: the validated config.
        tasks: every loaded task (:class:`~cdco_core.data.TaskData`) of the profile.

    Raises:
        ConfigError or InputError: the first problem, naming the key and the task.
    """
    from cdco_core.data.roles import check_task_roles

    check_task_roles(cfg, [t.spec for t in tasks])
    check_zero_shot(cfg.eval.zero_shot, {t.name: t for t in tasks})
    check_probe_budgets(cfg.eval.probe_budgets, [t for t in tasks if t.spec.kind in ("OOD", "KI") and t.spec.probe])


# ------------------------------------------------------------------------------------- zero-shot
@dataclass
class ZeroShotResult:
    """Per-example zero-shot predictions of ``source``'s head on ``target``'s eval split (source label ids)."""

    source: str
    target: str
    example_ids: np.ndarray
    labels: np.ndarray  # target labels mapped into the source's label ids
    predictions: np.ndarray  # argmax of the source head's logits


def label_id_map(source_names: list[str], target_names: list[str], label_map: dict[str, str],
                 where: str = "eval.zero_shot") -> np.ndarray:
    """Target label id -> source label id, through ``label_map`` (target name -> source name).

    Raises:
        InputError: a target label without a mapping, a mapping from a name the target does not have, or onto a
            name the source does not have (the message lists the names on both sides).
    """
    missing = [n for n in target_names if n not in label_map]
    stray = [n for n in label_map if n not in target_names]
    unknown = sorted({v for v in label_map.values() if v not in source_names})
    if missing or stray or unknown:
        parts = [f"unmapped target labels {missing}" if missing else "",
                 f"names the target does not have {stray}" if stray else "",
                 f"source labels that do not exist {unknown}" if unknown else ""]
        raise InputError(f"{where}.label_map: {'; '.join(p for p in parts if p)} "
                         f"(target labels: {target_names}; source labels: {source_names})")
    return np.asarray([source_names.index(label_map[n]) for n in target_names], dtype=np.int64)


def check_zero_shot(zero_shot: list[Any], tasks: dict[str, Any]) -> None:
    """Refuse, before any training, a zero-shot entry that cannot be scored.

    Args:
        zero_shot: ``cfg.eval.zero_shot`` entries.
        tasks: task name -> loaded :class:`~cdco_core.data.TaskData`.

    Raises:
        InputError: unknown task, a source that is not an ID task, a type without named classes, a bad label map.
    """
    for i, zs in enumerate(zero_shot):
        where = f"eval.zero_shot.{i}"
        for role, name in (("source", zs.source), ("target", zs.target)):
            if name not in tasks:
                raise InputError(f"{where}.{role}: unknown task {name!r}; configured: {', '.join(sorted(tasks))}")
        src, tgt = tasks[zs.source], tasks[zs.target]
        if src.spec.kind != "ID":
            raise InputError(f"{where}.source: {zs.source!r} is {src.spec.kind}; only an ID task has a trained head")
        for t in (src, tgt):
            if t.spec.type not in CLASS_TYPES:
                raise InputError(f"{where}: {t.name!r} is {t.spec.type}; zero-shot transfer maps class labels")
        label_id_map(src.label_names, tgt.label_names, zs.label_map, where)


def zero_shot_transfer(model: Any, tokenizer: Any, source: Any, target: Any, label_map: dict[str, str], *,
                       model_digest: str, max_length: int, batch_size: int) -> ZeroShotResult:
    """Apply ``source``'s trained head, unchanged, to ``target``'s eval split.

    Args:
        model: the trained multi-task model (has a head for ``source``); left unchanged.
        tokenizer: its tokenizer.
        source: the ID task (:class:`~cdco_core.data.TaskData`) whose head is applied.
        target: the task whose eval split is scored.
        label_map: target label name -> source label name.
        model_digest, max_length, batch_size: as for :func:`~cdco_core.evaluation.features.split_features`
            (features are cached under the source's task id, apart from the target's probe features).

    Returns:
        Example ids, labels in the source's ids, predictions.

    Raises:
        InputError: the model has no head for ``source``, or a bad label map.
    """
    import torch

    names = list(getattr(model, "task_names", []))
    if source.name not in names:
        raise InputError(f"zero-shot: the model has no trained head for {source.name!r}; heads: {names}")
    to_source = label_id_map(source.label_names, target.label_names, label_map)
    feats, _ = split_features(model, tokenizer, target, target.eval_split, model_digest=model_digest,
                              max_length=max_length, batch_size=batch_size, task_id=names.index(source.name))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model.head_logits(source.name, torch.as_tensor(feats.x, dtype=torch.float32))  # (N, K)
    finally:
        model.train(was_training)
    preds = logits.float().argmax(dim=1).cpu().numpy()
    return ZeroShotResult(source.name, target.name, feats.example_ids, to_source[feats.labels.astype(np.int64)],
                          preds)


# ------------------------------------------------------------------------------------ probe budgets
def check_probe_budgets(budgets: list[int], tasks: list[Any]) -> None:
    """Refuse a budget larger than a probed task's train split, before any training.

    Raises:
        InputError: names the task, its train rows and the budget.
    """
    for t in tasks:
        n = len(t.splits["train"])
        too_big = [b for b in budgets if b > n]
        if too_big:
            raise InputError(f"eval.probe_budgets: {too_big} > the {n} train rows of task {t.name!r}; lower the "
                             "budget or raise the task's train cap")


def budget_sample(labels: np.ndarray, budget: int, seed: int, task_type: str) -> np.ndarray:
    """Sorted row indices of a seeded sample of ``budget`` rows, stratified by class for classification types.

    Raises:
        InputError: ``budget`` larger than the rows available, or below 1.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 1 <= budget <= n:
        raise InputError(f"probe budget {budget} does not fit a train split of {n} rows")
    rng = np.random.default_rng([seed, budget])
    if task_type not in CLASS_TYPES or budget == n:
        return np.sort(rng.permutation(n)[:budget])
    classes, counts = np.unique(labels, return_counts=True)
    quota = _stratified_quota(counts, budget)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picked))


def _stratified_quota(counts: np.ndarray, budget: int) -> np.ndarray:
    """Rows per class: proportional with largest remainders, at least 1 per class when the budget allows."""
    exact = budget * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    if budget >= len(counts):
        quota = np.maximum(quota, 1)
    quota = np.minimum(quota, counts)
    while quota.sum() > budget:  # the floor of 1 overshot: take back from the class furthest above its share
        quota[np.argmax(np.where(quota > 1, quota - exact, -np.inf))] -= 1
    rest = exact - quota
    for k in np.lexsort((np.arange(len(counts)), -rest)):  # largest remainder first, ties to the smaller id
        if quota.sum() == budget:
            break
        if quota[k] < counts[k]:
            quota[k] += 1
    return quota


def probe_at_budgets(task_type: str, train: Features, heldout: Features, budgets: list[int], *,
                     head: HeadBudget, seed: int, num_labels: int = 0) -> dict[str, np.ndarray]:
    """Fresh-head predictions on ``heldout`` for each label budget and for the full train split.

    Args:
        task_type: the task's type.
        train, heldout: features of the train and eval splits, computed once and shared by every budget.
        budgets: label budgets (each <= the train rows).
        head: the fresh head's training budget (``cfg.eval``).
        seed: seeds the sample and the head's shuffling.
        num_labels: classes (classification types).

    Returns:
        ``{"256": predictions, ..., "full": predictions}`` (budget name -> (N_eval,) predictions).
    """
    out: dict[str, np.ndarray] = {}
    for b in [*budgets, None]:
        idx = np.arange(len(train.labels)) if b is None else budget_sample(train.labels, b, seed, task_type)
        mask = None if train.mask is None else train.mask[idx]
        fitted = train_head(task_type, train.x[idx], train.labels[idx], budget=head, seed=seed,
                            num_labels=num_labels, mask=mask)
        out[FULL if b is None else str(b)] = fitted.predict(heldout.x, heldout.mask)
    return out
