"""CA-MTL encoder: a Hugging Face BertModel run layer by layer with task-conditioned modules.

Layout (paper's base variant, sizes from ``methods.ca_mtl``), for an encoder of L layers and k frozen:

    embeddings (frozen) -> FiLM "conditional alignment"
    layers 0..k-1   frozen pretrained weights, + conditional attention bias
    layers k..L-1   trainable pretrained weights, + conditional attention bias + conditional layer norms
    top ``adapter_layers`` layers  + conditional bottleneck adapter

The BertModel is kept whole (its weights keep their names; ``self.bert`` can be saved or reloaded as usual);
this module calls its embeddings and, per layer, its sub-modules with the conditioning applied
(:class:`~cdco_core.methods.ca_mtl.modules.ConditionalLayer`). Works for any BertModel: MiniLM and the tiny
random BERT of the tests.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cdco_core.errors import ConfigError
from cdco_core.methods.ca_mtl.config import CaMtlConfig
from cdco_core.methods.ca_mtl.modules import (
    BlockDiagonalAttentionBias,
    ConditionalLayer,
    FiLM,
    TaskEmbedding,
)


def frozen_layer_count(num_layers: int, fraction: float) -> int:
    """Layers frozen from the bottom: ⌊fraction · L⌋ (0.5 of 6 -> 3, of 2 -> 1, of 3 -> 1)."""
    return int(math.floor(fraction * num_layers + 1e-9))


class CaMtlEncoder(nn.Module):
    """Task-conditioned wrapper of a BertModel; ``forward`` returns the last hidden states (B, T, H)."""

    def __init__(self, bert: nn.Module, num_tasks: int, settings: CaMtlConfig) -> None:
        super().__init__()
        if not hasattr(bert, "embeddings") or not hasattr(getattr(bert, "encoder", None), "layer"):
            raise ConfigError(
                f"CA-MTL needs a BERT-style encoder (embeddings + encoder.layer); got {type(bert).__name__}"
            )
        conf = bert.config
        hidden, num_layers = conf.hidden_size, conf.num_hidden_layers
        if settings.adapter_layers > num_layers:
            raise ConfigError(
                f"methods.ca_mtl.adapter_layers={settings.adapter_layers} exceeds the encoder's {num_layers} layers"
            )
        self.bert = bert
        self.settings = settings
        self.num_tasks = num_tasks
        self.num_frozen = frozen_layer_count(num_layers, settings.freeze_fraction)
        dim = settings.task_embedding_dim
        self.task_embedding = TaskEmbedding(num_tasks, dim)
        self.alignment = FiLM(dim, hidden) if settings.conditional_alignment else None
        adapter_size = settings.adapter_size or max(1, hidden // 3)
        self.conditional = nn.ModuleList(
            [
                ConditionalLayer(
                    hidden,
                    dim,
                    attention_bias=(
                        BlockDiagonalAttentionBias(dim, settings.attention_block_size, conf.max_position_embeddings)
                        if settings.conditional_attention
                        else None
                    ),
                    layer_norm=settings.conditional_layer_norm and i >= self.num_frozen,
                    adapter_size=adapter_size if i >= num_layers - settings.adapter_layers else None,
                )
                for i in range(num_layers)
            ]
        )
        self.freeze()

    @property
    def config(self):  # the wrapped model's config, for code that reads hidden_size etc.
        return self.bert.config

    def freeze(self) -> None:
        """Freeze the embeddings and the lowest ``num_frozen`` layers' pretrained weights; train the rest.

        The conditional modules (task embedding, generators, attention blocks, adapters) always train,
        including those attached to frozen layers, as in the paper.
        """
        for p in self.bert.embeddings.parameters():
            p.requires_grad_(self.num_frozen == 0)
        for i, layer in enumerate(self.bert.encoder.layer):
            for p in layer.parameters():
                p.requires_grad_(i >= self.num_frozen)
        for module in (self.task_embedding, self.alignment, self.conditional):
            if module is not None:
                for p in module.parameters():
                    p.requires_grad_(True)

    def conditioning(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """The transformed task embeddings (B, D) fed to every conditional module."""
        return self.task_embedding(task_ids, batch_size)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Last hidden states (B, T, H).

        Args:
            input_ids: (B, T) token ids, or None when ``inputs_embeds`` is given.
            attention_mask: (B, T), 1 for real tokens; None = all real.
            token_type_ids: (B, T) segment ids; None = all zero.
            task_ids: (B,) ids in [0, num_tasks); None = the mean task embedding for every row (OOD/KI).
            inputs_embeds: (B, T, H) word embeddings instead of ids (e.g. for input perturbations).

        Raises:
            ValueError: a task id out of range, or ids of the wrong shape or dtype.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        ref = input_ids if input_ids is not None else inputs_embeds
        b, t = ref.shape[0], ref.shape[1]
        cond = self.conditioning(task_ids, b)  # (B, D)
        hidden = self.bert.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds
        )  # (B, T, H)
        if self.alignment is not None:
            hidden = self.alignment(hidden, cond)
        if attention_mask is None:
            attention_mask = torch.ones(b, t, dtype=torch.long, device=hidden.device)
        # additive padding mask, broadcast over heads and query positions
        keep = attention_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, T)
        mask = torch.zeros(keep.shape, dtype=hidden.dtype, device=hidden.device)
        mask = mask.masked_fill(~keep, torch.finfo(hidden.dtype).min / 2)
        for layer, cond_layer in zip(self.bert.encoder.layer, self.conditional, strict=True):
            hidden = cond_layer(layer, hidden, mask, cond)
        return hidden
