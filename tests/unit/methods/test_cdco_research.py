"""The CDCO research variant ``cdco_r`` (issue 14): its loss, its negative filter, its schedules.

The registry contract (tests/unit/methods/test_contract.py) already runs ``cdco_r`` through a few training steps,
a save/reload and the key checks; these tests pin what its settings change.
"""

from __future__ import annotations

from types import SimpleNamespace

import geoopt
import pytest
import torch

from cdco_core.errors import ConfigError
from cdco_core.losses import contrastive_loss
from cdco_core.methods import get_method
from cdco_core.methods.cdco.research import research_contrastive_loss, same_label_negatives

KEYS = torch.tensor([0, 0, 1, 1, 0, 1, -1, 2])


def points(space: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, geoopt.PoincareBall | None]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(8, 16, generator=g, dtype=torch.float64) * 0.2
    n = torch.randn(8, 4, 16, generator=g, dtype=torch.float64) * 0.2
    if space == "euclidean":
        return torch.nn.functional.normalize(z, dim=-1), torch.nn.functional.normalize(n, dim=-1), None
    return z, n, geoopt.PoincareBall(c=1.0)


@pytest.mark.parametrize("space", ["euclidean", "poincare"])
def test_defaults_equal_cdcos_loss_and_gradient(space):
    z, n, ball = points(space)
    za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    a = contrastive_loss(za, KEYS, n, space, 0.1, ball=ball)
    b = research_contrastive_loss(zb, KEYS, n, space, 0.1, ball=ball)
    a.backward()
    b.backward()
    assert float(b) == pytest.approx(float(a), rel=1e-9)
    assert torch.allclose(za.grad, zb.grad, atol=1e-9)


@pytest.mark.parametrize("space", ["euclidean", "poincare"])
def test_dropping_every_negative_equals_in_batch_negatives_only(space):
    z, n, ball = points(space, seed=1)
    dropped = research_contrastive_loss(z, KEYS, n, space, 0.1, ball=ball, drop=torch.ones(8, 4, dtype=torch.bool))
    assert float(dropped) == pytest.approx(float(contrastive_loss(z, KEYS, None, space, 0.1, ball=ball)), rel=1e-9)
    some = torch.zeros(8, 4, dtype=torch.bool)
    some[:, :2] = True
    kept_two = research_contrastive_loss(z, KEYS, n, space, 0.1, ball=ball, drop=some)
    assert float(kept_two) == pytest.approx(float(contrastive_loss(z, KEYS, n[:, 2:], space, 0.1, ball=ball)),
                                            rel=1e-9)


def test_debiasing_discounts_negatives_that_look_like_the_positive():
    """Half of each anchor's ODMS negatives are copies of its positive (false negatives), half are far away:
    with τ⁺ = 0.5 the debiased estimate removes the copies' mass, so the loss falls towards the in-batch-only loss.
    """
    z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.14], [-1.0, 0.0], [-0.99, -0.14]],
                                                   dtype=torch.float64), dim=-1)
    keys = torch.tensor([0, 0, 1, 1])
    positive_of = z[[1, 0, 3, 2]]
    negs = torch.stack([positive_of, positive_of, -positive_of, -positive_of], dim=1)  # (4, 4, 2)
    plain = research_contrastive_loss(z, keys, negs, "euclidean", 0.1)
    debiased = research_contrastive_loss(z, keys, negs, "euclidean", 0.1, tau_plus=torch.full((4,), 0.5))
    none = research_contrastive_loss(z, keys, None, "euclidean", 0.1)
    assert float(plain) > float(debiased) >= float(none) - 1e-9
    assert float(plain) - float(debiased) > 0.5
    # rows whose tau_plus is 0 (e.g. pair tasks) keep the plain sum
    mixed = research_contrastive_loss(z, keys, negs, "euclidean", 0.1, tau_plus=torch.tensor([0.0, 0.0, 0.0, 0.0]))
    assert float(mixed) == pytest.approx(float(plain), rel=1e-12)


def test_label_aware_filter_drops_negatives_the_anchor_head_gives_the_anchors_label():
    head = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))  # class = the larger coordinate
    model = SimpleNamespace(head_specs={"sst2": SimpleNamespace(type="classification"),
                                        "rte": SimpleNamespace(type="pair_classification")},
                            head_logits=lambda task, x: head(x))
    batch = SimpleNamespace(tasks=["sst2", "sst2", "rte"], labels=torch.tensor([0, 1, 0]))
    negs = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [0.0, 2.0]]])
    mask = same_label_negatives(model, batch, negs)
    assert mask.tolist() == [[True, False], [False, True], [False, False]]  # a pair task's rows are never filtered


def test_settings_shape_the_schedule(smoke_cfg):
    cfg = smoke_cfg
    base = [s.model_dump() for s in get_method("cdco", cfg).stages(cfg)]
    same = get_method("cdco_r", cfg)
    assert [s.model_dump() for s in same.stages(cfg)] == base

    raw = cfg.model_copy(update={"method_settings": {**cfg.method_settings,
                                                     "cdco_r": {"contrastive_scale": 0.0}}})
    task_only = get_method("cdco_r", raw)
    assert all(s.losses == {"task": 1.0} and s.space == "none" for s in task_only.stages(raw))
    assert [s.steps for s in task_only.stages(raw)] == [s["steps"] for s in base]
    assert not task_only.uses_negatives

    flat_cfg = cfg.model_copy(update={"method_settings": {**cfg.method_settings, "cdco_r": {"schedule": "flat"}}})
    (flat,) = get_method("cdco_r", flat_cfg).stages(flat_cfg)
    assert flat.groups == ["all"] and flat.steps == sum(s["steps"] for s in base)
    assert flat.losses == base[-1]["losses"] and flat.lr == base[0]["lr"]


def test_auto_poincare_temperature_matches_the_logit_ranges(smoke_cfg, tiny_model):
    cfg = smoke_cfg.model_copy(update={"method_settings": {**smoke_cfg.method_settings,
                                                           "cdco_r": {"temperature_poincare": "auto"}}})
    method = get_method("cdco_r", cfg)
    proj = SimpleNamespace(clip_r=2.0, curvature=torch.tensor(4.0))
    model = SimpleNamespace(poincare_proj=proj)
    assert method.temperature(model, "euclidean", 0.1) == pytest.approx(0.1)
    # cosine spans 2/τ_E = 20; the ball's distances span 4r/√c = 4: τ_P = 0.1 · 2·2/2 = 0.2 gives 4/0.2 = 20
    assert method.temperature(model, "poincare", 0.1) == pytest.approx(0.2)


def test_unknown_setting_is_refused_naming_it(smoke_cfg):
    from cdco_core.profile import with_overrides

    with pytest.raises(ConfigError, match="label_awre"):
        with_overrides(smoke_cfg, ["method_settings.cdco_r.label_awre=true"], "test")


@pytest.mark.parametrize("space", ["euclidean", "poincare"])
def test_centred_projection_ignores_a_shift_of_one_side(space, smoke_cfg):
    """Shifting every row of one side by the same vector (a domain offset) leaves the centred points unchanged."""
    from cdco_core.methods.cdco.method import project
    from cdco_core.models.projection import EuclideanProjection, PoincareProjection

    torch.manual_seed(0)
    proj = EuclideanProjection(8, 4) if space == "euclidean" else PoincareProjection(8, 4, curvature=1.0, clip_r=2.0)
    pooled = torch.randn(6, 8)
    shift = torch.randn(1, 8) * 3
    assert torch.allclose(project(proj, pooled, space, True), project(proj, pooled + shift, space, True), atol=1e-5)
    assert not torch.allclose(project(proj, pooled, space, False), project(proj, pooled + shift, space, False),
                              atol=1e-3)


def test_anchor_tasks_make_other_rows_negatives_only(smoke_cfg):
    """With anchor_tasks, a row of another task is never an anchor: a batch of only such rows has no term."""
    cfg = smoke_cfg.model_copy(update={"method_settings": {**smoke_cfg.method_settings,
                                                           "cdco_r": {"anchor_tasks": ["sms_spam"], "centre": False}}})
    method = get_method("cdco_r", cfg)
    proj = torch.nn.Linear(4, 3)
    model = SimpleNamespace(euclidean_proj=lambda x: torch.nn.functional.normalize(proj(x), dim=-1),
                            poincare_proj=None)
    pooled = torch.randn(4, 4)
    batch = SimpleNamespace(choice_mask=None, negatives=None, task_types=["classification"] * 4,
                            tasks=["rotten_tomatoes"] * 4, keys=torch.tensor([0, 0, 1, 1]))
    assert float(method.contrastive(model, batch, pooled, "euclidean", 0.1)) == 0.0
    batch.tasks = ["sms_spam"] * 4
    assert float(method.contrastive(model, batch, pooled, "euclidean", 0.1)) > 0.0


@pytest.mark.parametrize("space", ["euclidean", "poincare"])
def test_cdco_centre_setting_is_the_research_variants_centring(space, smoke_cfg):
    """``method_settings.cdco.centre`` gives the core method the centred term cdco_r measured (same value), and
    off it is CDCO's plain term."""
    from cdco_core.models.projection import EuclideanProjection, PoincareProjection

    torch.manual_seed(1)
    euc, poinc = EuclideanProjection(8, 4), PoincareProjection(8, 4, curvature=1.0, clip_r=2.0)
    model = SimpleNamespace(euclidean_proj=euc, poincare_proj=poinc)
    batch = SimpleNamespace(choice_mask=None, negatives=torch.randn(6, 3, 8), task_types=["classification"] * 6,
                            tasks=["sms_spam"] * 6, keys=torch.tensor([0, 0, 1, 1, 0, 1]))
    pooled = torch.randn(6, 8)

    def term(name: str, centre: bool) -> float:
        cfg = smoke_cfg.model_copy(update={"method_settings": {name: {"centre": centre}}})
        return float(get_method(name, cfg).contrastive(model, batch, pooled, space, 0.1))

    assert term("cdco", True) == pytest.approx(term("cdco_r", True), rel=1e-6)
    assert term("cdco", False) == pytest.approx(term("cdco_r", False), rel=1e-6)
    assert term("cdco", True) != pytest.approx(term("cdco", False), rel=1e-3)
