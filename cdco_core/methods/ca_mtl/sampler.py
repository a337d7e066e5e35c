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

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cdco_core.samplers import BatchLevelSampler, register_sampler


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


@register_sampler("uncertainty")
class UncertaintySampler(BatchLevelSampler):
    """CA-MTL's batch-level sampler: keep the k candidates with the highest task-scaled normalised entropy.

    ``select(candidates, scores, k)`` takes the candidates' task indices and their normalised entropies
    (:func:`normalized_entropy`; NaN marks a regression row). It also counts what it saw, for reporting:
    ``drawn``/``kept`` rows per task, and, when the trainer passes row ids with :meth:`record_ids`, the share of
    distinct training rows that took part in an update (:attr:`used_fraction`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.drawn: list[int] = []
        self.kept: list[int] = []
        self._used: list[np.ndarray] = []  # per task, (n_t,) bool: row took part in an update

    def setup(self, sizes: Sequence[int] | np.ndarray) -> None:
        super().setup(sizes)
        self.drawn = [0] * len(self._sizes)
        self.kept = [0] * len(self._sizes)
        self._used = [np.zeros(n, dtype=bool) for n in self._sizes]

    @torch.no_grad()
    def score(self, model: Any, batch: Any) -> np.ndarray:
        """u_i (B,) for a candidate batch: normalised entropy of each row's prediction under ``model``.

        Runs without gradients and in eval mode (no dropout noise in the uncertainty), restoring the mode.
        Regression rows get NaN (filled in :meth:`scaled_scores`).
        """
        was_training = model.training
        model.eval()
        try:
            pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.task_ids)
            u = np.full(len(batch), np.nan)
            for task, (rows, logits) in model.batch_logits(batch, pooled).items():
                if model.head_specs[task].type == "regression":
                    continue
                mask = batch.choice_mask[rows] if batch.choice_mask is not None else None
                u[rows.cpu().numpy()] = normalized_entropy(logits, mask).cpu().numpy()
        finally:
            model.train(was_training)
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
        present = np.unique(tasks)
        task_mean = {int(t): float(u[tasks == t].mean()) for t in present}
        top = max(task_mean.values())
        if top <= 0.0:  # every candidate fully confident: nothing to scale by, rank by u (all equal)
            return u
        return u * np.array([task_mean[int(t)] for t in tasks]) / top

    def select(self, candidates: Sequence[int] | np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """Indices (k,) of the kept candidates, highest scaled entropy first (ties: earlier row first)."""
        scaled = self.scaled_scores(candidates, scores)
        keep = super().select(candidates, scaled, k)
        if self._sizes is not None:
            tasks = np.asarray(candidates, dtype=np.int64)
            for t, n in zip(*np.unique(tasks, return_counts=True), strict=True):
                self.drawn[int(t)] += int(n)
            for t in tasks[keep]:
                self.kept[int(t)] += 1
        return keep

    def record_ids(self, task: int, row_ids: Sequence[int]) -> None:
        """Note that rows ``row_ids`` (positions in task ``task``'s training split) were trained on."""
        ids = np.asarray(row_ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self._used[task])):
            raise ValueError(f"row ids of task {task} must lie in [0, {len(self._used[task])}), got {ids.tolist()}")
        self._used[task][ids] = True

    @property
    def used_fraction(self) -> float | None:
        """Distinct training rows used for an update / all training rows; None before any ids were recorded."""
        if self._sizes is None or not any(u.any() for u in self._used):
            return None
        return sum(int(u.sum()) for u in self._used) / float(sum(self._sizes))

    @property
    def kept_fraction(self) -> float | None:
        """Rows trained on / rows scored (1/T per step with T tasks and b candidates each)."""
        total = sum(self.drawn)
        return sum(self.kept) / total if total else None

    def report(self) -> dict[str, Any]:
        """JSON-able summary for logs: drawn/kept per task, kept and used fractions."""
        used = self.used_fraction
        return {
            "drawn": list(self.drawn),
            "kept": list(self.kept),
            "kept_fraction": self.kept_fraction,
            "used_fraction": None if used is None else round(used, 6),
        }

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # bitmaps, base64: compact in a JSON checkpoint even for tasks of 1e5+ rows
        used = [base64.b64encode(np.packbits(u).tobytes()).decode("ascii") for u in self._used]
        state.update(drawn=list(self.drawn), kept=list(self.kept), used=used)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self._sizes is not None:
            self.drawn = [int(x) for x in state.get("drawn", [0] * len(self._sizes))]
            self.kept = [int(x) for x in state.get("kept", [0] * len(self._sizes))]
            for t, packed in enumerate(state.get("used", [])):
                bits = np.unpackbits(np.frombuffer(base64.b64decode(packed), dtype=np.uint8))
                self._used[t] = bits[: self._sizes[t]].astype(bool)
