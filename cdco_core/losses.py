"""Task losses and the cross-domain contrastive loss (InfoNCE) in Euclidean and Poincaré space.

The contrastive loss follows docs/methods.md ("Losses, projections and samplers"). For an anchor ``i`` with
positives ``P(i)`` (other in-batch rows with the same key, i.e. same task and label) and negatives ``N(i)``
(its K ODMS hard negatives plus the in-batch rows with another key)::

    l_ip = -log( exp(s_ip/τ) / (exp(s_ip/τ) + Σ_{n∈N(i)} exp(s_in/τ)) )
    L    = mean_{i∈A} mean_{p∈P(i)} l_ip,       A = {i : key_i ≥ 0 and P(i) ≠ ∅}

with ``s = cos(x, y)`` (Euclidean) or ``s = -d_c(x, y)`` (Poincaré ball of curvature -c),
``d_c(x, y) = (2/√c) artanh(√c ‖(−x) ⊕_c y‖)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from cdco_core.errors import InputError

if TYPE_CHECKING:  # geoopt is imported lazily by the callers that build a ball
    import geoopt

CLASSIFICATION_TYPES = ("classification", "pair_classification", "boolean_qa", "multiple_choice")
TASK_TYPES = (*CLASSIFICATION_TYPES, "regression")
SPACES = ("euclidean", "poincare")


def task_loss(
    task_type: str,
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    choice_mask: torch.Tensor | None = None,
    class_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """The supervised loss of one task's rows.

    Cross-entropy ``-log softmax(logits)_y`` for classification, pair classification, boolean QA and multiple
    choice (logits over the options); mean squared error ``mean((f(x) - y)^2)`` for regression.

    Args:
        task_type: one of :data:`TASK_TYPES`.
        logits: (B, C) class or option scores; (B, 1) or (B,) for regression.
        labels: (B,) long class/option indices; float targets for regression.
        choice_mask: optional (B, C) bool, True where an option exists (multiple choice rows padded to C
            options); absent options get probability 0.
        class_weights: optional per-class weights w (classification types): the weighted mean
            ``Σ_i w_{y_i} ℓ_i / Σ_i w_{y_i}`` (the task spec's ``class_weights: balanced``).

    Returns:
        Scalar mean loss over the B rows.

    Raises:
        InputError: unknown task type.
        ValueError: shapes that do not match, or a label pointing at a masked option.
    """
    if task_type not in TASK_TYPES:
        raise InputError(f"unknown task type {task_type!r}; supported: {', '.join(TASK_TYPES)}")
    if labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"task_loss({task_type}): logits {tuple(logits.shape)} and labels {tuple(labels.shape)} "
            "must share the batch size B, with labels of shape (B,)"
        )
    if task_type == "regression":
        if logits.dim() == 2 and logits.shape[1] == 1:
            logits = logits.squeeze(-1)  # (B,)
        if logits.dim() != 1:
            raise ValueError(f"regression logits must be (B, 1) or (B,), got {tuple(logits.shape)}")
        return F.mse_loss(logits.float(), labels.float())
    if logits.dim() != 2:
        raise ValueError(f"{task_type} logits must be (B, C), got {tuple(logits.shape)}")
    if labels.dtype.is_floating_point:
        raise ValueError(f"{task_type} labels must be integer class indices, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(
            f"{task_type} labels must lie in [0, {logits.shape[1]}) (one logit per class/option), got {labels.tolist()}"
        )
    if choice_mask is not None:
        if choice_mask.shape != logits.shape:
            raise ValueError(f"choice_mask {tuple(choice_mask.shape)} must match logits {tuple(logits.shape)}")
        if not bool(choice_mask.gather(1, labels[:, None]).all()):
            raise ValueError("a multiple-choice label points at a masked (absent) option")
        # finfo.min rather than -inf: exp() still gives 0, and a fully finite tensor keeps gradients NaN-free.
        logits = logits.masked_fill(~choice_mask.bool(), torch.finfo(logits.dtype).min)
    if class_weights is not None:
        if len(class_weights) != logits.shape[1] or choice_mask is not None:
            raise ValueError(f"class_weights has {len(class_weights)} entries for {logits.shape[1]} classes "
                             "(and weights are for fixed class sets, not multiple choice)")
        weight = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
        return F.cross_entropy(logits, labels, weight=weight)
    return F.cross_entropy(logits, labels)


def _check_space(space: str, ball: geoopt.PoincareBall | None) -> None:
    if space not in SPACES:
        raise InputError(f"unknown space {space!r}; supported: {', '.join(SPACES)}")
    if space == "poincare" and ball is None:
        raise ValueError("space='poincare' needs the geoopt.PoincareBall of the projection head (ball=...)")


def similarity(
    x: torch.Tensor,
    y: torch.Tensor,
    space: str,
    ball: geoopt.PoincareBall | None = None,
    *,
    distance_dtype: torch.dtype | None = torch.float64,
) -> torch.Tensor:
    """Similarity of broadcastable point sets along the last dimension.

    Euclidean: ``s(x, y) = <x, y> / (‖x‖ ‖y‖)``. Poincaré: ``s(x, y) = -d_c(x, y)`` with
    ``d_c(x, y) = (2/√c) artanh(√c ‖(−x) ⊕_c y‖)`` computed by geoopt (``ball.dist``).

    Near the boundary of the ball ``1 - c‖x‖²`` underflows in float32, so points are first projected inside the
    ball with geoopt's dtype margin (``ball.projx``: ‖x‖ ≤ (1 - 4e-3)/√c in float32) and the distance is then
    computed in ``distance_dtype`` (float64 by default; geoopt also clamps the artanh argument to 1 - 1e-7).

    Args:
        x: (..., D) points; e.g. (B, 1, D) against y (1, B, D) gives the (B, B) matrix.
        y: (..., D) points broadcastable with x.
        space: "euclidean" or "poincare".
        ball: the projection head's ball (needed for "poincare"; its curvature gets gradients if learnable).
        distance_dtype: dtype of the Poincaré distance computation; None keeps the input dtype.

    Returns:
        The broadcast shape of x and y without the last dimension, in x's dtype.

    Raises:
        InputError: unknown space.
        ValueError: mismatched last dimensions or shapes that do not broadcast, or no ball for "poincare".
    """
    _check_space(space, ball)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"similarity: last dimensions differ, x {tuple(x.shape)} vs y {tuple(y.shape)}")
    try:
        torch.broadcast_shapes(x.shape, y.shape)
    except RuntimeError as exc:
        raise ValueError(f"similarity: shapes {tuple(x.shape)} and {tuple(y.shape)} do not broadcast") from exc
    if space == "euclidean":
        return (F.normalize(x, dim=-1, eps=1e-8) * F.normalize(y, dim=-1, eps=1e-8)).sum(-1)
    out_dtype = x.dtype
    x, y = ball.projx(x), ball.projx(y)  # margin chosen for the input dtype, before any upcast
    if distance_dtype is not None:
        x, y = x.to(distance_dtype), y.to(distance_dtype)
    return (-ball.dist(x, y)).to(out_dtype)


def _check_contrastive_inputs(
    z: torch.Tensor, keys: torch.Tensor, negatives: torch.Tensor | None, temperature: float
) -> None:
    if z.dim() != 2:
        raise ValueError(f"contrastive_loss: z must be (B, D), got {tuple(z.shape)}")
    if keys.shape != (z.shape[0],) or keys.dtype.is_floating_point or keys.dtype == torch.bool:
        raise ValueError(
            f"contrastive_loss: keys must be an integer tensor of shape ({z.shape[0]},), "
            f"got {tuple(keys.shape)} {keys.dtype}"
        )
    if negatives is not None and (
        negatives.dim() != 3 or negatives.shape[0] != z.shape[0] or negatives.shape[2] != z.shape[1]
    ):
        raise ValueError(
            f"contrastive_loss: negatives must be (B, K, D) = ({z.shape[0]}, K, {z.shape[1]}), "
            f"got {tuple(negatives.shape)}"
        )
    if not (temperature > 0 and temperature < float("inf")):
        raise InputError(f"contrastive temperature must be a finite number > 0, got {temperature!r}")


def contrastive_loss(
    z: torch.Tensor,
    keys: torch.Tensor,
    negatives: torch.Tensor | None,
    space: str,
    temperature: float,
    ball: geoopt.PoincareBall | None = None,
    *,
    distance_dtype: torch.dtype | None = torch.float64,
) -> torch.Tensor:
    """Cross-domain supervised InfoNCE with in-batch positives and ODMS hard negatives.

    For each anchor ``i`` (key ≥ 0 with at least one in-batch positive) and each positive ``p`` of it::

        l_ip = -log( e^{s_ip/τ} / (e^{s_ip/τ} + Σ_{n∈N(i)} e^{s_in/τ}) )
        L = mean over anchors of (mean over the anchor's positives of l_ip)

    ``N(i)`` = the K hard negatives ``negatives[i]`` plus every in-batch row whose key differs from key_i
    (rows with key -1 included). Other positives are left out of the denominator, so positives never compete
    with each other (the brief's formula; SupCon's L_out would put them in). Averaging over positives first gives
    every anchor the same weight whatever its class frequency in the batch.

    Args:
        z: (B, D) projected representations (unit vectors or points of the ball).
        keys: (B,) integer ids; equal key = same task and label; -1 = never an anchor, still a negative.
        negatives: (B, K, D) hard negatives in the same space, or None.
        space: "euclidean" (s = cosine) or "poincare" (s = -d_c).
        temperature: τ > 0.
        ball: the geoopt.PoincareBall (required for "poincare").
        distance_dtype: dtype of the Poincaré distances (float64 by default for stability near the boundary).

    Returns:
        Scalar loss in z's dtype; exactly 0 (still attached to z's graph) when no anchor has a positive.

    Raises:
        InputError: unknown space or a temperature that is not > 0.
        ValueError: shapes that do not match.
    """
    _check_space(space, ball)
    _check_contrastive_inputs(z, keys, negatives, temperature)
    bsz = z.shape[0]
    eye = torch.eye(bsz, dtype=torch.bool, device=z.device)
    same = keys[:, None] == keys[None, :]  # (B, B)
    pos = same & ~eye & (keys[:, None] >= 0)  # (B, B) positive pairs (i, p)
    anchors = pos.any(dim=1)  # (B,)
    if not bool(anchors.any()):
        return z.sum() * 0.0  # keeps the graph so callers can always .backward() a weighted sum

    sim = similarity(z[:, None, :], z[None, :, :], space, ball, distance_dtype=distance_dtype)  # (B, B)
    logits = sim.to(torch.promote_types(sim.dtype, torch.float32)) / temperature
    neg_logits = [logits]
    neg_masks = [~same]  # in-batch negatives: another key (including key -1 rows)
    if negatives is not None and negatives.shape[1] > 0:
        hard = similarity(z[:, None, :], negatives, space, ball, distance_dtype=distance_dtype)  # (B, K)
        neg_logits.append(hard.to(logits.dtype) / temperature)
        neg_masks.append(torch.ones_like(hard, dtype=torch.bool))
    all_neg = torch.cat(neg_logits, dim=1)  # (B, B + K)
    neg_mask = torch.cat(neg_masks, dim=1)  # (B, B + K)
    # Masked entries get finfo.min (not -inf) so that a row without negatives has finite gradients;
    # such a row's log-sum is then replaced by -inf, for which logaddexp(s, -inf) = s gives l_ip = 0.
    lse_neg = torch.logsumexp(all_neg.masked_fill(~neg_mask, torch.finfo(all_neg.dtype).min), dim=1)  # (B,)
    lse_neg = torch.where(neg_mask.any(dim=1), lse_neg, torch.full_like(lse_neg, float("-inf")))
    pair_loss = torch.logaddexp(logits, lse_neg[:, None]) - logits  # (B, B) l_ip for every pair
    pair_loss = torch.where(pos, pair_loss, torch.zeros_like(pair_loss))
    per_anchor = pair_loss.sum(dim=1)[anchors] / pos.sum(dim=1)[anchors]  # (A,)
    return per_anchor.mean().to(z.dtype)
