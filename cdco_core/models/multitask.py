"""The multi-task model every method trains: encoder (+ adapters), one head per task, two projection heads.

``encode`` mean-pools the last hidden states (the same pooling ODMS uses for its embeddings)::

    pooled = Σ_t m_t h_t / max(1, Σ_t m_t)        h: (B, T, H), m: attention mask (B, T)

``task_ids`` may be None (OOD/KI evaluation has no task id): then the shared adapters are used, or, for
single-task adapters, the default set (see :attr:`MultiTaskModel.default_adapter`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cdco_core.errors import ConfigError
from cdco_core.models.adapters import activate_adapter, adapters_disabled, is_adapter_param, layer_index
from cdco_core.models.heads import HeadSpec, build_head
from cdco_core.models.pooling import mean_pool

if TYPE_CHECKING:
    from cdco_core.config import Config
    from cdco_core.data import TaskData
    from cdco_core.training.batches import Batch

PROJECTION_PREFIXES = ("euclidean_proj.", "poincare_proj.")


class MultiTaskModel(nn.Module):
    """Encoder with adapters, per-task heads and Euclidean / Poincaré projection heads.

    Args:
        encoder: the (adapter-wrapped) transformer; called with input_ids/attention_mask/token_type_ids or
            inputs_embeds, returns ``last_hidden_state``.
        head_specs: one per task, in task-id order.
        hidden_size: H of the pooled representation.
        layer_groups: group name -> layer indices (see :func:`cdco_core.models.adapters.resolve_groups`).
        proj_dim, curvature, learn_curvature: projection heads (see ``cdco_core.models.projection``).
        full_finetune: groups then select the encoder's own weights (``all`` adds the embeddings) instead of
            adapter weights.
        task_adapters: task name -> LoRA adapter set name, for one adapter set per task (single-task LoRA).
        default_adapter: adapter set used when ``task_ids`` is None.
        head_dropout: dropout before each task head.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head_specs: list[HeadSpec],
        hidden_size: int,
        layer_groups: dict[str, list[int]],
        proj_dim: int = 64,
        curvature: float = 1.0,
        learn_curvature: bool = False,
        full_finetune: bool = False,
        task_adapters: dict[str, str] | None = None,
        default_adapter: str | None = None,
        head_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        from cdco_core.models.projection import EuclideanProjection, PoincareProjection

        self.encoder = encoder
        self.head_specs = {s.name: s for s in head_specs}
        self.task_names: list[str] = [s.name for s in head_specs]
        self.heads = nn.ModuleDict({s.name: build_head(s, hidden_size, head_dropout) for s in head_specs})
        self.euclidean_proj = EuclideanProjection(hidden_size, proj_dim)
        self.poincare_proj = PoincareProjection(hidden_size, proj_dim, curvature, learn_curvature)
        self.hidden_size = hidden_size
        self.layer_groups = {k: list(v) for k, v in layer_groups.items()}
        self.full_finetune = full_finetune
        self.task_adapters = dict(task_adapters or {})
        self.default_adapter = default_adapter

    # ------------------------------------------------------------------------------------- forward
    def encode(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean-pooled representation (N, H). ``inputs_embeds`` (N, T, H) replaces the word embeddings."""
        if self.task_adapters:
            activate_adapter(self.encoder, self._adapter_for(task_ids))
        out = self.encoder(
            input_ids=None if inputs_embeds is not None else input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
        )
        return mean_pool(out.last_hidden_state, attention_mask)  # (N, H)

    def _adapter_for(self, task_ids: torch.Tensor | None) -> str:
        if task_ids is None:
            return self.default_adapter or next(iter(self.task_adapters.values()))
        ids = torch.unique(task_ids).tolist()
        if len(ids) != 1:
            raise ValueError("one adapter set per task needs single-task batches; got task ids " + str(ids))
        return self.task_adapters[self.task_names[ids[0]]]

    def word_embeddings(self) -> nn.Embedding:
        """The encoder's input word embeddings (for perturbations in embedding space)."""
        return self.encoder.get_input_embeddings()

    def head_logits(self, task: str, pooled: torch.Tensor) -> torch.Tensor:
        """Logits of ``task``'s head: (N, C), or (N, 1) for regression / one score per multiple-choice option."""
        if task not in self.heads:
            raise KeyError(f"no head for task {task!r}; heads: {', '.join(self.task_names)}")
        return self.heads[task](pooled)

    def batch_logits(self, batch: Batch, pooled: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per task in the batch: (row indices (R,), logits (R, C)); multiple choice gives (R, C) option scores.

        ``pooled`` is the encoding of ``batch``'s sequences ((B, H), or (B*C, H) for multiple choice).
        """
        out = {}
        for task in dict.fromkeys(batch.tasks):  # first-seen order, deterministic
            rows = torch.tensor([i for i, t in enumerate(batch.tasks) if t == task], device=pooled.device)
            if batch.choice_mask is not None:
                n_opt = batch.choice_mask.shape[1]
                seq = (rows[:, None] * n_opt + torch.arange(n_opt, device=pooled.device)[None]).reshape(-1)
                logits = self.head_logits(task, pooled[seq]).view(len(rows), n_opt)  # (R, C)
            else:
                logits = self.head_logits(task, pooled[rows])  # (R, C)
            out[task] = (rows, logits)
        return out

    def forward(self, batch: Batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Encode ``batch`` and return :meth:`batch_logits`."""
        pooled = self.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.task_ids)
        return self.batch_logits(batch, pooled)

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """The bare encoder (no adapter contributes) inside the block."""
        with adapters_disabled(self.encoder):
            yield

    # ------------------------------------------------------------------------------- trainability
    def group_parameter_names(self, group: str) -> list[str]:
        """Names of the parameters a stage trains for ``group``.

        Raises:
            ConfigError: unknown group name.
        """
        if group not in self.layer_groups:
            raise ConfigError(f"unknown adapter group {group!r}; defined: {', '.join(sorted(self.layer_groups))}")
        layers = set(self.layer_groups[group])
        names = []
        for name, _ in self.encoder.named_parameters():
            idx = layer_index(name)
            if self.full_finetune:
                # the embeddings (and anything outside the blocks) belong to "all" only
                if (idx in layers) or (idx is None and group == "all"):
                    names.append(f"encoder.{name}")
            elif is_adapter_param(name) and idx in layers:
                names.append(f"encoder.{name}")
        return names

    def set_trainable(self, groups: list[str], train_heads: bool) -> list[str]:
        """Freeze everything, then unfreeze the groups' parameters (and heads + projections if asked).

        Returns:
            The names of the trainable parameters.
        """
        wanted = {n for g in groups for n in self.group_parameter_names(g)}
        for name, p in self.named_parameters():
            is_head = name.startswith("heads.") or name.startswith(PROJECTION_PREFIXES)
            p.requires_grad_(name in wanted or (train_heads and is_head))
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def _is_saved(self, name: str) -> bool:
        if name.startswith("heads.") or name.startswith(PROJECTION_PREFIXES):
            return True
        return name.startswith("encoder.") and (self.full_finetune or is_adapter_param(name))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor training can change (adapters or, for full fine-tuning, the encoder; heads; projections).

        The frozen base encoder is not included: it is reloaded from its source.
        """
        return {k: v.detach().cpu().clone().contiguous() for k, v in self.state_dict().items() if self._is_saved(k)}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` returned.

        Raises:
            ValueError: keys missing or unexpected (a checkpoint of another method or model).
        """
        expected = {k for k in self.state_dict() if self._is_saved(k)}
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or extra:
            raise ValueError(f"checkpoint does not fit this model: missing {missing[:5]}, unexpected {extra[:5]}")
        self.load_state_dict(state, strict=False)


def build_multitask_model(
    cfg: Config,
    tasks: list[TaskData],
    adapter_type: str | None = None,
    full_finetune: bool = False,
    per_task_adapters: bool = False,
    default_task: str | None = None,
) -> tuple[MultiTaskModel, Any]:
    """Load the encoder, add adapters and build heads for ``tasks`` (in order).

    Args:
        cfg: the run's config (model, adapters, train sections).
        tasks: the training tasks, in task-id order.
        adapter_type: lora | bottleneck | none; default ``cfg.adapters.type``.
        full_finetune: train the encoder's own weights (with adapter_type "none").
        per_task_adapters: one LoRA adapter set per task, named after it.
        default_task: the task whose adapter set is used without task ids (per-task adapters only).

    Returns:
        (model in train mode with everything frozen, tokenizer).
    """
    from cdco_core.models.adapters import add_adapters, resolve_groups
    from cdco_core.models.encoder import load_encoder

    encoder, tokenizer, _ = load_encoder(cfg.model)
    kind = adapter_type or cfg.adapters.type
    names = [t.name for t in tasks] if per_task_adapters else None
    num_layers = encoder.config.num_hidden_layers
    groups = resolve_groups(cfg.adapters, num_layers)
    encoder = add_adapters(encoder, cfg.adapters, kind, names)
    specs = [HeadSpec.of(t) for t in tasks]
    model = MultiTaskModel(
        encoder, specs, encoder.config.hidden_size, groups,
        proj_dim=cfg.train.proj_dim, curvature=cfg.train.curvature, learn_curvature=cfg.train.learn_curvature,
        full_finetune=full_finetune,
        task_adapters={t.name: t.name for t in tasks} if per_task_adapters else None,
        default_adapter=default_task,
    )
    model.set_trainable([], train_heads=False)
    return model, tokenizer
