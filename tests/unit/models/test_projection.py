"""Euclidean and Poincaré projection heads: shapes, the ball, curvature handling, boundary safety."""

from __future__ import annotations

import math

import pytest
import torch

from cdco_core.errors import InputError
from cdco_core.losses import contrastive_loss
from cdco_core.models.projection import EuclideanProjection, PoincareProjection


def test_euclidean_projection_unit_vectors():
    torch.manual_seed(0)
    head = EuclideanProjection(32, 8)
    z = head(torch.randn(5, 32))
    assert z.shape == (5, 8)
    assert torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-6)


@pytest.mark.parametrize("c", [1.0, 0.1])
def test_poincare_projection_inside_ball(c):
    torch.manual_seed(0)
    head = PoincareProjection(32, 8, curvature=c)
    x = head(torch.randn(5, 32) * 100)  # huge tangent vectors: clipped to √c‖u‖ ≤ 2 before expmap0
    assert x.shape == (5, 8)
    # ‖x‖ = tanh(√c ‖u‖)/√c ≤ tanh(2)/√c; the geoopt margin alone would allow (1 - 4e-3)/√c
    assert (x.norm(dim=-1) <= math.tanh(2.0) / math.sqrt(c) + 1e-5).all()
    assert head.curvature.item() == pytest.approx(c, rel=1e-6)


def test_poincare_projection_matches_expmap0_for_small_inputs():
    # Below the clip radius the head is exactly ball.expmap0(W h + b): ‖x‖ = tanh(‖u‖) for c = 1.
    torch.manual_seed(0)
    head = PoincareProjection(4, 3)
    h = torch.randn(2, 4) * 0.01
    u = head.linear(h)
    x = head(h)
    assert torch.allclose(x.norm(dim=-1), torch.tanh(u.norm(dim=-1)), atol=1e-6)
    assert torch.allclose(x, head.ball.expmap0(u), atol=1e-7)


def test_unclipped_head_stays_inside_with_margin():
    head = PoincareProjection(4, 3, clip_r=None)
    x = head(torch.full((2, 4), 1e4))
    assert (x.norm(dim=-1) <= 1 - 4e-3 + 1e-6).all()  # geoopt's float32 margin


def test_fixed_curvature_is_a_buffer_not_a_parameter():
    head = PoincareProjection(4, 3, curvature=0.5)
    names = [n for n, _ in head.named_parameters()]
    assert names == ["linear.weight", "linear.bias"]
    head.requires_grad_(True)  # a trainer's "train everything" sweep must not unfreeze c
    assert "ball.isp_c" in head.state_dict()
    assert not head.ball.isp_c.requires_grad
    reloaded = PoincareProjection(4, 3, curvature=0.5)
    reloaded.load_state_dict(head.state_dict())
    assert reloaded.curvature.item() == pytest.approx(0.5, rel=1e-6)


def test_learned_curvature_gets_gradient_and_moves():
    torch.manual_seed(0)
    head = PoincareProjection(8, 4, curvature=1.0, learn_curvature=True)
    assert "ball.isp_c" in dict(head.named_parameters())
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    z = head(torch.randn(6, 8))
    loss = contrastive_loss(z, torch.tensor([0, 0, 1, 1, 2, 2]), None, "poincare", 0.1, head.ball)
    loss.backward()
    assert torch.isfinite(head.ball.isp_c.grad) and head.ball.isp_c.grad != 0
    opt.step()
    assert head.curvature.item() != pytest.approx(1.0, abs=1e-6)
    assert head.curvature.item() > 0  # c = softplus(isp_c)


def test_projection_bad_arguments():
    with pytest.raises(InputError, match="curvature must be > 0"):
        PoincareProjection(4, 3, curvature=0.0)
    with pytest.raises(InputError, match="clip_r must be > 0"):
        PoincareProjection(4, 3, clip_r=-1.0)
    with pytest.raises(InputError, match="dimensions must be >= 1"):
        EuclideanProjection(4, 0)
