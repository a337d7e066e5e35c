"""Paired bootstrap: identical systems, a clearly better system, determinism, shapes."""

from __future__ import annotations

import numpy as np
import pytest

from cdco_core.evaluation.bootstrap import PairedTask, paired_bootstrap
from cdco_core.evaluation.metrics import accuracy, pearson


def test_identical_predictions_give_zero_difference_and_p_one():
    y = np.array([0, 1, 1, 0, 1])
    preds = np.array([[0, 1, 0, 0, 1], [1, 1, 1, 0, 1]])  # (S=2, N=5)
    r = paired_bootstrap([PairedTask(accuracy, y, preds, preds.copy())], samples=200, seed=0)
    assert r.delta == 0.0 and r.ci_low == 0.0 and r.ci_high == 0.0
    assert r.p_value == pytest.approx(1.0)
    assert r.samples == 200 and r.examples == 5


def test_hand_example_observed_delta():
    # A right on all 4, B right on 2 of 4 -> delta = 1 - 1/2 = 0.5 (one seed)
    y = np.array([0, 1, 0, 1])
    t = PairedTask(accuracy, y, np.array([[0, 1, 0, 1]]), np.array([[0, 0, 0, 0]]))
    r = paired_bootstrap([t], samples=0)
    assert r.delta == pytest.approx(0.5) and np.isnan(r.p_value)


def test_clearly_better_system_is_significant_and_ci_excludes_zero():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=300)
    a = np.where(rng.random(300) < 0.9, y, 1 - y)[None]  # ~90% accurate
    b = np.where(rng.random(300) < 0.6, y, 1 - y)[None]  # ~60% accurate
    r = paired_bootstrap([PairedTask(accuracy, y, a, b)], samples=500, seed=3)
    assert 0.2 < r.delta < 0.4
    assert r.ci_low > 0 and r.ci_high < 0.5 and r.ci_low <= r.delta <= r.ci_high
    assert r.p_value == pytest.approx(1 / 501)  # no replicate reaches 0


def test_same_seed_same_result_and_scope_averages_tasks():
    rng = np.random.default_rng(2)
    y1, y2 = rng.integers(0, 3, 50), rng.normal(size=40)
    t1 = PairedTask(accuracy, y1, rng.integers(0, 3, (2, 50)), rng.integers(0, 3, (2, 50)))
    t2 = PairedTask(pearson, y2, y2 + rng.normal(size=(2, 40)), y2 + 2 * rng.normal(size=(2, 40)))
    r1 = paired_bootstrap([t1, t2], samples=100, seed=7)
    r2 = paired_bootstrap([t1, t2], samples=100, seed=7)
    assert r1 == r2
    assert r1.delta == pytest.approx((t1.delta() + t2.delta()) / 2)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"must be \(S, 3\) for both systems"):
        PairedTask(accuracy, np.array([0, 1, 1]), np.zeros((2, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least one task"):
        paired_bootstrap([], samples=10)
