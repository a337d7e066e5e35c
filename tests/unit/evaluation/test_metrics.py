"""Metric functions: hand-computed values on a few elements, agreement with scikit-learn and scipy, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from cdco_core.data.spec import TaskSpec
from cdco_core.evaluation import metrics as M
from cdco_core.evaluation.metrics import MetricError


def test_hand_computed_binary():
    y = [0, 1, 1, 0]
    p = [0, 1, 0, 0]
    assert M.accuracy(y, p) == pytest.approx(3 / 4)
    # class 0: TP=2 FP=1 FN=0 -> F1 = 4/5; class 1: TP=1 FP=0 FN=1 -> F1 = 2/3
    assert M.macro_f1(y, p) == pytest.approx((4 / 5 + 2 / 3) / 2)
    # TP=1 TN=2 FP=0 FN=1: (1*2 - 0*1) / sqrt(1*2*3*2) = 2/sqrt(12)
    assert M.mcc(y, p) == pytest.approx(2 / np.sqrt(12))


def test_hand_computed_correlations():
    y = [1.0, 2.0, 3.0]
    assert M.pearson(y, [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert M.pearson(y, [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # y centred (-1,0,1), p=(1,3,2) centred (-1,1,0): cov 1, norms sqrt2*sqrt2 -> 0.5
    assert M.pearson(y, [1.0, 3.0, 2.0]) == pytest.approx(0.5)
    # monotone but not linear: Spearman 1, Pearson below 1
    assert M.spearman(y, [1.0, 10.0, 100.0]) == pytest.approx(1.0)
    assert M.pearson(y, [1.0, 10.0, 100.0]) < 0.95
    # ties share the mean rank: (1, 2.5, 2.5) vs (1, 2, 3) -> pearson of centred (-1,.5,.5)·(-1,0,1)
    assert M.spearman([1.0, 2.0, 2.0], y) == pytest.approx(1.5 / np.sqrt(1.5 * 2))


def test_degenerate_inputs_score_zero_not_nan():
    assert M.mcc([0, 1, 0], [1, 1, 1]) == 0.0
    assert M.pearson([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == 0.0
    assert M.spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == 0.0


@pytest.mark.parametrize("k", [2, 3, 5])
def test_agrees_with_sklearn(k):
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, size=200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, k, size=200))
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))
    assert M.macro_f1(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert M.mcc(y, p) == pytest.approx(skm.matthews_corrcoef(y, p))


def test_macro_f1_counts_a_class_only_predicted():
    # class 2 never occurs in y but is predicted: sklearn includes it with F1 = 0
    y, p = [0, 1, 1, 0], [0, 1, 2, 0]
    assert M.macro_f1(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"))


def test_agrees_with_scipy():
    rng = np.random.default_rng(0)
    y = rng.normal(size=100)
    p = y + rng.normal(scale=0.7, size=100)
    p[:10] = np.round(p[:10])  # a few ties
    y[5:15] = 1.0
    assert M.pearson(y, p) == pytest.approx(stats.pearsonr(y, p).statistic)
    assert M.spearman(y, p) == pytest.approx(stats.spearmanr(y, p).statistic)


def test_length_mismatch_and_empty():
    with pytest.raises(ValueError, match="differ in length: 3 vs 2"):
        M.accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="zero examples"):
        M.accuracy([], [])


def test_metric_must_fit_task_type():
    with pytest.raises(MetricError, match=r"task 'stsb': metric 'accuracy' does not fit type 'regression'; "
                                          r"allowed: pearson, spearman"):
        M.score("stsb", "regression", "accuracy", [1.0], [1.0])
    with pytest.raises(MetricError, match="'pearson' does not fit type 'multiple_choice'; allowed: accuracy"):
        M.check_metric("csqa", "multiple_choice", "pearson")
    with pytest.raises(MetricError, match="'bleu' does not fit type 'classification'"):
        M.check_metric("sst2", "classification", "bleu")


def test_task_metric_names_main_first():
    spec = TaskSpec(name="sms", kind="ID", type="classification", source="package:sms_spam", metric="macro_f1")
    assert M.task_metric_names(spec) == ["macro_f1", "accuracy", "mcc"]
    stsb = TaskSpec(name="stsb", kind="ID", type="regression", source="mirror:stsb")
    assert M.task_metric_names(stsb) == ["pearson", "spearman"]
    got = M.score_task(stsb, [1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert list(got) == ["pearson", "spearman"] and got["pearson"] == pytest.approx(0.5)
    # a spec that slipped past validation (model_construct skips it) is still caught at scoring time
    bad = TaskSpec.model_construct(name="cola", kind="ID", type="classification", source="mirror:cola",
                                   metric="pearson", files=None)
    with pytest.raises(MetricError, match="task 'cola': metric 'pearson' does not fit type 'classification'"):
        M.task_metric_names(bad)


def test_binary_f1_by_hand_and_only_for_tasks_that_choose_it():
    from cdco_core.data.spec import TaskSpec
    from cdco_core.evaluation.metrics import f1, score_task

    # TP = 2 (rows 0, 4), true positives 3, predicted positives 3: F1 = 2*2 / (3 + 3)
    assert f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(4 / 6)
    assert f1([0, 0], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="binary F1 of label 1"):
        f1([0, 2], [0, 1])
    mrpc = TaskSpec(name="mrpc", kind="ID", type="pair_classification", source="mirror:mrpc", metric="f1")
    assert list(score_task(mrpc, [1, 0], [1, 1])) == ["f1", "accuracy", "macro_f1", "mcc"]
    rte = TaskSpec(name="rte", kind="ID", type="pair_classification", source="mirror:rte")
    assert "f1" not in score_task(rte, [1, 0], [1, 1])  # opt-in: not reported for every two-class task
