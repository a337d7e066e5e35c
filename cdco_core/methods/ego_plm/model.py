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
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cdco_core.methods.ego_plm.pretext import MlmHead
from cdco_core.models.multitask import MultiTaskModel


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
            views = [self._generate(h, every[t].expand(h.shape[0])) for t in range(self.n_tasks)]
            return torch.stack(views).mean(0)
        if task_ids.shape != h.shape[:1]:
            raise ValueError(f"task_ids must be (B,) = ({h.shape[0]},), got {tuple(task_ids.shape)}")
        bad = task_ids[(task_ids < 0) | (task_ids >= self.n_tasks)]
        if bad.numel():
            raise ValueError(
                f"task id {int(bad[0])} out of range: this generator has {self.n_tasks} tasks (0..{self.n_tasks - 1})"
            )
        return self._generate(h, task_ids)

    def _generate(self, h: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        z = F.layer_norm(h, (self.hidden,)).unsqueeze(1)  # (B, 1, H)
        mid = F.gelu(torch.bmm(z, self.down[task_ids]).squeeze(1) + self.down_bias[task_ids])  # (B, r)
        return h + torch.bmm(mid.unsqueeze(1), self.up[task_ids]).squeeze(1) + self.up_bias[task_ids]  # (B, H)


# ------------------------------------------------------------------------------------------ the model
def _head_without_dropout(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A head's output with its dropout skipped: CoCa compares two views, not two dropout draws."""
    for m in head.children() if isinstance(head, nn.Sequential) else [head]:
        if not isinstance(m, nn.Dropout):
            x = m(x)
    return x


class EgoPlmModel(MultiTaskModel):
    """The shared :class:`MultiTaskModel` (frozen PLM + shared adapters + heads) plus EGO-PLM's parts.

    * ``generator``: :class:`TaskEmbeddingGenerator`; :meth:`encode` returns e_t(x) with task ids and, without
      (OOD/KI evaluation), the view chosen by ``untasked_view`` ("agnostic": h(x)).
    * ``mlm_head``: the tied MLM head when the pre-defined task is MLM, else None.
    * ``embedding_scale``: mean L2 norm of the word embeddings, the unit of CoCa's ε and α.

    The generator and the MLM head train with the heads (``train_heads``) and are saved with them.
    """

    SAVED_PREFIXES = ("generator.", "mlm_head.")

    def __init__(self, *args: Any, generator_reduction: int, pretext: Literal["mlm", "contrastive"],
                 untasked_view: Literal["agnostic", "task_mean"], special_ids: list[int], mask_token_id: int,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # built after the heads, so the heads draw the same initial weights as lora_mtl's for the same seed
        self.generator = TaskEmbeddingGenerator(len(self.task_names), self.hidden_size, generator_reduction)
        table = self.word_embeddings().weight  # (V, H)
        self.pretext = pretext
        self.mlm_head = MlmHead(self.hidden_size, table.shape[0]) if pretext == "mlm" else None
        self.mlm_head_from_checkpoint = False  # set by the builder when the checkpoint had cls.predictions.*
        self.untasked_view = untasked_view
        self.special_ids = list(special_ids)
        self.mask_token_id = int(mask_token_id)
        with torch.no_grad():
            self.embedding_scale = float(table.norm(dim=-1).mean())

    def sequence_task_ids(self, task_ids: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """(B,) row task ids -> (N,) per sequence (multiple choice: each row's id repeated per option)."""
        if task_ids is None or task_ids.shape[0] == n:
            return task_ids
        if task_ids.dim() != 1 or n % task_ids.shape[0]:
            raise ValueError(f"{tuple(task_ids.shape)} task ids do not divide {n} sequences")
        return task_ids.repeat_interleave(n // task_ids.shape[0])

    def shared_encode(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                      token_type_ids: torch.Tensor | None = None,
                      inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """h(x) (N, H): the task-agnostic embedding the pre-defined task trains."""
        return super().encode(input_ids, attention_mask, token_type_ids, None, inputs_embeds)

    def encode(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None, task_ids: torch.Tensor | None = None,
               inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """e_t(x) (N, H) for each sequence's task; task_ids None -> :attr:`untasked_view`."""
        h = self.shared_encode(input_ids, attention_mask, token_type_ids, inputs_embeds)  # (N, H)
        return self.generator(h, self.sequence_task_ids(task_ids, h.shape[0]), self.untasked_view)

    def token_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden states (N, T, H) of the shared encoder (the MLM head reads them)."""
        return self.encoder(input_ids=None, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            inputs_embeds=inputs_embeds).last_hidden_state

    def clean_logits(self, task: str, pooled: torch.Tensor) -> torch.Tensor:
        """``task``'s head on ``pooled`` without its dropout (for CoCa's divergence)."""
        return _head_without_dropout(self.heads[task], pooled)

    def set_trainable(self, groups: list[str], train_heads: bool) -> list[str]:
        """As :meth:`MultiTaskModel.set_trainable`; the generator and MLM head follow ``train_heads``."""
        super().set_trainable(groups, train_heads)
        for name, p in self.named_parameters():
            if name.startswith(self.SAVED_PREFIXES):
                p.requires_grad_(train_heads)
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def _is_saved(self, name: str) -> bool:
        return name.startswith(self.SAVED_PREFIXES) or super()._is_saved(name)
