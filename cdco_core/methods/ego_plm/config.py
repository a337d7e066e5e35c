"""EGO-PLM settings: ``cfg.method_settings.ego_plm`` validated into :class:`EgoPlmConfig`.

Every key carries its trade-off. Loss weights are the outer objective's
``L = L_task + pretext_weight * L_pre + consistency_weight * L_coca`` (see docs/methods.md, "EGO-PLM").
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PretextName = Literal["auto", "mlm", "contrastive"]


class EgoPlmConfig(BaseModel):
    """Validated ``method_settings.ego_plm`` section (unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ---- task-specific embedding generator: e_t = h + U_t GELU(D_t LN(h)), U_t zero-initialised
    # width of each task's bottleneck = hidden // generator_reduction: smaller reduction = more per-task capacity
    # (and more parameters per task, 2·H²/reduction), larger = closer to a shared encoder.
    generator_reduction: int = Field(4, ge=1)
    # What encode(task_ids=None) returns (OOD/KI evaluation has no task id): "agnostic" = the shared
    # encoder's embedding h, the one the pre-defined task keeps close to pre-training; "task_mean" = the
    # mean of every task's generated embedding (more task signal, less general).
    untasked_view: Literal["agnostic", "task_mean"] = "agnostic"

    # ---- pre-defined (pretext) task
    # "auto": contrastive for sentence-embedding checkpoints (sentence-transformers files in the model
    # folder), MLM otherwise (tiny-random, BERT-style folders). See pretext.detect_pretext.
    pretext: PretextName = "auto"
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)  # BERT's rate; higher = harder task, noisier gradient
    contrastive_temperature: float = Field(0.05, gt=0.0)  # SimCSE's tau; lower = sharper, noisier gradient

    # ---- consistency calibration (CoCa): K steps of L2 PGD, per-token ball on the input embeddings
    # epsilon and step_size are fractions of the mean word-embedding norm of the vocabulary, so one value
    # means the same for MiniLM (mean norm ~1.07) and the tiny random BERT (~0.11). Larger = stronger
    # regulariser, and further from the data the model is evaluated on.
    epsilon: float = Field(0.1, gt=0.0)
    adv_steps: int = Field(1, ge=1)  # K: each step costs one extra forward+backward
    step_size: float = Field(0.05, gt=0.0)  # alpha, same unit as epsilon
    # start of the ascent: a random direction of norm init_fraction * epsilon per token (0 = start at x;
    # then a generator at its identity start gives a zero gradient and the ascent cannot move).
    init_fraction: float = Field(0.5, ge=0.0, le=1.0)

    # ---- cost of a step. "exact": SimCSE's second view is its own differentiated pass at x + δ* (K adversary
    # passes + outer pass + second view: K + 2 forward + backward passes), all in float32. "fast": the second view
    # is the adversary's last forward pass (another dropout draw, at δ^{K-1} instead of δ*, both inside the
    # ε-ball), used as a stop-gradient target, so a step is K + 1 passes; and the adversary runs under bfloat16
    # autocast where the hardware has native bf16 (only its gradient's per-token direction is used). MLM's
    # pass keeps its own gradient in both schemes (it is the whole pre-defined task there).
    step_scheme: Literal["fast", "exact"] = "fast"

    # ---- outer objective weights (the trainer multiplies each returned term by them)
    pretext_weight: float = Field(0.1, ge=0.0)  # more = more pre-trained knowledge kept, less task fit
    consistency_weight: float = Field(1.0, ge=0.0)  # more = task view held closer to the pre-defined view

    # ---- schedule: null = the profile's total steps / first stage's learning rate (same budget as baselines)
    steps: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _step_within_ball(self) -> EgoPlmConfig:
        if self.step_size > 2 * self.epsilon:
            raise ValueError(
                f"step_size {self.step_size} is more than twice epsilon {self.epsilon}: every step would be "
                "clipped back onto the ball; use step_size <= 2 * epsilon"
            )
        return self
