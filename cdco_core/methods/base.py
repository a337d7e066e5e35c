"""What a training method is: how to build its model, which stages to run, which loss terms a step computes.

The trainer (``cdco_core.training``) is shared: it samples batches, attaches hard negatives when the method
uses them, calls :meth:`Method.loss_terms`, weights the returned terms by ``stage.losses`` and steps the
optimizer over the parameters of the stage's groups. A new method subclasses :class:`Method` in its own folder
``cdco_core/methods/<name>/`` whose ``__init__`` registers it (:func:`cdco_core.methods.registry.register_method`)
and adds one import line to ``cdco_core/methods/__init__.py``.

Loss terms (keys of the dict ``loss_terms`` returns, weighted by ``stage.losses``)::

    L_step = Σ_k w_k · term_k,   k ∈ {task, euclidean, poincare, pretext, consistency}

A term the stage gives no weight is not used; a weighted term the method does not return is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from cdco_core.config import Config, StageConfig
    from cdco_core.data import TaskData
    from cdco_core.models.multitask import MultiTaskModel
    from cdco_core.training.batches import Batch

LOSS_KEYS = ("task", "euclidean", "poincare", "pretext", "consistency")


@dataclass
class StepContext:
    """What a loss step may need besides the model and the batch.

    Attributes:
        cfg: the method's config (:meth:`Method.configure` of the run's config).
        stage_index: position of the stage in the method's schedule.
        step: step within the stage (0-based).
        global_step: steps taken in earlier stages plus ``step``.
        task_types: task name -> task type.
        state: per-run scratch space a method may use (not checkpointed: keep it derivable).
    """

    cfg: Config
    stage_index: int
    step: int
    global_step: int
    task_types: dict[str, str]
    state: dict[str, Any] = field(default_factory=dict)


class Method:
    """Base method: multi-task training with the task loss only, on shared adapters of ``cfg.adapters.type``.

    Attributes:
        name: registry name.
        description: one line for tables and ``--help``.
        settings: the method's own validated settings (``method_settings.<name>``), None when it has none.
        uses_negatives: the trainer loads ODMS hard negatives and keeps a negative bank (``batch.negatives``).
        sampler: task sampler name; None = ``cfg.train.sampler``.
        adapter_type: lora | bottleneck | none; None = ``cfg.adapters.type``.
        full_finetune: train the encoder's own weights.
        per_task_adapters: one LoRA adapter set per training task.
        extra_groups: parameter groups the method's model defines beyond the profile's adapter groups.
    """

    name: str = "base"
    description: str = "multi-task adapters, task loss only"
    settings: Any = None
    uses_negatives: bool = False
    sampler: str | None = None
    adapter_type: str | None = None
    full_finetune: bool = False
    per_task_adapters: bool = False
    extra_groups: tuple[str, ...] = ()

    # ------------------------------------------------------------------------------------------- config
    def configure(self, cfg: Config) -> Config:
        """The config this method runs with. Default: ``cfg`` itself; an ablation may change shared sections
        (e.g. the negatives' mode), which then enter the cache keys of the steps that read them."""
        return cfg

    def stages(self, cfg: Config) -> list[StageConfig]:
        """The schedule. Default: one task-loss stage on all groups with the same total step budget as
        ``cfg.train.stages`` (so baselines and CDCO take the same number of steps), the first stage's lr and
        warm-up."""
        from cdco_core.config import StageConfig

        first = cfg.train.stages[0]
        total = sum(s.steps for s in cfg.train.stages)
        return [StageConfig(name="task", groups=["all"], losses={"task": 1.0}, space="none", steps=total,
                            lr=first.lr, warmup_steps=first.warmup_steps, train_heads=True)]

    # -------------------------------------------------------------------------------------------- model
    def build_model(self, cfg: Config, tasks: list[TaskData]) -> tuple[MultiTaskModel, Any]:
        """(model, tokenizer) for the training tasks ``tasks`` (in task-id order)."""
        from cdco_core.models.multitask import build_multitask_model

        return build_multitask_model(cfg, tasks, adapter_type=self.adapter_type, full_finetune=self.full_finetune,
                                     per_task_adapters=self.per_task_adapters,
                                     default_task=self.default_task(tasks))

    def default_task(self, tasks: list[TaskData]) -> str | None:
        """Adapter set used without task ids (per-task adapters): the largest training task's."""
        if not self.per_task_adapters:
            return None
        return max(tasks, key=lambda t: (len(t.splits["train"]), t.name)).name

    def param_groups(self, model: MultiTaskModel, params: list[torch.nn.Parameter],
                     stage: StageConfig) -> list[dict[str, Any]]:
        """Optimizer parameter groups for a stage's trainable ``params``. Default: one group at ``stage.lr``."""
        return [{"params": params, "lr": stage.lr}]

    # --------------------------------------------------------------------------------------------- loss
    def loss_terms(self, model: MultiTaskModel, batch: Batch, stage: StageConfig,
                   ctx: StepContext) -> dict[str, torch.Tensor]:
        """Loss terms of one step. Default: ``{"task": ...}`` (see :func:`batch_task_loss`)."""
        pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.task_ids)
        return {"task": batch_task_loss(model, batch, pooled)}


def batch_task_loss(model: MultiTaskModel, batch: Batch, pooled: torch.Tensor) -> torch.Tensor:
    """Row-weighted mean of the per-task losses: ``Σ_t (R_t / B) · task_loss_t`` (one task -> its loss)."""
    from cdco_core.losses import task_loss

    total = pooled.new_zeros(())
    for task, (rows, logits) in model.batch_logits(batch, pooled).items():
        spec = model.head_specs[task]
        labels = batch.labels[rows]
        if spec.type != "regression":
            labels = labels.long()
        mask = batch.choice_mask[rows] if batch.choice_mask is not None else None
        loss = task_loss(spec.type, logits, labels, choice_mask=mask, class_weights=spec.class_weights)
        total = total + loss * (len(rows) / len(batch))
    return total
