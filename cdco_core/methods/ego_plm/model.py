"""EGO-PLM's task-specific embedding generator.

The shared encoder (frozen PLM + shared LoRA adapters, mean pooled) gives the task-agnostic embedding
``h(x)`` that the pre-defined task trains. A small per-task residual bottleneck turns it into the
embedding task t's head reads:

    e_t(x) = h(x) + U_t GELU(D_t LN(h(x)) + b_t) + c_t,     D_t ∈ R^{H×r}, U_t ∈ R^{r×H}, r = H / reduction

U_t and c_t start at zero, so every generator starts as the identity: at step 0 the task view equals the
pre-defined view and CoCa's disagreement is 0; task losses then pull each e_t away from h, and CoCa pulls
back wherever the head would read the two differently.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class TaskEmbeddingGenerator(nn.Module):
    """Per-task residual bottlenecks, stored stacked so a batch mixing tasks is one batched matmul."""

    def __init__(self, n_tasks: int, hidden: int, reduction: int = 4) -> None:
        super().__init__()
        if n_tasks < 1:
            raise ValueError(f"TaskEmbeddingGenerator needs at least one task, got n_tasks={n_tasks}")
        rank = max(1, hidden // reduction)
        self.n_tasks, self.hidden, self.rank = n_tasks, hidden, rank
        self.down = nn.Parameter(torch.randn(n_tasks, hidden, rank) / math.sqrt(hidden))  # (N, H, r)
        self.down_bias = nn.Parameter(torch.zeros(n_tasks, rank))  # (N, r)
        self.up = nn.Parameter(torch.zeros(n_tasks, rank, hidden))  # (N, r, H): identity at start
        self.up_bias = nn.Parameter(torch.zeros(n_tasks, hidden))  # (N, H)

    def forward(
        self,
        h: torch.Tensor,  # (B, H) task-agnostic embedding
        task_ids: torch.Tensor | None,  # (B,) long, or None
        untasked_view: Literal["agnostic", "task_mean"] = "agnostic",
    ) -> torch.Tensor:
        """Return e_t(x) (B, H) for each row's task; without task ids, h or the mean over every task's e_t."""
        if task_ids is None:
            if untasked_view == "agnostic":
                return h
            every = torch.arange(self.n_tasks, device=h.device)
            views = [self._apply(h, every[t].expand(h.shape[0])) for t in range(self.n_tasks)]
            return torch.stack(views).mean(0)
        if task_ids.shape != h.shape[:1]:
            raise ValueError(f"task_ids must be (B,) = ({h.shape[0]},), got {tuple(task_ids.shape)}")
        bad = task_ids[(task_ids < 0) | (task_ids >= self.n_tasks)]
        if bad.numel():
            raise ValueError(
                f"task id {int(bad[0])} out of range: this generator has {self.n_tasks} tasks (0..{self.n_tasks - 1})"
            )
        return self._apply(h, task_ids)

    def _apply(self, h: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        z = F.layer_norm(h, (self.hidden,)).unsqueeze(1)  # (B, 1, H)
        mid = F.gelu(torch.bmm(z, self.down[task_ids]).squeeze(1) + self.down_bias[task_ids])  # (B, r)
        return h + torch.bmm(mid.unsqueeze(1), self.up[task_ids]).squeeze(1) + self.up_bias[task_ids]  # (B, H)
