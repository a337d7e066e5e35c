"""Baselines on the shared trainer: task loss only, the same total steps as CDCO's schedule.

    lora_mtl        shared LoRA adapters in every layer, all tasks                (CDCO without its contrastive terms)
    bottleneck_mtl  shared bottleneck adapters in every layer, all tasks
    lora_single     one LoRA adapter set per ID task; a batch (one task) trains its task's set. Without a task id
                    (OOD/KI evaluation) the largest ID task's set is used.
    frozen          frozen encoder, task heads only: a linear probe, trained at the heads' rate (``train.head_lr``,
                    default ``eval.head_lr``, the rate the evaluation gives every fresh head; every method's heads
                    train at it) for the same step budget. At adapter rates (~1e-3) a probe on
                    MiniLM's unit-norm embeddings barely leaves the class prior: sms_spam stayed at the majority class
    full_ft         every encoder weight trained; the encoder's lr is stage lr x FULL_FT_LR_SCALE (adapter
                    learning rates of ~1e-3 wreck a pre-trained encoder), heads at the heads' rate
    top_half_ft     the upper half of the encoder's layers trained (the lower ⌊L/2⌋ and the embeddings frozen, as
                    CA-MTL freezes them), no task conditioning: CA-MTL's capacity without its conditional modules.
                    Encoder lr = stage lr x TOP_HALF_LR_SCALE (CA-MTL's default encoder_lr_scale), heads the stage lr
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cdco_core.methods.base import Method

if TYPE_CHECKING:
    import torch

    from cdco_core.config import Config, StageConfig
    from cdco_core.data import TaskData
    from cdco_core.models.multitask import MultiTaskModel

FULL_FT_LR_SCALE = 0.05  # 1e-3 -> 5e-5, the usual BERT fine-tuning rate
TOP_HALF_LR_SCALE = 0.1  # CA-MTL's encoder_lr_scale default: both train the same pretrained weights at the same rate
TOP_HALF_GROUP = "top_half"  # the layer group top_half_ft trains (added to the model's groups, whatever the profile's)


class LoraMTL(Method):
    name = "lora_mtl"
    description = "multi-task LoRA, task loss only"
    adapter_type = "lora"


class BottleneckMTL(Method):
    name = "bottleneck_mtl"
    description = "multi-task bottleneck adapters, task loss only"
    adapter_type = "bottleneck"


class LoraSingle(Method):
    name = "lora_single"
    description = "one LoRA adapter set per task (the largest task's for OOD/KI)"
    adapter_type = "lora"
    per_task_adapters = True


class Frozen(Method):
    name = "frozen"
    description = "frozen encoder, task heads only"
    adapter_type = "none"

    def stages(self, cfg: Config) -> list[StageConfig]:
        """The default one-stage schedule at the heads' rate (``train.head_lr``, default ``eval.head_lr``)."""
        from cdco_core.config import head_lr

        return [s.model_copy(update={"lr": head_lr(cfg)}) for s in super().stages(cfg)]


class FullFT(Method):
    name = "full_ft"
    description = "full fine-tuning of every encoder weight, task loss"
    adapter_type = "none"
    full_finetune = True
    lr_scale = FULL_FT_LR_SCALE

    def param_groups(self, model: MultiTaskModel, params: list[torch.nn.Parameter],
                     stage: StageConfig) -> list[dict[str, Any]]:
        encoder = {id(p) for p in model.encoder.parameters()}
        enc = [p for p in params if id(p) in encoder]
        rest = [p for p in params if id(p) not in encoder]
        groups = [{"params": enc, "lr": stage.lr * self.lr_scale}] if enc else []
        return groups + ([{"params": rest, "lr": stage.lr}] if rest else [])


class TopHalfFT(FullFT):
    name = "top_half_ft"
    description = "upper half of the encoder fine-tuned, task loss, no conditioning (CA-MTL's capacity)"
    lr_scale = TOP_HALF_LR_SCALE
    extra_groups = (TOP_HALF_GROUP,)

    def stages(self, cfg: Config) -> list[StageConfig]:
        """The default one-stage schedule, training the ``top_half`` group (and the heads) only."""
        return [s.model_copy(update={"groups": [TOP_HALF_GROUP]}) for s in super().stages(cfg)]

    def build_model(self, cfg: Config, tasks: list[TaskData]) -> tuple[MultiTaskModel, Any]:
        """The full fine-tuning model with a ``top_half`` group: layers ⌊L/2⌋ .. L-1 (3-5 of MiniLM's 6)."""
        from cdco_core.methods.ca_mtl.model import frozen_layer_count

        model, tokenizer = super().build_model(cfg, tasks)
        n_layers = model.encoder.config.num_hidden_layers
        model.layer_groups[TOP_HALF_GROUP] = list(range(frozen_layer_count(n_layers, 0.5), n_layers))
        return model, tokenizer


BASELINES: dict[str, type[Method]] = {
    c.name: c for c in (LoraMTL, BottleneckMTL, LoraSingle, Frozen, FullFT, TopHalfFT)
}
