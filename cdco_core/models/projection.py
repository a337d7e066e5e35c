"""Projection heads from the pooled encoder output into the two contrastive spaces.

- :class:`EuclideanProjection`: ``z = W h + b``, then ``z / ‖z‖`` (cosine similarity becomes a dot product).
- :class:`PoincareProjection`: ``u = W h + b`` in the tangent space at the origin, clipped to a maximum
  hyperbolic radius, mapped onto the ball with geoopt's ``expmap0`` and projected inside it with geoopt's
  margin (``projx``).
"""

from __future__ import annotations

import geoopt
import torch
import torch.nn.functional as F
from torch import nn

from cdco_core.errors import InputError


class EuclideanProjection(nn.Module):
    """Linear map to ``out_dim`` followed by L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise InputError(f"projection dimensions must be >= 1, got in_dim={in_dim}, out_dim={out_dim}")
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Map pooled (B, H) representations to unit vectors (B, out_dim)."""
        return F.normalize(self.linear(pooled), dim=-1, eps=1e-8)  # (B, D)


class PoincareProjection(nn.Module):
    """Linear map to the tangent space at 0, then ``expmap0`` onto the Poincaré ball of curvature -c.

    ``x = proj( exp_0^c(clip(u)) )`` with ``exp_0^c(u) = tanh(√c ‖u‖) u / (√c ‖u‖)`` (geoopt's convention),
    ``clip(u) = u · min(1, r / (√c ‖u‖))`` and ``proj`` geoopt's ``projx`` (‖x‖ ≤ (1 - ε)/√c, ε = 4e-3 in
    float32, 1e-5 in float64).

    The clip (feature clipping, Guo et al. 2022, "Clipped hyperbolic classifiers are super-hyperbolic
    classifiers") keeps points within hyperbolic distance 2r/√c of the origin: without it a 64-d linear output
    of norm ≫ 1 lands on the boundary, where tanh saturates, gradients vanish and float32 distances lose all
    precision. ``clip_r=None`` disables it (then only the projection margin protects the boundary).

    Attributes:
        ball: the ``geoopt.PoincareBall``; pass it to :func:`cdco_core.losses.contrastive_loss`. With a fixed
            curvature its parameter is stored as a buffer, so no optimizer or ``requires_grad_`` sweep can
            change c by accident; with ``learn_curvature`` it is a parameter (c = softplus(isp_c) > 0).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        curvature: float = 1.0,
        learn_curvature: bool = False,
        clip_r: float | None = 2.0,
    ) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise InputError(f"projection dimensions must be >= 1, got in_dim={in_dim}, out_dim={out_dim}")
        if not curvature > 0:
            raise InputError(f"train.curvature must be > 0 (the ball has curvature -c), got {curvature!r}")
        if clip_r is not None and not clip_r > 0:
            raise InputError(f"clip_r must be > 0 or None, got {clip_r!r}")
        self.linear = nn.Linear(in_dim, out_dim)
        self.ball = geoopt.PoincareBall(c=curvature, learnable=learn_curvature)
        if not learn_curvature:
            isp_c = self.ball._parameters.pop("isp_c").detach()
            self.ball.register_buffer("isp_c", isp_c)
        self.clip_r = clip_r

    @property
    def curvature(self) -> torch.Tensor:
        """c > 0 (the ball has sectional curvature -c)."""
        return self.ball.c

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Map pooled (B, H) representations to points (B, out_dim) strictly inside the ball."""
        u = self.linear(pooled)  # (B, D) tangent vectors at the origin
        if self.clip_r is not None:
            scaled_norm = u.norm(dim=-1, keepdim=True).clamp_min(1e-15) * self.ball.c.sqrt()  # (B, 1)
            u = u * torch.clamp(self.clip_r / scaled_norm, max=1.0)
        return self.ball.projx(self.ball.expmap0(u, project=False))  # (B, D)
