"""CDCO research variants (issue 14): one method, ``cdco_r``, whose settings switch each candidate fix on or off.

On ``benchmark-cpu`` seed 0, CDCO's contrastive stages drive every ID head to its majority-class floor, and 58.1%
of sst2 anchors' imdb ODMS negatives carry the anchor's own sentiment (docs/methods.md, "CDCO research"). Each
setting below tests one hypothesis written there before testing; the defaults reproduce CDCO's loss exactly, so
a variant differs from ``cdco`` only in what its settings name.

Per step, for an anchor ``i`` of task ``t`` with label key ``k_i``, positives ``P(i)`` (same key in the batch),
in-batch negatives ``B(i)`` (another key) and its K ODMS negatives ``O(i)``, with ``l = s/τ_space``::

    l_ip = −log( e^{l_ip} / (e^{l_ip} + Σ_{n∈B(i)} e^{l_in} + G_i) )
    G_i  = Σ_{n∈O(i), m_in} e^{l_in}                                         (plain, or label-aware: mask m)
    G_i  = max( (Σ_{n∈O(i)} e^{l_in} − K τ⁺ e^{l_ip}) / (1 − τ⁺),  K e^{min_n l_in} )   (debiased, H2)

- ``label_aware`` (H1): ``m_in = 0`` when the anchor task's own head assigns the negative to the anchor's label
  (argmax of ``head_t(h_n)``, computed without gradients). Only single-sentence classification tasks are
  filtered: an ODMS negative is a single text, which a pair task's head cannot label.
- ``tau_plus`` (H2, Chuang et al. 2020, "Debiased Contrastive Learning"): the expected share of false negatives
  among the ODMS negatives, corrected for in the denominator instead of removing points. Applied to
  single-sentence classification anchors; other anchors keep the plain sum.
- ``temperature_poincare`` (H3): the Poincaré term's own τ. ``auto`` scales it so that both spaces' logits span
  the same range: cosine spans 2, the clipped ball's distances span 4r/√c, so ``τ_P = τ_E · 2r/√c``.
- ``centre`` (after the dev runs showed a representation collapse): the projection's linear output is centred on
  its own side before the space's map, the batch's rows on the batch mean and the ODMS negatives on theirs
  (``u_i − mean_b u_b``, ``v_n − mean_m v_m``), so shifting every in-domain row away from the out-of-domain
  points (the "which domain is this" shortcut) no longer changes any similarity; only structure within each
  domain does.
- ``anchor_tasks``: only these tasks' rows are anchors (other rows get key −1: still negatives, never pulled
  towards a positive). Tests whether supervised contrast on tasks the model cannot yet separate drives the
  collapse.
- ``contrastive_scale``: multiplies every contrastive weight of every stage (0 = CDCO's schedule with the task
  loss only: H4, the schedule's own cost).
- ``schedule``: ``cdco`` (the profile's stages) or ``flat``: one stage of the same total steps over every adapter
  group, at the first stage's rate and warm-up, with the last stage's loss weights from the first step (H4's
  other half: the terms without the schedule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from cdco_core.methods.cdco.method import CDCOMethod, project
from cdco_core.methods.cdco.research_config import CdcoResearchConfig

if TYPE_CHECKING:
    from cdco_core.config import Config, StageConfig
    from cdco_core.models.multitask import MultiTaskModel
    from cdco_core.training.batches import Batch


class CDCOResearchMethod(CDCOMethod):
    """CDCO with the research settings of :class:`CdcoResearchConfig`."""

    name = "cdco_r"
    description = "CDCO research variant (issue 14): label-aware / debiased negatives, per-space temperatures"

    def __init__(self, settings: CdcoResearchConfig | None = None) -> None:
        self.settings = settings or CdcoResearchConfig()
        super().__init__(None, centre=self.settings.centre)
        self.uses_negatives = self.settings.contrastive_scale > 0

    def stages(self, cfg: Config) -> list[StageConfig]:
        """The profile's stages (or one flat stage), contrastive weights times ``contrastive_scale``."""
        s = self.settings
        stages = list(cfg.train.stages)
        if s.schedule == "flat":
            last, first = stages[-1], stages[0]
            stages = [first.model_copy(update={"name": "flat", "groups": ["all"], "losses": dict(last.losses),
                                               "space": last.space, "steps": sum(st.steps for st in stages)})]
        out = []
        for st in stages:
            losses = {k: (w * s.contrastive_scale if k in ("euclidean", "poincare") else w)
                      for k, w in st.losses.items()}
            losses = {k: w for k, w in losses.items() if w > 0 or k == "task"}
            space = st.space if any(k in losses for k in ("euclidean", "poincare")) else "none"
            out.append(st.model_copy(update={"losses": losses, "space": space}))
        return out

    def temperature(self, model: MultiTaskModel, space: str, tau_e: float) -> float:
        """τ of ``space``: the Euclidean τ, or the Poincaré one (``auto``: same logit range as cosine)."""
        t = self.settings.temperature_poincare
        if space == "euclidean" or t is None:
            return tau_e
        if t == "auto":
            proj = model.poincare_proj
            return tau_e * 2 * float(proj.clip_r) / float(proj.curvature.detach().sqrt())
        return float(t)

    def contrastive(self, model: MultiTaskModel, batch: Batch, pooled: torch.Tensor, space: str,
                    tau_e: float) -> torch.Tensor:
        """The ``space`` term with this variant's settings (the loss of the module docstring)."""
        if batch.choice_mask is not None:  # option sequences are not rows: no keys, no term
            return pooled.sum() * 0.0
        proj = model.euclidean_proj if space == "euclidean" else model.poincare_proj
        centre = self.settings.centre
        z = project(proj, pooled, space, centre)
        negs = mask = None
        filtered = torch.tensor([t == "classification" for t in batch.task_types], device=pooled.device)
        if batch.negatives is not None:
            b, k, h = batch.negatives.shape
            raw = batch.negatives.to(pooled.device, pooled.dtype)
            negs = project(proj, raw.reshape(b * k, h), space, centre).reshape(b, k, -1)
            if self.settings.label_aware:
                mask = same_label_negatives(model, batch, raw) & filtered[:, None]
        ball = model.poincare_proj.ball if space == "poincare" else None
        tau_plus = torch.where(filtered, self.settings.tau_plus, 0.0)
        keys = batch.keys.to(pooled.device)
        if self.settings.anchor_tasks is not None:
            allowed = torch.tensor([t in self.settings.anchor_tasks for t in batch.tasks], device=keys.device)
            keys = torch.where(allowed, keys, torch.full_like(keys, -1))
        return research_contrastive_loss(z, keys, negs, space,
                                         self.temperature(model, space, tau_e), ball=ball,
                                         drop=mask, tau_plus=tau_plus)


@torch.no_grad()
def same_label_negatives(model: MultiTaskModel, batch: Batch, negatives: torch.Tensor) -> torch.Tensor:
    """(B, K) True where the row's own task head puts the row's ODMS negative in the row's label (argmax)."""
    b, k, h = negatives.shape
    out = torch.zeros(b, k, dtype=torch.bool, device=negatives.device)
    for task in sorted(set(batch.tasks)):
        rows = torch.tensor([i for i, t in enumerate(batch.tasks) if t == task], device=negatives.device)
        if model.head_specs[task].type != "classification":
            continue
        logits = model.head_logits(task, negatives[rows].reshape(-1, h)).reshape(len(rows), k, -1)  # (R, K, C)
        out[rows] = logits.argmax(-1) == batch.labels[rows].long().to(negatives.device)[:, None]
    return out


def research_contrastive_loss(z: torch.Tensor, keys: torch.Tensor, negatives: torch.Tensor | None, space: str,
                              temperature: float, ball: object = None, *, drop: torch.Tensor | None = None,
                              tau_plus: torch.Tensor | None = None) -> torch.Tensor:
    """The contrastive loss of the module docstring; with ``drop=None`` and ``tau_plus`` 0 it equals
    :func:`cdco_core.losses.contrastive_loss` (a test checks this).

    Args:
        z: (B, D) projected rows. keys: (B,) label keys (-1: never an anchor).
        negatives: (B, K, D) projected ODMS negatives, or None.
        drop: (B, K) True = leave that negative out (label-aware filter).
        tau_plus: (B,) expected false-negative share per anchor (0 = no debiasing).
    """
    from cdco_core.losses import similarity

    bsz = z.shape[0]
    eye = torch.eye(bsz, dtype=torch.bool, device=z.device)
    same = keys[:, None] == keys[None, :]
    pos = same & ~eye & (keys[:, None] >= 0)  # (B, B)
    anchors = pos.any(dim=1)
    if not bool(anchors.any()):
        return z.sum() * 0.0
    sim = similarity(z[:, None, :], z[None, :, :], space, ball)  # (B, B)
    logits = sim.to(torch.float64) / temperature
    lowest = torch.finfo(logits.dtype).min
    lse_batch = torch.logsumexp(logits.masked_fill(same, lowest), dim=1)  # (B,) in-batch negatives (other keys)
    lse_batch = torch.where((~same).any(dim=1), lse_batch, torch.full_like(lse_batch, float("-inf")))
    if negatives is not None and negatives.shape[1] > 0:
        hard = similarity(z[:, None, :], negatives, space, ball).to(torch.float64) / temperature  # (B, K)
        keep = torch.ones_like(hard, dtype=torch.bool) if drop is None else ~drop
        lse_hard = torch.logsumexp(hard.masked_fill(~keep, lowest), dim=1)  # (B,)
        lse_hard = torch.where(keep.any(dim=1), lse_hard, torch.full_like(lse_hard, float("-inf")))
        n_kept = keep.sum(dim=1).to(hard.dtype)  # (B,)
        floor = torch.log(n_kept.clamp(min=1)) + hard.masked_fill(~keep, float("inf")).amin(dim=1)  # log(K e^{min})
        floor = torch.where(keep.any(dim=1), floor, torch.full_like(floor, float("-inf")))
    else:
        lse_hard = torch.full((bsz,), float("-inf"), dtype=logits.dtype, device=z.device)
        n_kept = floor = None
    tp = (tau_plus if tau_plus is not None else torch.zeros(bsz)).to(logits.dtype).to(z.device)
    # (B, B) loss of each (anchor, positive) pair; the ODMS part is debiased per pair when tau_plus > 0
    lp = logits  # l_ip
    if n_kept is not None and bool((tp > 0).any()):
        # G = max((e^{lse_hard} − K τ⁺ e^{l_ip}) / (1 − τ⁺), K e^{min}) in log space, per (i, p)
        corr = torch.log(n_kept.clamp(min=1) * tp.clamp(min=1e-12))[:, None] + lp  # log(K τ⁺ e^{l_ip})
        diff = lse_hard[:, None] + torch.log1p(-torch.exp((corr - lse_hard[:, None]).clamp(max=0)))
        diff = torch.where(corr < lse_hard[:, None], diff, torch.full_like(diff, float("-inf")))
        debiased = torch.maximum(diff - torch.log1p(-tp)[:, None], floor[:, None])
        g = torch.where((tp > 0)[:, None], debiased, lse_hard[:, None].expand_as(lp))
    else:
        g = lse_hard[:, None].expand_as(lp)
    denom = torch.logsumexp(torch.stack([lp, lse_batch[:, None].expand_as(lp), g]), dim=0)  # (B, B)
    pair_loss = (denom - lp).masked_fill(~pos, 0.0)
    per_anchor = pair_loss.sum(dim=1) / pos.sum(dim=1).clamp(min=1)
    return per_anchor[anchors].mean().to(z.dtype)
