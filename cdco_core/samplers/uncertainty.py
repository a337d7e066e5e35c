"""Multi-task uncertainty sampling (CA-MTL, section 2.3), registered as sampler ``uncertainty``.

Each step the trainer draws a candidate batch of b rows from EVERY task, runs the model without gradients and
asks this sampler which b of the T·b candidates to train on:

    u_i   = H(p_i) / log C_i                      normalised entropy of row i's prediction (C_i classes/options)
    ū_t   = mean of u_i over task t's candidates
    s_i   = u_i · ū_{t(i)} / max_t ū_t            scaled by how uncertain its task is, relative to the most uncertain
    keep  = the b rows with the largest s_i

Rows the model is unsure of, from tasks it is unsure of, get the updates; confident rows are skipped, which is
why the paper trains on "about 66%" of the data. :attr:`UncertaintySampler.used_fraction` reports our number.

Regression rows have no predictive distribution (C = 1). The reference copies MRPC's entropies onto STS-B; we
give each regression row the mean u of the step's non-regression candidates (0.5 if there are none), so a
regression task competes as an "average" task instead of never being picked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cdco_core.samplers.base import BatchLevelSampler


def normalized_entropy(logits: torch.Tensor, option_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy of softmax(logits) divided by its maximum, log C, per row; in [0, 1].

    Args:
        logits: (B, C) scores over C classes (or options).
        option_mask: (B, C) bool, False for padded options (multiple choice with fewer than C options);
            C is then counted per row.

    Returns:
        (B,) float tensor; rows with a single class or option get NaN (no distribution to measure).
    """
    if logits.dim() != 2:
        raise ValueError(f"normalized_entropy expects logits (B, C), got shape {tuple(logits.shape)}")
    logits = logits.detach().float()
    if option_mask is None:
        option_mask = torch.ones_like(logits, dtype=torch.bool)
    logits = logits.masked_fill(~option_mask, float("-inf"))
    logp = torch.log_softmax(logits, dim=-1)  # (B, C)
    plogp = torch.where(option_mask, logp.exp() * logp, torch.zeros_like(logp))
    entropy = -plogp.sum(dim=-1)  # (B,)
    n = option_mask.sum(dim=-1).float()  # (B,)
    max_entropy = torch.log(n.clamp(min=1.0))
    return torch.where(n > 1, entropy / max_entropy.clamp(min=1e-12), torch.full_like(entropy, float("nan")))


class UncertaintySampler(BatchLevelSampler):
    """CA-MTL's batch-level sampler: keep the k candidates with the highest task-scaled normalised entropy.

    The trainer (``BatchSource.next_batch``) calls :meth:`score_rows` on the concatenated candidate batch, then
    ``select(task_of_row, scores, k)``. ``scores`` are normalised entropies (NaN marks a regression row).

    It also counts what it saw, for reporting (:meth:`report`): ``drawn``/``kept`` rows per task and the distinct
    training rows (by example id) that took part in an update, hence :attr:`used_fraction`. The ids come from
    the candidate batch seen by :meth:`score_rows`, matched to :meth:`select`'s indices; a caller that selects
    without scoring can pass them with :meth:`record_ids`.
    """

    name = "uncertainty"

    def __init__(self, score_dtype: str = "auto") -> None:
        super().__init__()
        # "auto": the scoring pass under bfloat16 autocast where the hardware runs bf16 natively, else float32
        self.score_dtype = score_dtype
        self.drawn: list[int] = []
        self.kept: list[int] = []
        self._used: list[set[str]] = []  # per task: example ids that were in a kept row
        self._pending: tuple[np.ndarray, list[str]] | None = None  # (task ids, example ids) of the last scoring

    def setup(self, sizes: Sequence[int] | np.ndarray) -> None:
        super().setup(sizes)
        self.drawn = [0] * len(self._sizes)
        self.kept = [0] * len(self._sizes)
        self._used = [set() for _ in self._sizes]
        self._pending = None

    @torch.inference_mode()
    def score_rows(self, model: Any, batch: Any) -> np.ndarray:
        """u_i (B,) for a candidate batch: normalised entropy of each row's prediction under ``model``.

        Runs without gradients and in eval mode (no dropout noise in the uncertainty), restoring the mode.
        Each task's candidates are encoded on their own, cut to their own longest row, so a task of short texts
        is not padded to another task's long ones (the encodings are the same; only padding work goes), under
        bf16 autocast where :attr:`score_dtype` and the hardware allow. Regression rows get NaN (filled in
        :meth:`scaled_scores`).
        """
        from cdco_core.odms.embed import resolve_dtype

        was_training = model.training
        model.eval()
        device = batch.input_ids.device
        low = resolve_dtype(self.score_dtype, device.type) == torch.bfloat16
        try:
            u = np.full(len(batch), np.nan)
            for task in dict.fromkeys(batch.tasks):
                if model.head_specs[task].type == "regression":
                    continue
                rows = [i for i, t in enumerate(batch.tasks) if t == task]
                sub = batch.select(rows).trimmed()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=low):
                    pooled = model.encode(sub.input_ids, sub.attention_mask, sub.token_type_ids, sub.task_ids)
                    (_, logits), = model.batch_logits(sub, pooled).values()
                mask = sub.choice_mask
                u[rows] = normalized_entropy(logits.float(), mask).cpu().numpy()
        finally:
            model.train(was_training)
        self._pending = (batch.task_ids.cpu().numpy().copy(), list(batch.example_ids))
        return u

    def scaled_scores(self, candidates: Sequence[int] | np.ndarray, scores: np.ndarray) -> np.ndarray:
        """s_i = u_i · ū_{t(i)} / max_t ū_t (N,), with regression rows (NaN) filled by the classification mean."""
        tasks = np.asarray(candidates, dtype=np.int64)
        u = np.asarray(scores, dtype=np.float64).copy()
        if u.shape != tasks.shape:
            raise ValueError(f"scores {u.shape} must match candidates {tasks.shape}, one per candidate row")
        nan = np.isnan(u)
        if nan.any():
            u[nan] = float(u[~nan].mean()) if (~nan).any() else 0.5
        task_mean = {int(t): float(u[tasks == t].mean()) for t in np.unique(tasks)}
        top = max(task_mean.values())
        if top <= 0.0:  # every candidate fully confident: nothing to scale by, rank by u (all equal)
            return u
        return u * np.array([task_mean[int(t)] for t in tasks]) / top

    def select(self, candidates: Sequence[int] | np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """Indices (k,) of the kept candidates, highest scaled entropy first (ties: earlier row first)."""
        scaled = self.scaled_scores(candidates, scores)
        keep = super().select(candidates, scaled, k)
        tasks = np.asarray(candidates, dtype=np.int64)
        if self._sizes is not None:
            for t, n in zip(*np.unique(tasks, return_counts=True), strict=True):
                self.drawn[int(t)] += int(n)
            for t in tasks[keep]:
                self.kept[int(t)] += 1
            pending, self._pending = self._pending, None
            if pending is not None and np.array_equal(pending[0], tasks) and len(pending[1]) == len(tasks):
                for i in keep:
                    self._used[int(tasks[i])].add(pending[1][i])
        return keep

    def record_ids(self, task: int, example_ids: Sequence[str]) -> None:
        """Note that rows ``example_ids`` of task ``task`` were trained on."""
        if self._sizes is None or not 0 <= task < len(self._sizes):
            raise ValueError(f"record_ids: task {task} is not one of the {len(self._sizes or [])} set-up tasks")
        self._used[task].update(str(i) for i in example_ids)

    @property
    def used_fraction(self) -> float | None:
        """Distinct training rows used for an update / all training rows; None before any was recorded."""
        if self._sizes is None or not any(self._used):
            return None
        return sum(len(u) for u in self._used) / float(sum(self._sizes))

    @property
    def kept_fraction(self) -> float | None:
        """Rows trained on / rows scored (1/T per step with T tasks and b candidates each)."""
        total = sum(self.drawn)
        return sum(self.kept) / total if total else None

    def report(self) -> dict[str, Any]:
        """JSON-able summary: rows drawn/kept and distinct rows used per task, kept and used fractions."""
        used = self.used_fraction
        return {
            "drawn": list(self.drawn),
            "kept": list(self.kept),
            "used_rows": [len(u) for u in self._used],
            "task_rows": list(self._sizes or []),
            "kept_fraction": None if self.kept_fraction is None else round(self.kept_fraction, 6),
            "used_fraction": None if used is None else round(used, 6),
        }

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(drawn=list(self.drawn), kept=list(self.kept), used=[sorted(u) for u in self._used])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self._sizes is not None:
            self.drawn = [int(x) for x in state.get("drawn", [0] * len(self._sizes))]
            self.kept = [int(x) for x in state.get("kept", [0] * len(self._sizes))]
            self._used = [set(u) for u in state.get("used", [[] for _ in self._sizes])]
