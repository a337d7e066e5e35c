"""CDCO's MAC half: the staged schedule with task and cross-domain contrastive terms, and its ablations.

Per step (docs/methods.md, "MAC")::

    pooled = encode(batch)                                   # (B, H), shared by every term
    task      = Σ_t (R_t / B) · task_loss_t(head_t(pooled))
    euclidean = InfoNCE_cos( P_E(pooled), keys, P_E(bank negatives (B, K, H)) )
    poincare  = InfoNCE_-d_c( P_B(pooled), keys, P_B(bank negatives) )

Only the terms the stage weights are computed, so a task-only stage costs what a plain multi-task step costs.
Multiple-choice batches have no class keys: their contrastive terms are 0.

Ablations (same schedule, same steps, same groups; only the named part changes):
    no_poincare       the Poincaré term's weight is set to 0 in every stage (its stage trains the task loss only)
    no_euclidean      the same for the Euclidean term
    random_negatives  ``negatives.mode=random``: uniform OOD negatives instead of manifold neighbours
    strict            every configured OOD task in ``negatives.strict_exclude``: the pool is then empty, so the
                      contrastive terms use in-batch negatives only and no OOD text is ever seen in training
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from cdco_core.errors import InputError
from cdco_core.methods.base import Method, StepContext, batch_task_loss

if TYPE_CHECKING:
    from cdco_core.config import Config, StageConfig
    from cdco_core.models.multitask import MultiTaskModel
    from cdco_core.training.batches import Batch

VARIANTS = (None, "no_poincare", "no_euclidean", "random_negatives", "strict")


class CDCOMethod(Method):
    """CDCO (MAC over ODMS negatives); ``variant`` selects an ablation (see the module docstring)."""

    name = "cdco"
    description = "CDCO: staged task + Euclidean/Poincaré cross-domain contrastive training with ODMS negatives"

    def __init__(self, variant: str | None = None, *, centre: bool) -> None:  # centre: CdcoConfig's, no default here
        if variant not in VARIANTS:
            raise InputError(f"unknown CDCO variant {variant!r}; allowed: {[v for v in VARIANTS if v]}")
        self.variant = variant
        self.centre = centre
        self.uses_negatives = variant != "strict"
        self.dropped = {"no_poincare": "poincare", "no_euclidean": "euclidean"}.get(variant or "")

    def configure(self, cfg: Config) -> Config:
        """random_negatives: ``negatives.mode=random``; strict: every OOD task in ``negatives.strict_exclude``."""
        if self.variant == "random_negatives":
            return cfg.model_copy(update={"negatives": cfg.negatives.model_copy(update={"mode": "random"})})
        if self.variant != "strict":
            return cfg
        from cdco_core.data import task_specs

        ood = sorted(s.name for s in task_specs(cfg.data) if s.kind == "OOD")
        return cfg.model_copy(update={"negatives": cfg.negatives.model_copy(update={"strict_exclude": ood})})

    def stages(self, cfg: Config) -> list[StageConfig]:
        """``cfg.train.stages``; an ablation zeroes its dropped term (the stage keeps its steps and groups)."""
        if self.dropped is None:
            return list(cfg.train.stages)
        out = []
        for st in cfg.train.stages:
            losses = {k: w for k, w in st.losses.items() if k != self.dropped}
            if not any(w > 0 for w in losses.values()):
                losses = {"task": 1.0}
            space = st.space
            if space == "both":
                space = "euclidean" if self.dropped == "poincare" else "poincare"
            elif space == self.dropped:
                space = "none"
            out.append(st.model_copy(update={"losses": losses, "space": space}))
        return out

    def loss_terms(self, model: MultiTaskModel, batch: Batch, stage: StageConfig,
                   ctx: StepContext) -> dict[str, torch.Tensor]:
        pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.task_ids)  # (B, H)
        terms = {"task": batch_task_loss(model, batch, pooled)}
        for space in ("euclidean", "poincare"):
            if stage.losses.get(space, 0.0) > 0:
                terms[space] = self.contrastive(model, batch, pooled, space, ctx.cfg.train.contrastive_temperature)
        return terms

    def contrastive(self, model: MultiTaskModel, batch: Batch, pooled: torch.Tensor, space: str,
                    temperature: float) -> torch.Tensor:
        """The ``space`` term of one step (the research variant ``cdco_r`` overrides it, nothing else)."""
        return contrastive_term(model, batch, pooled, space, temperature, centre=self.centre)


def contrastive_term(model: MultiTaskModel, batch: Batch, pooled: torch.Tensor, space: str,
                     temperature: float, *, centre: bool = False) -> torch.Tensor:
    """InfoNCE in ``space`` on the projected pooled rows and their projected bank negatives (see :func:`project`
    for ``centre``)."""
    from cdco_core.losses import contrastive_loss

    if batch.choice_mask is not None:  # option sequences are not rows: no keys, no term
        return pooled.sum() * 0.0
    proj = model.euclidean_proj if space == "euclidean" else model.poincare_proj
    z = project(proj, pooled, space, centre)  # (B, D)
    negs = None
    if batch.negatives is not None:
        b, k, h = batch.negatives.shape
        raw = batch.negatives.to(pooled.device, pooled.dtype).reshape(b * k, h)
        negs = project(proj, raw, space, centre).reshape(b, k, -1)  # (B, K, D)
    ball = model.poincare_proj.ball if space == "poincare" else None
    return contrastive_loss(z, batch.keys.to(pooled.device), negs, space, temperature, ball=ball)


def project(proj: torch.nn.Module, pooled: torch.Tensor, space: str, centre: bool) -> torch.Tensor:
    """``proj(pooled)``; with ``centre`` the projection's linear output minus its mean over the given rows first,
    then the space's map (unit normalisation, or the Poincaré clip and exponential map as in the projection).

    Centring each side on its own mean (the batch's rows, the bank's negatives) means a shift of every in-domain
    row away from the out-of-domain points changes no similarity, and a batch cannot sit at one point: the
    representation collapse of docs/methods.md ("CDCO research") cannot lower the loss.
    """
    if not centre:
        return proj(pooled)
    u = proj.linear(pooled)
    u = u - u.mean(dim=0, keepdim=True)
    if space == "euclidean":
        return torch.nn.functional.normalize(u, dim=-1, eps=1e-8)
    if proj.clip_r is not None:
        scaled_norm = u.norm(dim=-1, keepdim=True).clamp_min(1e-15) * proj.ball.c.sqrt()
        u = u * torch.clamp(proj.clip_r / scaled_norm, max=1.0)
    return proj.ball.projx(proj.ball.expmap0(u, project=False))
