"""EGO-PLM as a :class:`~cdco_core.methods.base.Method` on the shared trainer.

- model: :class:`~cdco_core.methods.ego_plm.model.EgoPlmModel`: the same frozen encoder + shared adapters
  (``cfg.adapters``, LoRA by default) and heads as ``lora_mtl``, plus the per-task generator and, for MLM
  backbones, the tied MLM head.
- schedule: one stage on ``all`` groups with the profile's total step budget (as every baseline), losses
  ``{task: 1, pretext: pretext_weight, consistency: consistency_weight}``.
- loss: :func:`~cdco_core.methods.ego_plm.loss.ego_plm_terms` (CoCa adversary, then the three terms under it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cdco_core.methods.base import Method
from cdco_core.methods.ego_plm.config import EgoPlmConfig

if TYPE_CHECKING:
    import torch

    from cdco_core.config import Config, StageConfig
    from cdco_core.data import TaskData
    from cdco_core.methods.base import StepContext
    from cdco_core.methods.ego_plm.model import EgoPlmModel
    from cdco_core.training.batches import Batch


class EgoPlmMethod(Method):
    """Task-specific embedding generation with consistency calibration (EGO-PLM, our reading)."""

    name = "ego_plm"
    settings: EgoPlmConfig
    description = "EGO-PLM: per-task embedding generator + pre-defined task (MLM/SimCSE) + adversarial CoCa"

    def stages(self, cfg: Config) -> list[StageConfig]:
        """One stage, same total steps as the profile's schedule (``steps``/``lr`` keys override)."""
        from cdco_core.config import StageConfig

        s = self.settings
        first = cfg.train.stages[0]
        losses = {"task": 1.0, "pretext": s.pretext_weight, "consistency": s.consistency_weight}
        return [StageConfig(name="ego_plm", groups=["all"], losses=losses, space="none",
                            steps=s.steps or sum(st.steps for st in cfg.train.stages), lr=s.lr or first.lr,
                            warmup_steps=first.warmup_steps, train_heads=True)]

    def build_model(self, cfg: Config, tasks: list[TaskData]) -> tuple[EgoPlmModel, Any]:
        """(EgoPlmModel with everything frozen until the trainer's ``set_trainable``, tokenizer).

        Raises:
            ConfigError: a bad ``methods.ego_plm`` or ``adapters`` setting.
        """
        from cdco_core.methods.ego_plm.model import EgoPlmModel
        from cdco_core.methods.ego_plm.pretext import detect_pretext
        from cdco_core.models.adapters import add_adapters, resolve_groups
        from cdco_core.models.encoder import load_encoder, resolve_model_path
        from cdco_core.models.heads import HeadSpec

        s = self.settings
        pretext = detect_pretext(cfg.model) if s.pretext == "auto" else s.pretext
        encoder, tokenizer, _ = load_encoder(cfg.model)
        groups = resolve_groups(cfg.adapters, encoder.config.num_hidden_layers)
        encoder = add_adapters(encoder, cfg.adapters, cfg.adapters.type)
        specs = [HeadSpec.of(t) for t in tasks]
        model = EgoPlmModel(
            encoder, specs, encoder.config.hidden_size, groups,
            proj_dim=cfg.train.proj_dim, curvature=cfg.train.curvature, learn_curvature=cfg.train.learn_curvature,
            generator_reduction=s.generator_reduction, pretext=pretext, untasked_view=s.untasked_view,
            special_ids=list(tokenizer.all_special_ids), mask_token_id=tokenizer.mask_token_id,
        )
        if model.mlm_head is not None:
            model.mlm_head_from_checkpoint = model.mlm_head.load_from_checkpoint(resolve_model_path(cfg.model.source))
        model.set_trainable([], train_heads=False)
        return model, tokenizer

    def loss_terms(self, model: EgoPlmModel, batch: Batch, stage: StageConfig,
                   ctx: StepContext) -> dict[str, torch.Tensor]:
        """task, pretext and consistency terms of one step (see :mod:`cdco_core.methods.ego_plm.loss`)."""
        from cdco_core.methods.ego_plm.loss import ego_plm_terms

        return ego_plm_terms(model, batch, self.settings, model.pretext, dict(stage.losses))
