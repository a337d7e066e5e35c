"""The fresh linear head: learns separable synthetic features, is deterministic, refuses bad shapes."""

from __future__ import annotations

import numpy as np
import pytest

from cdco_core.evaluation.heads import HeadBudget, train_head
from cdco_core.evaluation.metrics import accuracy, pearson

BUDGET = HeadBudget(epochs=20, lr=1e-2, batch_size=32)


def _blobs(rng, n, k, h=16, shift=3.0):
    centres = rng.normal(size=(k, h)) * shift
    y = rng.integers(0, k, size=n)
    return centres[y] + rng.normal(size=(n, h)), y


def test_separable_classes_reach_high_accuracy():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, 400, 3)
    head = train_head("classification", x[:300], y[:300], budget=BUDGET, seed=0, num_labels=3)
    assert head.weight.shape == (16, 3) and head.bias.shape == (3,)
    assert accuracy(y[300:], head.predict(x[300:])) > 0.95


def test_regression_head_recovers_a_linear_target_on_its_scale():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8))
    y = 5.0 + 2.0 * x @ rng.normal(size=8)
    head = train_head("regression", x[:200], y[:200], budget=BUDGET, seed=0)
    pred = head.predict(x[200:])
    assert pred.shape == (100,)
    assert pearson(y[200:], pred) > 0.98
    assert abs(pred.mean() - y[200:].mean()) < 0.5  # un-standardised back to the target's scale


def test_multiple_choice_scorer_with_ragged_options():
    rng = np.random.default_rng(2)
    direction = rng.normal(size=12)
    n, c = 300, 4
    x = rng.normal(size=(n, c, 12))
    y = rng.integers(0, c, size=n)
    x[np.arange(n), y] += 1.5 * direction  # the true option leans along one direction
    mask = np.ones((n, c), bool)
    mask[::3, 3] = False  # every third item has 3 options only
    y[::3] = np.minimum(y[::3], 2)
    x[::3, 3] = 100.0 * direction  # a padded slot that would win if the mask were ignored
    x[::3][np.arange(len(y[::3])), y[::3]] += 1.5 * direction
    head = train_head("multiple_choice", x[:200], y[:200], budget=BUDGET, seed=0, mask=mask[:200])
    pred = head.predict(x[200:], mask[200:])
    assert pred.shape == (100,)
    assert np.all(pred[mask[200:, 3] == False] < 3)  # noqa: E712 - masked options are never chosen
    assert accuracy(y[200:], pred) > 0.85


def test_same_seed_same_head_different_seed_different_order():
    rng = np.random.default_rng(3)
    x, y = _blobs(rng, 100, 2, shift=0.5)
    h1 = train_head("classification", x, y, budget=BUDGET, seed=5, num_labels=2)
    h2 = train_head("classification", x, y, budget=BUDGET, seed=5, num_labels=2)
    h3 = train_head("classification", x, y, budget=BUDGET, seed=6, num_labels=2)
    np.testing.assert_array_equal(h1.weight, h2.weight)
    assert not np.array_equal(h1.weight, h3.weight)


def test_bad_input_is_refused():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="no fresh head for task type 'ranking'"):
        train_head("ranking", x, np.zeros(4), budget=BUDGET, seed=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        train_head("classification", x, np.array([0, 1, 2, 0]), budget=BUDGET, seed=0, num_labels=2)
    with pytest.raises(ValueError, match="multiple_choice: features must be 3-d"):
        train_head("multiple_choice", x, np.zeros(4, int), budget=BUDGET, seed=0)
