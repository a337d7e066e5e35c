"""Consistency calibration (CoCa): find where the task view and the pre-defined view disagree most.

Disagreement of one example, with ``f_t`` the task head, ``e_t(x)`` the generator's task-specific embedding
and ``h(x)`` the shared (pre-defined-task) embedding:

    D(x) = ½ [KL(p_t ‖ p_0) + KL(p_0 ‖ p_t)],   p_t = softmax(f_t(e_t(x))),  p_0 = softmax(f_t(h(x)))

(regression heads: D(x) = (f_t(e_t(x)) − f_t(h(x)))²). The adversary solves
``δ* = argmax_{‖δ_i‖₂ ≤ ε ∀ tokens i} D(x + δ)`` on the input word embeddings by K steps of projected
L2 gradient ascent, ``δ ← Π_ε(δ + α ∇_δ D / ‖∇_δ D‖)`` per token; the outer step then minimises D(x + δ*).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Logits of excluded options (multiple choice) may be -inf; KL needs finite values. exp(-1e4) is 0 in float32.
_LOGIT_FLOOR = -1e4


def prediction_divergence(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    task_type: str,
    choice_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean disagreement between two predictions of the same head on the same rows.

    Args:
        logits_a: (B, C) logits (or (B, 1) predictions for regression) from the task-specific view.
        logits_b: the same shape, from the pre-defined view.
        task_type: a task type of the config; "regression" uses the squared difference, every other type
            the symmetric KL of the softmax distributions.
        choice_mask: optional (B, C) bool, True where a multiple-choice option exists; absent options get
            probability 0 in both distributions.

    Returns:
        A scalar >= 0, zero exactly when both predictions are equal.

    Raises:
        ValueError: the shapes differ.
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"prediction_divergence: shapes differ, {tuple(logits_a.shape)} vs {tuple(logits_b.shape)}")
    if task_type == "regression":
        return (logits_a - logits_b).pow(2).sum(-1).mean()
    if choice_mask is not None:
        logits_a = logits_a.masked_fill(~choice_mask, _LOGIT_FLOOR)
        logits_b = logits_b.masked_fill(~choice_mask, _LOGIT_FLOOR)
    log_p = F.log_softmax(logits_a.clamp_min(_LOGIT_FLOOR), dim=-1)  # (B, C)
    log_q = F.log_softmax(logits_b.clamp_min(_LOGIT_FLOOR), dim=-1)  # (B, C)
    # ½[KL(p‖q) + KL(q‖p)] = ½ Σ_c (p_c − q_c)(log p_c − log q_c)
    sym_kl = 0.5 * ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1)  # (B,)
    return sym_kl.mean()


def project_to_ball(delta: torch.Tensor, epsilon: float, mask: torch.Tensor) -> torch.Tensor:
    """Per-token L2 projection: ``δ_i ← δ_i · min(1, ε / ‖δ_i‖)``; padding positions set to 0.

    Args:
        delta: (B, T, H) perturbation.
        epsilon: radius of every token's ball (absolute units of the embeddings).
        mask: (B, T) attention mask; 0 = padding.
    """
    norms = delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # (B, T, 1)
    scale = (epsilon / norms).clamp(max=1.0)
    return delta * scale * mask.unsqueeze(-1).to(delta.dtype)


def random_start(shape: torch.Size, radius: float, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A random direction per token with norm ``radius`` (global torch RNG, so resume replays it)."""
    xi = torch.randn(shape, dtype=dtype, device=mask.device)  # (B, T, H)
    return F.normalize(xi, dim=-1) * radius * mask.unsqueeze(-1).to(dtype)


def pgd_perturbation(
    objective: Callable[[torch.Tensor], torch.Tensor],
    shape: torch.Size,
    mask: torch.Tensor,
    epsilon: float,
    step_size: float,
    steps: int,
    init_fraction: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """K steps of projected L2 gradient ascent of ``objective(δ)`` inside the per-token ε-ball.

    Only δ is differentiated (``torch.autograd.grad``), so no parameter gradient accumulates here.

    Args:
        objective: maps δ (B, T, H) to the scalar disagreement D(x + δ).
        shape: (B, T, H) of the input embeddings.
        mask: (B, T) attention mask; padding is never perturbed.
        epsilon: ball radius; step_size: α; steps: K (>= 1). Absolute units.
        init_fraction: the random start's norm as a fraction of epsilon.

    Returns:
        δ* (B, T, H), detached, every token's norm <= epsilon.
    """
    if steps < 1 or epsilon <= 0 or step_size <= 0:
        raise ValueError(f"pgd_perturbation: need steps >= 1, epsilon > 0, step_size > 0; got {steps}, "
                         f"{epsilon}, {step_size}")
    delta = random_start(shape, init_fraction * epsilon, mask, dtype)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(delta), delta)  # (B, T, H)
        step = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        delta = project_to_ball(delta.detach() + step_size * step, epsilon, mask)
    return delta.detach()
