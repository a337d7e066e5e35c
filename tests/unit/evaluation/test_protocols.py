"""Zero-shot transfer (a trained head applied unchanged) and probe label budgets (seeded, stratified samples)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdco_core.config import ZeroShotConfig
from cdco_core.errors import InputError
from cdco_core.evaluation.features import Features
from cdco_core.evaluation.heads import HeadBudget, train_head
from cdco_core.evaluation.protocols import (
    FULL,
    budget_sample,
    check_probe_budgets,
    check_zero_shot,
    label_id_map,
    probe_at_budgets,
    zero_shot_transfer,
)


# ------------------------------------------------------------------------------------- budgets
def test_budget_sample_is_stratified_seeded_and_keeps_every_class():
    labels = np.array([0] * 80 + [1] * 20)
    idx = budget_sample(labels, 10, seed=0, task_type="classification")
    assert len(idx) == 10 and len(set(idx)) == 10
    assert np.bincount(labels[idx]).tolist() == [8, 2]  # proportional
    assert np.array_equal(idx, budget_sample(labels, 10, seed=0, task_type="classification"))
    assert not np.array_equal(idx, budget_sample(labels, 10, seed=1, task_type="classification"))
    rare = np.array([0] * 97 + [1] * 2 + [2])
    # shares 9.7 / 0.2 / 0.1 -> floors 9, 0, 0 -> every class at least one -> 8, 1, 1
    assert np.bincount(rare[budget_sample(rare, 10, 0, "classification")]).tolist() == [8, 1, 1]
    # largest remainders: 7 x (0.5, 0.3, 0.2) = 3.5, 2.1, 1.4 -> 3, 2, 1 + 1 to class 0
    three = np.repeat([0, 1, 2], [50, 30, 20])
    assert np.bincount(three[budget_sample(three, 7, 0, "pair_classification")]).tolist() == [4, 2, 1]
    assert len(budget_sample(np.linspace(0, 1, 30), 7, 0, "regression")) == 7
    with pytest.raises(InputError, match="probe budget 31 does not fit a train split of 30 rows"):
        budget_sample(np.zeros(30), 31, 0, "regression")


def test_probe_at_budgets_trains_on_the_sample_and_on_the_full_split():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=120)
    x = rng.normal(size=(120, 6)) + y[:, None] * 1.5  # separable enough to be learnt from 16 rows
    ev_y = rng.integers(0, 2, size=40)
    train, heldout = Features(x, y, np.arange(120)), Features(rng.normal(size=(40, 6)) + ev_y[:, None] * 1.5, ev_y,
                                                             np.arange(40))
    head = HeadBudget(epochs=5, lr=0.05, batch_size=16)
    out = probe_at_budgets("classification", train, heldout, [16], head=head, seed=3, num_labels=2)
    assert list(out) == ["16", FULL]
    idx = budget_sample(y, 16, 3, "classification")
    few = train_head("classification", x[idx], y[idx], budget=head, seed=3, num_labels=2)
    full = train_head("classification", x, y, budget=head, seed=3, num_labels=2)
    assert np.array_equal(out["16"], few.predict(heldout.x))
    assert np.array_equal(out[FULL], full.predict(heldout.x))
    assert np.mean(out["16"] == ev_y) > 0.7


def test_probe_budget_larger_than_a_train_split_is_refused(smoke_cfg):
    from cdco_core.data import load_tasks

    tasks = load_tasks(smoke_cfg.data)
    check_probe_budgets([8], tasks)
    with pytest.raises(InputError, match=r"eval.probe_budgets: \[256\] > the \d+ train rows of task '\w+'"):
        check_probe_budgets([8, 256], tasks)


# ----------------------------------------------------------------------------------- zero-shot
def test_label_map_by_name():
    assert label_id_map(["negative", "positive"], ["neg", "pos"], {"neg": "negative", "pos": "positive"}).tolist() \
        == [0, 1]
    assert label_id_map(["negative", "positive"], ["pos", "neg"], {"neg": "negative", "pos": "positive"}).tolist() \
        == [1, 0]
    with pytest.raises(InputError, match=r"unmapped target labels \['pos'\]; source labels that do not exist "
                                         r"\['bad'\]"):
        label_id_map(["negative", "positive"], ["neg", "pos"], {"neg": "bad"})


@pytest.fixture
def trained(smoke_cfg):
    """A smoke multi-task model whose rotten_tomatoes head splits imdb's eval rows (as a trained head would)."""
    from cdco_core.data import load_tasks
    from cdco_core.evaluation.features import encode_texts, pair_texts
    from cdco_core.models.multitask import build_multitask_model
    from cdco_core.profile import load_profile as load_config

    cfg = load_config("smoke", ["data.max_rows.validation=16"])
    tasks = {t.name: t for t in load_tasks(cfg.data)}
    model, tok = build_multitask_model(cfg, [t for t in tasks.values() if t.spec.kind == "ID"])
    a, b, _ = pair_texts(tasks["imdb"].splits[tasks["imdb"].eval_split])
    x = torch.as_tensor(encode_texts(model, tok, a, b, max_length=cfg.model.max_length, batch_size=8, task_id=0))
    # the random tiny model's features are nearly parallel: a head along their main direction of spread, centred
    # on their mean, predicts both classes, so the prediction check below can fail
    centred = x - x.mean(0)
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    linear = model.heads["rotten_tomatoes"][1]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[1] = direction
        linear.bias[1] = -(direction @ x.mean(0))
    return cfg, tasks, model, tok


def test_zero_shot_applies_the_trained_head_unchanged(trained):
    from cdco_core.evaluation.features import encode_texts, pair_texts

    cfg, tasks, model, tok = trained
    src, tgt = tasks["rotten_tomatoes"], tasks["imdb"]
    zs = ZeroShotConfig(source=src.name, target=tgt.name, label_map={"negative": "negative", "positive": "positive"})
    check_zero_shot([zs], tasks)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    res = zero_shot_transfer(model, tok, src, tgt, zs.label_map, model_digest="m", max_length=cfg.model.max_length,
                             batch_size=8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing trained
    assert model.training  # the caller's mode is restored
    ev = tgt.splits[tgt.eval_split]
    assert res.example_ids.tolist() == ev["example_id"].tolist() and res.labels.tolist() == ev["label"].tolist()
    # by hand: the target's rows behind the source's task id, through the source head, argmax
    a, b, _ = pair_texts(ev)
    x = encode_texts(model, tok, a, b, max_length=cfg.model.max_length, batch_size=8, task_id=0)
    model.eval()
    with torch.no_grad():
        expected = model.head_logits(src.name, torch.as_tensor(x)).argmax(1).numpy()
    assert np.array_equal(res.predictions, expected)
    assert 0 < res.predictions.mean() < 1  # the perturbed head predicts both classes here, so the check has teeth
    swapped = zero_shot_transfer(model, tok, src, tgt, {"negative": "positive", "positive": "negative"},
                                 model_digest="m", max_length=cfg.model.max_length, batch_size=8)
    assert np.array_equal(swapped.labels, 1 - res.labels) and np.array_equal(swapped.predictions, res.predictions)


def test_zero_shot_bad_config_is_refused_before_training(trained):
    _, tasks, model, tok = trained
    label_map = {"negative": "negative", "positive": "positive"}
    with pytest.raises(InputError, match=r"eval.zero_shot.0.source: 'imdb' is OOD; only an ID task"):
        check_zero_shot([ZeroShotConfig(source="imdb", target="rotten_tomatoes", label_map=label_map)], tasks)
    with pytest.raises(InputError, match=r"eval.zero_shot.0.target: unknown task 'amazon'"):
        check_zero_shot([ZeroShotConfig(source="rotten_tomatoes", target="amazon", label_map=label_map)], tasks)
    with pytest.raises(InputError, match=r"zero_shot.0.label_map: unmapped target labels \['positive'\]"):
        check_zero_shot([ZeroShotConfig(source="rotten_tomatoes", target="imdb",
                                        label_map={"negative": "negative"})], tasks)
    with pytest.raises(InputError, match="no trained head for 'imdb'"):
        zero_shot_transfer(model, tok, tasks["imdb"], tasks["rotten_tomatoes"], label_map, model_digest="m",
                           max_length=16, batch_size=8)


# ------------------------------------------------------------------------- the evaluate step's entries
def test_evaluate_model_adds_budget_and_zero_shot_entries_and_the_primary_scope(trained):
    from cdco_core.evaluation import scoring as S

    cfg, tasks, model, tok = trained
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={
        "probe_budgets": [8],
        "zero_shot": [ZeroShotConfig(source="rotten_tomatoes", target="imdb",
                                     label_map={"negative": "negative", "positive": "positive"})]})})
    res = S.evaluate_model(model, tok, list(tasks.values()), cfg, seed=0, model_digest="m")
    assert list(res["metrics"]) == ["rotten_tomatoes", "sms_spam", "imdb", "imdb.n8", "country_region",
                                    "country_region.n8", "country_capital", "country_capital.n8",
                                    "rotten_tomatoes_to_imdb"]
    assert res["protocol"]["imdb.n8"] == "fresh_head_n8" and res["kinds"]["rotten_tomatoes_to_imdb"] == "ZS"
    main = {e: m[res["main_metric"][e]] for e, m in res["metrics"].items()}
    av = res["averages"]
    assert av["KI.n8"] == pytest.approx((main["country_region.n8"] + main["country_capital.n8"]) / 2)
    assert av["KI"] == pytest.approx((main["country_region"] + main["country_capital"]) / 2)  # full split, as before
    assert av["overall"] == pytest.approx(np.mean([main[t] for t in ("rotten_tomatoes", "sms_spam", "imdb",
                                                                      "country_region", "country_capital")]))
    # no unseen domain declared in smoke: the primary endpoint takes plain OOD, at the smallest budget
    assert av["primary"] == pytest.approx(np.mean([av["ID"], av["OOD.n8"], av["KI.n8"]]))
    direct = zero_shot_transfer(model, tok, tasks["rotten_tomatoes"], tasks["imdb"],
                                {"negative": "negative", "positive": "positive"}, model_digest="m",
                                max_length=cfg.model.max_length, batch_size=8)
    assert av["zero_shot"] == pytest.approx(float((direct.predictions == direct.labels).mean()))
    preds = res["predictions"]
    assert set(preds.task) == set(res["metrics"])
    assert (preds[preds.task == "imdb.n8"].example_id.to_numpy() == preds[preds.task == "imdb"].example_id).all()


def test_pool_only_tasks_are_not_scored_and_dev_mode_reads_dev_splits_only(smoke_cfg):
    from cdco_core.data import load_tasks
    from cdco_core.data.spec import TaskSpec
    from cdco_core.evaluation import scoring as S
    from cdco_core.models.multitask import build_multitask_model
    from cdco_core.profile import load_profile

    cfg = load_profile("smoke", ["data.max_rows.validation=16", "data.dev_fraction=0.25", "eval.probe_budgets=[8]"])
    tasks = load_tasks(cfg.data)
    ids = [t for t in tasks if t.spec.kind == "ID"]
    model, tok = build_multitask_model(cfg, ids)
    imdb = next(t for t in tasks if t.name == "imdb")
    imdb.spec = TaskSpec(**{**imdb.spec.model_dump(), "probe": False})
    res = S.evaluate_model(model, tok, tasks, cfg, seed=0, model_digest="m")
    assert "imdb" not in res["metrics"] and "OOD" not in res["averages"]  # pool-only: trained against, not scored
    imdb.spec = TaskSpec(**{**imdb.spec.model_dump(), "probe": True, "ood_protocol": "seen"})
    dev = S.evaluate_model(model, tok, tasks, cfg, seed=0, model_digest="m", split="dev")
    # ID on dev, the seen domain on its validation split at the few-label budget, nothing else (KI is reported
    # only): no reported split is read
    assert {e: m["split"] for e, m in dev["entries"].items()} == {
        "rotten_tomatoes": "dev", "sms_spam": "dev", "imdb": "validation", "imdb.n8": "validation"}
    for t in ids:
        scored = set(dev["predictions"].query("task == @t.name").example_id)
        assert scored == set(t.splits["dev"].example_id)
        assert not scored & set(t.splits[t.eval_split].example_id)
    with pytest.raises(InputError, match=r"task 'rotten_tomatoes' on its 'dev' split.*data.dev_fraction"):
        S.check_dev_splits(load_tasks(smoke_cfg.data))


def test_the_runner_refuses_a_bad_budget_or_zero_shot_entry_before_training(cdco_home):
    from cdco_core.profile import load_profile
    from cdco_core.runner import run_comparison

    too_big = load_profile("smoke", ["eval.probe_budgets=[5000]"])
    with pytest.raises(InputError, match=r"eval.probe_budgets: \[5000\] > the \d+ train rows of task 'imdb'"):
        run_comparison(too_big, methods=["frozen"], seeds=[0])
    bad_map = load_profile("smoke", ["eval.zero_shot=[{source: rotten_tomatoes, target: imdb, "
                                     "label_map: {negative: negative}}]"])
    with pytest.raises(InputError, match=r"eval.zero_shot.0.label_map: unmapped target labels \['positive'\]"):
        run_comparison(bad_map, methods=["frozen"], seeds=[0])
    assert not (cdco_home / "steps" / "train").exists()  # nothing trained
