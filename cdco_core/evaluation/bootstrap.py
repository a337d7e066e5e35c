"""Paired bootstrap over examples: is system A better than system B on the same examples and seeds?

For tasks t = 1..T (each with N_t held-out examples, labels y_t) and seeds s = 1..S, A and B predict every
example under every seed. The statistic is the difference of the seed-averaged main metric, averaged over
the tasks in scope (one task, a kind, or all):

    delta(I) = (1/T) sum_t (1/S) sum_s [ m_t(y_t[I_t], a_ts[I_t]) - m_t(y_t[I_t], b_ts[I_t]) ]

with I_t the example indices of task t. The observed value uses every example once. Each of the B bootstrap
replicates draws I_t* (N_t indices with replacement, independently per task, the same indices for A and B
and for every seed: that is what makes it paired) and computes delta* = delta(I*). Then

    CI      = [q_{alpha/2}(delta*), q_{1-alpha/2}(delta*)]                (percentile interval)
    p-value = (1 + #{b : |delta*_b - delta_hat| >= |delta_hat|}) / (B + 1)   (two-sided)

The p-value centres the bootstrap distribution on the null (shift method, Efron & Tibshirani 1993, 16.4;
Berg-Kirkpatrick et al. 2012 use the one-sided form): how often does resampling move delta by at least as
much as its observed distance from 0. Identical predictions give delta = 0 for every replicate and p = 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class PairedTask:
    """One task's labels and two systems' predictions on the same examples.

    Attributes:
        metric: the task's main metric, ``f(y_true, y_pred) -> float`` (higher is better).
        y_true: (N,) labels.
        preds_a: (S, N) predictions of system A, one row per seed.
        preds_b: (S, N) predictions of system B, the same seeds in the same order.
    """

    metric: MetricFn
    y_true: np.ndarray
    preds_a: np.ndarray
    preds_b: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.y_true)
        a, b = np.atleast_2d(self.preds_a), np.atleast_2d(self.preds_b)
        if a.shape != b.shape or a.shape[1] != n:
            raise ValueError(f"paired predictions must be (S, {n}) for both systems; got {a.shape} and {b.shape}")
        object.__setattr__(self, "preds_a", a)
        object.__setattr__(self, "preds_b", b)

    def delta(self, idx: np.ndarray | None = None) -> float:
        """Seed-averaged metric(A) - metric(B) on the examples ``idx`` (all when None)."""
        y = self.y_true if idx is None else self.y_true[idx]
        a = self.preds_a if idx is None else self.preds_a[:, idx]
        b = self.preds_b if idx is None else self.preds_b[:, idx]
        return float(np.mean([self.metric(y, a_s) - self.metric(y, b_s) for a_s, b_s in zip(a, b, strict=True)]))


@dataclass(frozen=True)
class BootstrapResult:
    """delta = mean metric(A) - metric(B); ``ci`` its percentile interval; ``p_value`` two-sided."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    samples: int
    examples: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def bootstrap_replicates(tasks: Sequence[PairedTask], samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-task observed deltas (T,) and bootstrap replicates (B, T).

    Replicate b draws every task's indices once, so any scope (a task, a kind, all tasks) is summarised
    from the same resamples: the scope's delta* is the mean of its tasks' columns.
    """
    observed = np.array([t.delta() for t in tasks], dtype=np.float64)  # (T,)
    rng = np.random.default_rng(seed)
    reps = np.empty((samples, len(tasks)), dtype=np.float64)  # (B, T)
    for b in range(samples):
        for j, t in enumerate(tasks):
            reps[b, j] = t.delta(rng.integers(0, len(t.y_true), size=len(t.y_true)))
    return observed, reps


def summarize(observed: float, reps: np.ndarray, examples: int, alpha: float = 0.05) -> BootstrapResult:
    """CI and two-sided p-value of one scope from its replicates (B,) (formulas in the module docstring)."""
    if len(reps) == 0:
        return BootstrapResult(float(observed), float("nan"), float("nan"), float("nan"), 0, examples)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    # tolerance: replicates equal to the observed value up to float noise count as "as extreme"
    extreme = np.abs(reps - observed) >= abs(observed) - 1e-12
    p = (1 + int(extreme.sum())) / (len(reps) + 1)
    return BootstrapResult(float(observed), float(lo), float(hi), float(p), len(reps), examples)


def paired_bootstrap(tasks: Sequence[PairedTask], samples: int, seed: int = 0, alpha: float = 0.05) -> BootstrapResult:
    """Paired bootstrap of A - B over the examples of ``tasks`` (formula in the module docstring).

    Args:
        tasks: one or more tasks in scope; the statistic averages their deltas.
        samples: number of bootstrap replicates B; 0 gives the observed delta with NaN CI and p-value.
        seed: seed of the resampling generator (same seed, same result).
        alpha: 1 - confidence level of the interval.

    Returns:
        BootstrapResult with delta, ci_low, ci_high, p_value, samples, examples.
    """
    if not tasks:
        raise ValueError("paired_bootstrap needs at least one task")
    if samples < 0 or not 0 < alpha < 1:
        raise ValueError(f"samples must be >= 0 and 0 < alpha < 1; got samples={samples}, alpha={alpha}")
    observed, reps = bootstrap_replicates(tasks, samples, seed)
    n_examples = sum(len(t.y_true) for t in tasks)
    return summarize(float(observed.mean()), reps.mean(axis=1), n_examples, alpha)
