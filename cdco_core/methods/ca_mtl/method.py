"""CA-MTL as a :class:`~cdco_core.methods.base.Method` on the shared trainer.

- model: :class:`~cdco_core.methods.ca_mtl.model.CaMtlModel` (no LoRA/bottleneck adapters of our own kind:
  CA-MTL's conditional modules are its adapters; the lower ``freeze_fraction`` of the encoder is frozen).
- schedule: the base one (a single task-loss stage on ``all`` with the profile's total step budget), so CA-MTL
  takes as many steps as every baseline.
- sampler: ``uncertainty`` (:mod:`cdco_core.samplers.uncertainty`), the paper's multi-task uncertainty sampling.
- loss: as the reference code computes it: each task's mean loss over its kept rows, then the unweighted mean over
  the tasks present in the batch (``torch.stack(loss_list).mean()`` in its ``CaMtl.forward``), not the shared
  row-weighted mean, so a task the sampler keeps few rows of still weighs 1/T. Each row's task embedding conditions
  the encoder.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from cdco_core.methods.base import Method

if TYPE_CHECKING:
    import torch

    from cdco_core.config import Config, StageConfig
    from cdco_core.data import TaskData
    from cdco_core.methods.base import StepContext
    from cdco_core.methods.ca_mtl.config import CaMtlConfig
    from cdco_core.methods.ca_mtl.model import CaMtlModel
    from cdco_core.training.batches import Batch


class CaMtlMethod(Method):
    """Conditionally adaptive multi-task learning (Pilault et al., 2021)."""

    name = "ca_mtl"
    settings: CaMtlConfig
    description = "CA-MTL: task-conditioned attention/layer norm/alignment/adapter, half-frozen encoder"
    sampler = "uncertainty"
    adapter_type = "none"

    def param_groups(
        self, model: CaMtlModel, params: list[torch.nn.Parameter], stage: StageConfig
    ) -> list[dict[str, Any]]:
        """Two optimizer groups: pretrained encoder weights at ``stage.lr · encoder_lr_scale``, the rest
        (conditional modules, heads, projections) at ``stage.lr``."""
        pretrained = {id(p) for n, p in model.named_parameters() if n.startswith("encoder.bert.")}
        scale = model.encoder.settings.encoder_lr_scale
        base = [p for p in params if id(p) in pretrained]
        new = [p for p in params if id(p) not in pretrained]
        groups = [{"params": new, "lr": stage.lr}] if new else []
        if base:
            groups.append({"params": base, "lr": stage.lr * scale})
        return groups

    def loss_terms(
        self, model: CaMtlModel, batch: Batch, stage: StageConfig, ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        """``{"task": mean of the per-task losses}`` on the kept rows (:func:`mean_task_loss`), padding trimmed.

        The kept rows come out of the T·b candidates padded to the longest candidate; cutting the columns no kept
        row uses changes no real token's output (the encoder is padding-invariant) and saves their compute.
        """
        batch = trim_padding(batch)
        pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.task_ids)
        return {"task": mean_task_loss(model, batch, pooled)}

    def build_model(self, cfg: Config, tasks: list[TaskData]) -> tuple[CaMtlModel, Any]:
        """(CaMtlModel with everything frozen until the trainer's ``set_trainable``, tokenizer).

        Raises:
            ConfigError: a bad ``methods.ca_mtl`` key, or a non-BERT encoder.
        """
        from cdco_core.methods.ca_mtl.model import CaMtlEncoder, CaMtlModel
        from cdco_core.models.adapters import resolve_groups
        from cdco_core.models.encoder import load_encoder
        from cdco_core.models.heads import HeadSpec

        settings = self.settings
        bert, tokenizer, _ = load_encoder(cfg.model)
        encoder = CaMtlEncoder(bert, len(tasks), settings)
        groups = resolve_groups(cfg.adapters, bert.config.num_hidden_layers)
        specs = [HeadSpec.of(t) for t in tasks]
        model = CaMtlModel(
            encoder,
            specs,
            bert.config.hidden_size,
            groups,
            proj_dim=cfg.train.proj_dim,
            curvature=cfg.train.curvature,
            learn_curvature=cfg.train.learn_curvature,
        )
        model.set_trainable([], train_heads=False)
        return model, tokenizer


def mean_task_loss(model: CaMtlModel, batch: Batch, pooled: torch.Tensor) -> torch.Tensor:
    """The reference's multi-task loss: the unweighted mean of the per-task mean losses of the batch.

        L = (1/T_b) Σ_{t ∈ batch} L_t,   L_t = (1/R_t) Σ_{i ∈ t} ℓ(f_t(x_i), y_i)

    with T_b the tasks present and R_t task t's rows (the shared trainer's loss weighs L_t by R_t / B instead).

    Args:
        model: the multi-task model (its heads give each task's logits).
        batch: the kept rows, any mix of tasks.
        pooled: the batch's encoding, (B, H) or (B*C, H) for multiple choice.

    Returns:
        A scalar tensor.
    """
    import torch

    from cdco_core.losses import task_loss

    losses = []
    for task, (rows, logits) in model.batch_logits(batch, pooled).items():
        spec = model.head_specs[task]
        labels = batch.labels[rows] if spec.type == "regression" else batch.labels[rows].long()
        mask = batch.choice_mask[rows] if batch.choice_mask is not None else None
        losses.append(task_loss(spec.type, logits, labels, choice_mask=mask, class_weights=spec.class_weights))
    return torch.stack(losses).mean()


def trim_padding(batch: Batch) -> Batch:
    """``batch`` without the trailing columns that are padding in every sequence."""
    width = int(batch.attention_mask.sum(dim=1).max()) if len(batch) else 0
    if width == 0 or width >= batch.input_ids.shape[1]:
        return batch
    return dataclasses.replace(
        batch,
        input_ids=batch.input_ids[:, :width],
        attention_mask=batch.attention_mask[:, :width],
        token_type_ids=batch.token_type_ids[:, :width],
    )
