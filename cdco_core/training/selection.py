"""Best checkpoint and early stopping on the ID dev splits (``train.dev_select``), for one training stage.

Every ``every`` steps, and at the stage's last step, :meth:`DevSelection.check` scores the trained heads on the
ID tasks' dev splits (carved from train by ``data.dev_fraction``; never a reported split):

    score = mean over ID tasks t of main_metric_t(dev_t)        (a metric that is undefined counts as 0)

It remembers the best score, its step and a copy of the trainable tensors (the first of equal scores wins), and
counts the checks since the best. The trainer stops the stage once that count reaches ``patience``; at the end
:meth:`DevSelection.finish` loads the best weights when ``keep_best`` (and they are not the last ones already).
The state travels in the stage's checkpoints, so a resumed stage selects exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

Scorer = Callable[[Any], tuple[float, dict[str, float]]]  # model -> (score, {task: main metric})
PREFIX = "best/"  # the best tensors' names in a checkpoint's state.safetensors


class DevSelection:
    """One stage's dev checks (see the module docstring)."""

    def __init__(self, scorer: Scorer, every: int, steps: int, patience: int | None = None,
                 keep_best: bool = True) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.scorer, self.every, self.steps = scorer, every, steps
        self.patience, self.keep_best = patience, keep_best
        self.curve: list[dict[str, Any]] = []  # {"step", "score", "per_task"} per check
        self.best_step: int | None = None
        self.best_score = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.since_best = 0

    def due(self, done: int) -> bool:
        """Whether to check after ``done`` steps of the stage."""
        return done % self.every == 0 or done == self.steps

    def check(self, model: Any, done: int) -> bool:
        """Score the dev splits after ``done`` steps; True when the stage should stop (patience used up)."""
        score, per_task = self.scorer(model)
        self.curve.append({"step": done, "score": score, "per_task": per_task})
        if score > self.best_score:
            self.best_score, self.best_step, self.since_best = score, done, 0
            self.best_state = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        else:
            self.since_best += 1
        return self.patience is not None and self.since_best >= self.patience

    def finish(self, model: Any, last_step: int) -> dict[str, Any]:
        """End the stage: load the best weights when ``keep_best``; returns the record for the stage's meta."""
        restored = bool(self.keep_best and self.best_state is not None and self.best_step != last_step)
        if restored:
            model.load_trainable_state_dict(self.best_state)
        return {"curve": self.curve, "best_step": self.best_step,
                "best_score": self.best_score if self.best_state is not None else None,
                "last_step": last_step, "stopped_early": last_step < self.steps,
                "kept": "best" if restored else "last"}

    # ------------------------------------------------------------------------------------- checkpoint
    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(JSON state, tensors) for a checkpoint."""
        tensors = {PREFIX + k: v for k, v in (self.best_state or {}).items()}
        return ({"curve": self.curve, "best_step": self.best_step,
                 "best_score": None if self.best_state is None else self.best_score,
                 "since_best": self.since_best}, tensors)

    def load_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.curve = list(state["curve"])
        self.best_step, self.since_best = state["best_step"], int(state["since_best"])
        self.best_score = -math.inf if state["best_score"] is None else float(state["best_score"])
        best = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        self.best_state = best or None


def mean_main_metric(per_task: dict[str, float]) -> float:
    """The stage's dev score: the mean of the tasks' main metrics, an undefined (NaN) one counting as 0."""
    return float(np.mean([0.0 if not math.isfinite(v) else v for v in per_task.values()]))
