"""Sampler classes: task-level samplers (proportional, temperature, uniform) and the batch-level base class.

The formulas and the registry are in :mod:`cdco_core.samplers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from cdco_core.errors import InputError


def _check_sizes(sizes: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(sizes)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"task sizes must be a non-empty list of counts, got {sizes!r}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise InputError(f"task sizes must be integer row counts, got {sizes!r}")
    if np.any(arr < 1):
        bad = [int(i) for i in np.flatnonzero(arr < 1)]
        raise InputError(f"every task needs at least one training row; tasks at positions {bad} have {arr[bad]}")
    return arr.astype(np.float64)


class TaskSampler:
    """Base class: ``probabilities`` from ``log_weights``; ``setup`` fixes them; ``next_task`` draws one index."""

    name: ClassVar[str] = ""
    batch_level: ClassVar[bool] = False

    def __init__(self) -> None:
        self._sizes: list[int] | None = None
        self._probs: np.ndarray | None = None
        self._counts: list[int] = []

    def log_weights(self, sizes: np.ndarray) -> np.ndarray:
        """Unnormalised log-probabilities (T,) for sizes (T,); subclasses override."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Constructor arguments, saved in the state so a resume with other settings is caught."""
        return {}

    def probabilities(self, sizes: Sequence[int] | np.ndarray) -> np.ndarray:
        """Task probabilities (T,) summing to 1, computed in log space (large sizes do not overflow)."""
        logw = self.log_weights(_check_sizes(sizes))  # (T,)
        w = np.exp(logw - logw.max())
        return w / w.sum()

    def setup(self, sizes: Sequence[int] | np.ndarray) -> None:
        """Fix the task sizes (training rows per task, in the trainer's task order) for ``next_task``."""
        self._probs = self.probabilities(sizes)
        self._sizes = [int(s) for s in np.asarray(sizes)]
        self._counts = [0] * len(self._sizes)

    def next_task(self, rng: np.random.Generator) -> int:
        """Draw the next task index with one ``rng.random()`` call (inverse CDF)."""
        if self._probs is None:
            raise RuntimeError(f"sampler {self.name!r}: call setup(sizes) or load_state_dict() first")
        cdf = np.cumsum(self._probs)
        idx = min(int(np.searchsorted(cdf, rng.random(), side="right")), len(cdf) - 1)  # guard rounding
        self._counts[idx] += 1
        return idx

    @property
    def counts(self) -> list[int]:
        """Draws per task so far (for logging how the mixture was actually sampled)."""
        return list(self._counts)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: name, constructor params, sizes and draw counts."""
        return {"name": self.name, "params": self.params(), "sizes": self._sizes, "counts": list(self._counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of a sampler built with the same name and params."""
        if state.get("name") != self.name or state.get("params") != self.params():
            raise InputError(
                f"checkpoint sampler {state.get('name')!r} {state.get('params')} does not match the configured "
                f"sampler {self.name!r} {self.params()}; resume with the configuration that wrote the checkpoint"
            )
        if state.get("sizes") is None:  # saved before setup()
            self._sizes, self._probs, self._counts = None, None, []
            return
        self.setup(state["sizes"])
        if len(state["counts"]) != len(self._counts):
            raise ValueError(f"sampler state has {len(state['counts'])} counts for {len(self._counts)} tasks")
        self._counts = [int(c) for c in state["counts"]]


class ProportionalSampler(TaskSampler):
    """``p_t = n_t / Σ_s n_s``: every training row equally likely; small tasks are seen rarely."""

    name = "proportional"

    def log_weights(self, sizes: np.ndarray) -> np.ndarray:
        return np.log(sizes)


class TemperatureSampler(TaskSampler):
    """``p_t ∝ n_t^{1/T}``: T = 1 is proportional, larger T flattens towards uniform."""

    name = "temperature"

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if not (isinstance(temperature, int | float) and 0 < temperature < float("inf")):
            raise InputError(f"train.sampler_temperature must be a finite number > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def log_weights(self, sizes: np.ndarray) -> np.ndarray:
        return np.log(sizes) / self.temperature


class UniformSampler(TaskSampler):
    """``p_t = 1 / #tasks``: small tasks are oversampled (and overfit sooner)."""

    name = "uniform"

    def log_weights(self, sizes: np.ndarray) -> np.ndarray:
        return np.zeros_like(sizes)


class BatchLevelSampler(TaskSampler):
    """Hook for samplers that choose rows, not tasks (CA-MTL's ``uncertainty``).

    The trainer draws one candidate batch from every task (``next_task`` is not used), scores each candidate
    row without gradients, and trains on ``select(candidates, scores, k)``. Subclasses compute their scores
    (e.g. normalised entropy scaled per task) and may override :meth:`select`; register with
    ``SAMPLERS.register(name, cls)`` in :mod:`cdco_core.samplers`. Extra state goes in
    ``state_dict``/``load_state_dict`` overrides calling super.
    """

    batch_level: ClassVar[bool] = True

    def log_weights(self, sizes: np.ndarray) -> np.ndarray:
        return np.zeros_like(sizes)

    def select(self, candidates: Sequence[int] | np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """Indices (k,) into ``candidates`` of the k highest scores, ties broken by position.

        Args:
            candidates: (N,) task index of each candidate row.
            scores: (N,) score per candidate row (higher = more useful to train on).
            k: rows to keep, 1 ≤ k ≤ N.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(candidates),):
            raise ValueError(f"select: scores {scores.shape} must be ({len(candidates)},), one per candidate")
        if not 1 <= k <= len(candidates):
            raise ValueError(f"select: k must be in [1, {len(candidates)}], got {k}")
        return np.argsort(-scores, kind="stable")[:k]
