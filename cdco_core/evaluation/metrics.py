"""Metric functions by task type, in plain numpy (fast enough to run thousands of times in the bootstrap).

Which metric fits which task type is declared once, in :data:`cdco_core.config.METRICS_BY_TYPE`; a task's
main metric is ``TaskSpec.metric_name`` (the spec's ``metric``, else the first allowed for its type).
Every score is in "higher is better" form.

Formulas (N examples, K classes, C the confusion matrix with rows = truth, columns = prediction):
    accuracy  = (1/N) sum_i [y_i == p_i]
    macro-F1  = mean over classes k present in y or p of 2 C_kk / (sum_j C_kj + sum_j C_jk)
    F1        = 2 C_11 / (sum_j C_1j + sum_j C_j1)   binary, label id 1 the positive class (GLUE's MRPC F1)
    MCC       = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2))   (Gorodkin's R_K)
                with c = trace(C), s = N, t_k = sum_j C_kj (true counts), p_k = sum_j C_jk (predicted counts)
    Pearson   = cov(y, p) / (sd(y) sd(p))
    Spearman  = Pearson of the average ranks of y and p (ties share the mean rank)
A zero denominator (constant predictions or labels) scores 0, as scikit-learn does for MCC: no
association can be measured, and NaN would poison averages over tasks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cdco_core.data.spec import METRICS_BY_TYPE, OPT_IN_METRICS, TaskSpec
from cdco_core.errors import InputError


class MetricError(InputError):
    """A metric that does not exist or does not fit the task's type."""


def _as_1d(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {y.shape[0]} vs {p.shape[0]}")
    if y.size == 0:
        raise ValueError("cannot score zero examples")
    return y, p


def _confusion(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(K, K) confusion matrix over the classes present in y or p (rows truth, columns prediction)."""
    classes, inv = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = len(classes)
    yi, pi = inv[: len(y)], inv[len(y):]
    return np.bincount(yi * k + pi, minlength=k * k).reshape(k, k)


def accuracy(y_true, y_pred) -> float:
    """Share of exact matches. Args are 1-d arrays of class ids (or option indices)."""
    y, p = _as_1d(y_true, y_pred)
    return float(np.mean(y == p))


def macro_f1(y_true, y_pred) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    y, p = _as_1d(y_true, y_pred)
    c = _confusion(y, p).astype(np.float64)
    tp = np.diag(c)
    denom = c.sum(axis=1) + c.sum(axis=0)  # (K,) = 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def f1(y_true, y_pred) -> float:
    """Binary F1 of the positive class (label id 1), as GLUE reports for MRPC; 0 when it is never true or predicted.

    Raises:
        ValueError: a label or prediction other than 0 and 1 (the metric is for two-class tasks).
    """
    y, p = _as_1d(y_true, y_pred)
    if not (np.isin(y, (0, 1)).all() and np.isin(p, (0, 1)).all()):
        raise ValueError("f1 is the binary F1 of label 1: labels and predictions must be 0 or 1 (use macro_f1)")
    tp = float(np.sum((y == 1) & (p == 1)))
    denom = float(np.sum(y == 1) + np.sum(p == 1))  # 2TP + FP + FN
    return 2 * tp / denom if denom > 0 else 0.0


def mcc(y_true, y_pred) -> float:
    """Matthews correlation, multi-class form (Gorodkin 2004); 0 when undefined."""
    y, p = _as_1d(y_true, y_pred)
    c = _confusion(y, p).astype(np.float64)
    t_k, p_k = c.sum(axis=1), c.sum(axis=0)
    s, correct = c.sum(), np.trace(c)
    cov_yp = correct * s - p_k @ t_k
    denom = np.sqrt((s * s - p_k @ p_k) * (s * s - t_k @ t_k))
    return float(cov_yp / denom) if denom > 0 else 0.0


def pearson(y_true, y_pred) -> float:
    """Pearson correlation of two real vectors; 0 when either is constant."""
    y, p = _as_1d(y_true, y_pred)
    y, p = y.astype(np.float64) - y.mean(), p.astype(np.float64) - p.mean()
    denom = np.sqrt((y @ y) * (p @ p))
    return float(np.clip((y @ p) / denom, -1.0, 1.0)) if denom > 0 else 0.0


def _avg_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the mean of the ranks they span (as scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first index of each run of equal values
    ends = np.r_[starts[1:], len(xs)]
    run_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation: Pearson on average ranks; 0 when either is constant."""
    y, p = _as_1d(y_true, y_pred)
    return pearson(_avg_ranks(y), _avg_ranks(p))


METRIC_FUNCS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "mcc": mcc,
    "f1": f1,
    "pearson": pearson,
    "spearman": spearman,
}


def check_metric(task: str, task_type: str, metric: str) -> None:
    """Raise :class:`MetricError` unless ``metric`` exists and fits ``task_type``.

    Raises:
        MetricError: names the task, the metric, its type and the metrics allowed for that type.
    """
    if task_type not in METRICS_BY_TYPE:
        raise MetricError(f"task {task!r}: unknown task type {task_type!r}; known: {', '.join(METRICS_BY_TYPE)}")
    allowed = METRICS_BY_TYPE[task_type]
    if metric not in allowed:
        raise MetricError(
            f"task {task!r}: metric {metric!r} does not fit type {task_type!r}; allowed: {', '.join(allowed)}"
        )


def task_metric_names(spec: TaskSpec) -> list[str]:
    """The task's main metric first, then every other metric that fits its type.

    Raises:
        MetricError: the spec's metric does not fit its type.
    """
    main = spec.metric_name
    check_metric(spec.name, spec.type, main)
    # opt-in metrics (binary f1) only as a task's main metric: they do not fit every task of the type
    return [main] + [m for m in METRICS_BY_TYPE[spec.type] if m != main and m not in OPT_IN_METRICS]


def score(task: str, task_type: str, metric: str, y_true, y_pred) -> float:
    """One metric, after checking that it fits the task type."""
    check_metric(task, task_type, metric)
    return METRIC_FUNCS[metric](y_true, y_pred)


def score_task(spec: TaskSpec, y_true, y_pred) -> dict[str, float]:
    """Every metric that fits the task, main metric first (dicts keep insertion order)."""
    return {m: METRIC_FUNCS[m](y_true, y_pred) for m in task_metric_names(spec)}
