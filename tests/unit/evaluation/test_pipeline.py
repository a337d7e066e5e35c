"""Input checks before training; evaluate_model (evaluation/scoring.py) on the smoke tasks with a real (untrained)
multi-task model; the evaluate step's cache key."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cdco_core.cache import Record
from cdco_core.data.checks import check_task_set
from cdco_core.data.spec import TaskSpec
from cdco_core.errors import InputError
from cdco_core.evaluation import scoring as P
from cdco_core.evaluation.features import pair_texts


@pytest.fixture
def smoke_tasks(smoke_cfg):
    from cdco_core.data import load_tasks

    return load_tasks(smoke_cfg.data)


def test_unknown_task_lists_the_configured(smoke_cfg):
    from cdco_core.steps.prepare import prepare

    assert prepare(smoke_cfg, "imdb").outputs["kind"] == "OOD"
    with pytest.raises(InputError, match=r"unknown task 'sst9'; configured: country_capital, "):
        prepare(smoke_cfg, "sst9")


def test_missing_split_is_named(smoke_tasks):
    imdb = next(t for t in smoke_tasks if t.name == "imdb")
    no_train = dataclasses.replace(imdb, splits={"validation": imdb.splits["validation"]})
    with pytest.raises(InputError, match=r"task 'imdb': split 'train' is missing or empty; found splits: "
                                         r"\['validation'\]"):
        check_task_set([no_train])
    odd = dataclasses.replace(imdb, spec=imdb.spec.model_copy(update={"eval_split": "test"}))
    with pytest.raises(InputError, match="split 'test' is missing"):
        check_task_set([odd])


def test_metric_that_does_not_fit_the_type(smoke_tasks):
    t = smoke_tasks[0]
    bad = TaskSpec.model_construct(**{**t.spec.__dict__, "metric": "spearman"})
    with pytest.raises(InputError, match="metric 'spearman' does not fit type 'classification'"):
        check_task_set([dataclasses.replace(t, spec=bad)])


def test_method_configure_changes_a_copy_that_is_still_valid(smoke_cfg):
    from cdco_core.config import Config
    from cdco_core.data import task_specs
    from cdco_core.methods import get_method

    mcfg = get_method("cdco_random_negatives", smoke_cfg).configure(smoke_cfg)
    assert mcfg.negatives.mode == "random"
    assert smoke_cfg.negatives.mode == "manifold"  # the caller's config is untouched
    assert Config.model_validate(mcfg.model_dump(mode="json")) == mcfg  # what crosses a process stays valid
    strict = get_method("cdco_strict", smoke_cfg).configure(smoke_cfg)
    assert strict.negatives.strict_exclude == sorted(s.name for s in task_specs(smoke_cfg.data) if s.kind == "OOD")
    assert smoke_cfg.negatives.strict_exclude == []
    assert get_method("cdco", smoke_cfg).configure(smoke_cfg) is smoke_cfg


def test_pair_texts_flattens_options(smoke_tasks):
    mc = next(t for t in smoke_tasks if t.spec.type == "multiple_choice").splits["validation"].head(2)
    a, b, mask = pair_texts(mc)
    assert mask.shape == (2, 4) and mask.all() and len(a) == len(b) == 8
    assert a[0] == a[3] == mc.text_a.iloc[0] and b[:4] == list(mc.choices.iloc[0])


def test_evaluate_model_scores_every_task_and_is_deterministic():
    from cdco_core.config import load_config
    from cdco_core.data import load_tasks
    from cdco_core.models.multitask import build_multitask_model

    cfg = load_config("smoke", ["data.max_rows.train=32", "data.max_rows.validation=16"])  # a third: faster
    smoke_tasks = load_tasks(cfg.data)
    model, tok = build_multitask_model(cfg, [t for t in smoke_tasks if t.spec.kind == "ID"])
    res = P.evaluate_model(model, tok, smoke_tasks, cfg, seed=0, model_digest="untrained")
    assert res["protocol"] == {"rotten_tomatoes": "trained_head", "sms_spam": "trained_head",
                               "imdb": "fresh_head", "country_region": "fresh_head", "country_capital": "fresh_head"}
    assert list(res["metrics"]["sms_spam"]) == ["macro_f1", "accuracy", "mcc"]
    assert list(res["metrics"]["country_capital"]) == ["accuracy"]
    preds = res["predictions"]
    assert len(preds) == sum(len(t.splits[t.eval_split]) for t in smoke_tasks)
    mc = preds[preds.task == "country_capital"]
    assert mc.pred.between(0, 3).all()
    ki = [res["metrics"][t][res["main_metric"][t]] for t in ("country_region", "country_capital")]
    assert res["averages"]["KI"] == pytest.approx(np.mean(ki))
    # the second run reads the feature cache and retrains the heads with the same seed: same numbers
    again = P.evaluate_model(model, tok, smoke_tasks, cfg, seed=0, model_digest="untrained")
    assert again["metrics"] == res["metrics"]
    np.testing.assert_array_equal(again["predictions"].pred, preds.pred)


def _eval_key(cfg, seed: int, model_digest: str) -> str:
    """The evaluate step's key of cdco/seed<seed>, its last stage's record having ``model_digest``."""
    from cdco_core.plan import build_plan
    from cdco_core.steps import get_step

    plan = build_plan(cfg, ["cdco"], [seed])
    (node,) = plan.of_step("evaluate")
    inputs = {i: Record("x", i, "k", "/nowhere", {}, digest=model_digest if i.startswith("train[") else f"d-{i}")
              for i in node.inputs}
    return get_step("evaluate").key(plan.config_for(node), node, inputs)


def test_eval_key_follows_what_scores_depend_on():
    from cdco_core.profile import load_profile

    base = load_profile("smoke")
    key = _eval_key(base, 0, "model-digest")
    assert _eval_key(load_profile("smoke", ["eval.seeds=[0,1,2]"]), 0, "model-digest") == key
    assert _eval_key(load_profile("smoke", ["eval.head_lr=0.1"]), 0, "model-digest") != key
    assert _eval_key(base, 1, "model-digest") != key
    assert _eval_key(base, 0, "other-model") != key
