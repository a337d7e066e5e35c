"""Task losses, similarities and the cross-domain InfoNCE, against values worked out by hand."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch

from cdco_core.errors import InputError
from cdco_core.losses import contrastive_loss, similarity, task_loss

# The three vectors of the hand-worked InfoNCE (Euclidean, τ = 0.5); see test_infonce_by_hand_euclidean.
Z3 = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]


# ------------------------------------------------------------------------------------------ task losses
def test_cross_entropy_by_hand():
    # logits (0, ln 3): softmax = (1/4, 3/4); label 1 -> -ln(3/4) = ln(4/3) = 0.287682
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert task_loss("classification", logits, torch.tensor([1])).item() == pytest.approx(0.287682, abs=1e-6)
    assert task_loss("boolean_qa", logits, torch.tensor([1])).item() == pytest.approx(0.287682, abs=1e-6)


def test_regression_mse_by_hand():
    # predictions (1, 3), targets (0, 1): ((1-0)^2 + (3-1)^2) / 2 = 2.5
    loss = task_loss("regression", torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0]))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(2.5)


def test_multiple_choice_mask_by_hand():
    # option 3 is absent: softmax over (1, 2) only; label 1 -> -log(e^2 / (e^1 + e^2)) = log(1 + e^-1) = 0.313262
    logits = torch.tensor([[1.0, 2.0, 100.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    loss = task_loss("multiple_choice", logits, torch.tensor([1]), choice_mask=mask)
    assert loss.item() == pytest.approx(0.313262, abs=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 2] == 0


def test_task_loss_bad_inputs():
    with pytest.raises(InputError, match="unknown task type 'ranking'.*regression"):
        task_loss("ranking", torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="must share the batch size"):
        task_loss("classification", torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        task_loss("classification", torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*\[0, 3\]"):
        task_loss("classification", torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="regression logits must be"):
        task_loss("regression", torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="masked"):
        task_loss(
            "multiple_choice", torch.zeros(1, 3), torch.tensor([2]), choice_mask=torch.tensor([[True, True, False]])
        )


# ------------------------------------------------------------------------------------------ similarity
@pytest.mark.parametrize(
    ("c", "x", "y", "dist"),
    [
        (1.0, [0.0, 0.0], [0.5, 0.0], 1.098612),  # 2 artanh(0.5) = ln 3
        (1.0, [0.5, 0.0], [0.0, 0.5], 1.680700),
        (0.1, [0.5, 0.0], [0.0, 0.5], 1.438052),
    ],
)
def test_poincare_distance_anchors(c, x, y, dist):
    ball = geoopt.PoincareBall(c=c)
    s = similarity(torch.tensor([x]), torch.tensor([y]), "poincare", ball)
    assert s.shape == (1,) and s.dtype == torch.float32
    assert s.item() == pytest.approx(-dist, abs=1e-5)


def test_similarity_broadcast_shapes_and_cosine():
    x = torch.tensor(Z3)
    s = similarity(x[:, None, :], x[None, :, :], "euclidean")
    assert s.shape == (3, 3)
    assert s[0, 1].item() == pytest.approx(0.6) and s[1, 2].item() == pytest.approx(0.8)
    assert similarity(2 * x, x, "euclidean").tolist() == pytest.approx([1.0, 1.0, 1.0])  # scale-free
    neg = torch.randn(3, 5, 2)
    assert similarity(x[:, None, :], neg, "poincare", geoopt.PoincareBall()).shape == (3, 5)


def test_similarity_bad_inputs():
    with pytest.raises(InputError, match="unknown space 'sphere'.*euclidean, poincare"):
        similarity(torch.zeros(2, 3), torch.zeros(2, 3), "sphere")
    with pytest.raises(ValueError, match="last dimensions differ"):
        similarity(torch.zeros(2, 3), torch.zeros(2, 4), "euclidean")
    with pytest.raises(ValueError, match="do not broadcast"):
        similarity(torch.zeros(2, 3), torch.zeros(4, 3), "euclidean")
    with pytest.raises(ValueError, match="needs the geoopt.PoincareBall"):
        similarity(torch.zeros(2, 3), torch.zeros(2, 3), "poincare")


# ------------------------------------------------------------------------------------------ InfoNCE
def test_infonce_by_hand_euclidean():
    # z1 = (1, 0), z2 = (0.6, 0.8), z3 = (0, 1); keys (0, 0, 1); τ = 0.5.
    # cos: s12 = 0.6, s13 = 0, s23 = 0.8  ->  s/τ: 1.2, 0, 1.6
    # anchor 1: positive 2, negatives {3}: -log(e^1.2 / (e^1.2 + e^0))   = log(1 + e^-1.2) = 0.263282
    # anchor 2: positive 1, negatives {3}: -log(e^1.2 / (e^1.2 + e^1.6)) = log(1 + e^0.4)  = 0.913015
    # anchor 3: no positive -> skipped.      L = (0.263282 + 0.913015) / 2 = 0.588149
    z = torch.tensor(Z3, requires_grad=True)
    loss = contrastive_loss(z, torch.tensor([0, 0, 1]), None, "euclidean", 0.5)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(0.588149, abs=1e-5)
    loss.backward()
    assert z.grad.shape == (3, 2) and torch.isfinite(z.grad).all()
    # A key -1 row is never an anchor but stays a negative: same value as key 1 (which had no positive).
    same = contrastive_loss(torch.tensor(Z3), torch.tensor([0, 0, -1]), None, "euclidean", 0.5)
    assert same.item() == pytest.approx(0.588149, abs=1e-5)


def test_infonce_by_hand_poincare():
    # c = 1, points o = (0, 0), a = (0.5, 0), b = (0, 0.5); keys (0, 0, 1); τ = 1; s = -d.
    # d(o,a) = d(o,b) = 1.098612, d(a,b) = 1.680700 (the geoopt anchors).
    # anchor o: positive a, negative b: log(1 + e^{-1.098612 + 1.098612}) = log 2             = 0.693147
    # anchor a: positive o, negative b: log(1 + e^{-1.680700 + 1.098612}) = log(1 + 0.558730) = 0.443872
    # L = (0.693147 + 0.443872) / 2 = 0.568510
    z = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]], dtype=torch.float64)
    loss = contrastive_loss(z, torch.tensor([0, 0, 1]), None, "poincare", 1.0, geoopt.PoincareBall(c=1.0))
    assert loss.item() == pytest.approx(0.568510, abs=1e-5)


def test_hard_negatives_enter_the_denominator():
    # Each anchor gets one hard negative; for anchor 1 it is (0, 1): cos 0 -> adds e^0 to its denominator:
    # log(1 + 2 e^-1.2); anchor 2's is (-1, 0): cos -0.6 -> adds e^-1.2: log(1 + (e^1.6 + e^-1.2) / e^1.2).
    z = torch.tensor(Z3)
    hard = torch.tensor([[[0.0, 1.0]], [[-1.0, 0.0]], [[1.0, 0.0]]])  # (B, K=1, D)
    loss = contrastive_loss(z, torch.tensor([0, 0, 1]), hard, "euclidean", 0.5)
    expected = (math.log(1 + 2 * math.exp(-1.2)) + math.log(1 + math.exp(0.4) + math.exp(-2.4))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    empty = contrastive_loss(z, torch.tensor([0, 0, 1]), torch.zeros(3, 0, 2), "euclidean", 0.5)
    assert empty.item() == pytest.approx(0.588149, abs=1e-5)  # K = 0 is the same as None


def test_no_anchor_gives_zero_with_graph():
    z = torch.randn(4, 3, requires_grad=True)
    loss = contrastive_loss(z, torch.tensor([-1, -1, 0, 1]), None, "euclidean", 0.1)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_anchor_without_negatives_contributes_zero():
    # All rows share a key: every positive pair has an empty N(i), so l_ip = -log(e^s / e^s) = 0, grads finite.
    z = torch.randn(3, 4, requires_grad=True)
    loss = contrastive_loss(z, torch.tensor([2, 2, 2]), None, "poincare", 0.1, geoopt.PoincareBall())
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(z.grad).all()


def test_poincare_near_boundary_finite_loss_and_grads():
    torch.manual_seed(0)
    ball = geoopt.PoincareBall(c=1.0, learnable=True)
    direction = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    z = (direction * (1 - 1e-7)).requires_grad_(True)  # beyond float32's projection margin
    negatives = torch.nn.functional.normalize(torch.randn(6, 3, 8), dim=-1) * 0.9999999
    keys = torch.tensor([0, 0, 1, 1, 2, -1])
    for dtype in (torch.float64, None):  # with and without the float64 distance
        z.grad, ball.isp_c.grad = None, None
        loss = contrastive_loss(z, keys, negatives, "poincare", 0.05, ball, distance_dtype=dtype)
        loss.backward()
        assert torch.isfinite(loss) and loss.item() > 0
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
        assert torch.isfinite(ball.isp_c.grad)


def test_poincare_gradcheck():
    # Autograd through geoopt's distance matches finite differences (float64, away from the clamps).
    torch.manual_seed(1)
    z = (torch.randn(4, 3, dtype=torch.float64) * 0.3).requires_grad_(True)
    keys = torch.tensor([0, 0, 1, 1])
    ball = geoopt.PoincareBall(c=0.5)
    assert torch.autograd.gradcheck(lambda t: contrastive_loss(t, keys, None, "poincare", 0.5, ball), (z,))


def test_contrastive_bad_inputs():
    z = torch.randn(3, 2)
    keys = torch.tensor([0, 0, 1])
    with pytest.raises(InputError, match="unknown space 'hyperboloid'"):
        contrastive_loss(z, keys, None, "hyperboloid", 0.1)
    with pytest.raises(InputError, match="temperature must be a finite number > 0, got 0.0"):
        contrastive_loss(z, keys, None, "euclidean", 0.0)
    with pytest.raises(ValueError, match=r"keys must be an integer tensor of shape \(3,\)"):
        contrastive_loss(z, torch.tensor([0, 1]), None, "euclidean", 0.1)
    with pytest.raises(ValueError, match="keys must be an integer tensor"):
        contrastive_loss(z, torch.tensor([0.0, 0.0, 1.0]), None, "euclidean", 0.1)
    with pytest.raises(ValueError, match=r"negatives must be \(B, K, D\) = \(3, K, 2\)"):
        contrastive_loss(z, keys, torch.randn(3, 4, 5), "euclidean", 0.1)
    with pytest.raises(ValueError, match=r"z must be \(B, D\)"):
        contrastive_loss(torch.randn(3), keys, None, "euclidean", 0.1)
    with pytest.raises(ValueError, match="needs the geoopt.PoincareBall"):
        contrastive_loss(z, keys, None, "poincare", 0.1)
