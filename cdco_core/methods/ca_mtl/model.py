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

import contextlib
import math
from collections.abc import Iterator
from typing import Any

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
from cdco_core.models.multitask import PROJECTION_PREFIXES, MultiTaskModel
from cdco_core.models.pooling import mean_pool


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
        self.enabled = True  # False: the conditional modules are skipped (``CaMtlModel.adapters_disabled``)
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

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bert.get_input_embeddings()

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
        # what CA-MTL trains (and saves); the trainer's set_trainable works from this list
        self.trainable_names = [n for n, p in self.named_parameters() if p.requires_grad]

    @staticmethod
    def layer_of(name: str) -> int | None:
        """Encoder layer a parameter belongs to (base weights or conditional modules), None for shared ones."""
        parts = name.split(".")
        for key, pos in (("conditional", 1), ("layer", 1)):
            if key in parts:
                i = parts.index(key) + pos
                if i < len(parts) and parts[i].isdigit():
                    return int(parts[i])
        return None

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
        cond = self.conditioning(task_ids, b)  # (B, D); checks the ids even when disabled
        if not self.enabled:  # the bare BertModel (its current weights), no conditioning
            return self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                inputs_embeds=inputs_embeds,
            ).last_hidden_state
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


class CaMtlModel(MultiTaskModel):
    """The shared :class:`MultiTaskModel` around a :class:`CaMtlEncoder`.

    Differences: ``encode`` passes the task ids to the encoder (repeated per option for multiple choice);
    stage groups select CA-MTL's trainable parameters (upper layers and conditional modules, by layer; the
    task embedding and alignment belong to ``all``); checkpoints hold exactly those plus heads and projections;
    ``adapters_disabled`` runs the bare BertModel (no conditioning).
    """

    def __init__(self, encoder: CaMtlEncoder, *args: Any, **kwargs: Any) -> None:
        super().__init__(encoder, *args, **kwargs)
        self._saved = {f"encoder.{n}" for n in encoder.trainable_names}

    def encode(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean-pooled, task-conditioned representation (N, H); ``task_ids`` None = the mean task."""
        n = (inputs_embeds if inputs_embeds is not None else input_ids).shape[0]
        if task_ids is not None and task_ids.dim() == 1 and 0 < task_ids.shape[0] < n:
            if n % task_ids.shape[0]:
                raise ValueError(f"{task_ids.shape[0]} task ids do not divide {n} sequences")
            task_ids = task_ids.repeat_interleave(n // task_ids.shape[0])  # multiple choice: (B,) -> (B*C,)
        hidden = self.encoder(
            input_ids=None if inputs_embeds is not None else input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            task_ids=task_ids,
            inputs_embeds=inputs_embeds,
        )  # (N, T, H)
        return mean_pool(hidden, attention_mask)

    def word_embeddings(self) -> nn.Embedding:
        return self.encoder.get_input_embeddings()

    def group_parameter_names(self, group: str) -> list[str]:
        """CA-MTL's trainable parameters in ``group``'s layers (shared conditioning parameters: ``all``)."""
        if group not in self.layer_groups:
            raise ConfigError(f"unknown adapter group {group!r}; defined: {', '.join(sorted(self.layer_groups))}")
        layers = set(self.layer_groups[group])
        names = []
        for name in self.encoder.trainable_names:
            idx = CaMtlEncoder.layer_of(name)
            if idx in layers or (idx is None and group == "all"):
                names.append(f"encoder.{name}")
        return names

    def _is_saved(self, name: str) -> bool:
        return name.startswith(("heads.", *PROJECTION_PREFIXES)) or name in self._saved

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """The bare BertModel inside the block: no task embedding, FiLM, attention bias, CLN or adapter."""
        self.encoder.enabled = False
        try:
            yield
        finally:
            self.encoder.enabled = True
