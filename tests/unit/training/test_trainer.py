"""The stage loop: loss goes down, only the stage's groups move, schedule and weights are checked."""

from __future__ import annotations

import pytest
import torch

from cdco_core.config import StageConfig
from cdco_core.errors import ConfigError
from cdco_core.methods.base import Method
from cdco_core.models.multitask import build_multitask_model
from cdco_core.samplers import get_sampler
from cdco_core.training.batches import BatchSource, task_examples
from cdco_core.training.trainer import StageInputs, WarmupLinear, run_stage, weighted_loss


def _setup(cfg, tasks, tmp_path, stage, rows=8, method=None, seed=0):
    torch.manual_seed(seed)
    model, tok = build_multitask_model(cfg, tasks)
    examples = [task_examples(t, i)[:rows] for i, t in enumerate(tasks)]
    source = BatchSource(examples, get_sampler("uniform"), rows, tok, cfg.model.max_length, seed=seed)
    inp = StageInputs(cfg=cfg, method=method or Method(), stage=stage, stage_index=0, global_offset=0,
                      task_types={t.name: t.spec.type for t in tasks}, work_dir=tmp_path / "work")
    return model, source, inp


def test_ten_steps_lower_the_loss(smoke_cfg, id_tasks, tmp_path):
    # one task, its first 8 rows, batch 8: every step sees the same rows, so the loss must fall
    stage = StageConfig(name="t", groups=["all"], losses={"task": 1.0}, steps=10, lr=2e-2)
    model, source, inp = _setup(smoke_cfg, id_tasks[:1], tmp_path, stage)
    hist = run_stage(model, source, None, inp)["history"]
    assert len(hist) == 10
    assert hist[-1]["loss"] < 0.7 * hist[0]["loss"]


def test_frozen_groups_get_no_gradient(smoke_cfg, id_tasks, tmp_path):
    stage = StageConfig(name="low", groups=["lower"], losses={"task": 1.0}, steps=3, lr=1e-2, train_heads=False)
    model, source, inp = _setup(smoke_cfg, id_tasks, tmp_path, stage)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run_stage(model, source, None, inp)
    lower = set(model.group_parameter_names("lower"))
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= lower  # only layer-0 adapters changed; heads (train_heads false) did not
    assert any("lora_B" in n for n in moved)
    for n, p in model.named_parameters():
        if n not in lower:
            assert p.grad is None and not p.requires_grad, n


def test_stage_weights_a_term_the_method_lacks(smoke_cfg, id_tasks, tmp_path):
    stage = StageConfig(name="e", groups=["all"], losses={"task": 1.0, "pretext": 0.5}, steps=1, lr=1e-3)
    model, source, inp = _setup(smoke_cfg, id_tasks, tmp_path, stage)
    with pytest.raises(ConfigError, match=r"weights loss\(es\) \['pretext'\]"):
        run_stage(model, source, None, inp)


def test_weighted_loss_value():
    stage = StageConfig(name="s", groups=["all"], losses={"task": 1.0, "euclidean": 0.5, "poincare": 0.0},
                        steps=1, lr=1e-3)
    terms = {"task": torch.tensor(2.0), "euclidean": torch.tensor(3.0)}
    assert float(weighted_loss(terms, stage)) == pytest.approx(3.5)  # 1*2 + 0.5*3; poincare weight 0 unused


def test_warmup_linear_factors():
    f = WarmupLinear(warmup=2, steps=6)
    assert [round(f(s), 3) for s in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]


def test_contrastive_stage_with_bank_runs(smoke_cfg, id_tasks, tmp_path):
    """CDCO's Euclidean + Poincaré terms on bank negatives: finite terms, projection heads trained."""
    import pandas as pd

    from cdco_core.methods import get_method
    from cdco_core.training.negatives import NegativeBank

    stage = StageConfig(name="c", groups=["upper"], losses={"task": 1.0, "euclidean": 0.5, "poincare": 0.5},
                        space="both", steps=3, lr=1e-2)
    model, source, inp = _setup(smoke_cfg, id_tasks, tmp_path, stage, method=get_method("cdco"))
    anchors = [e.example_id for ex in source.examples for e in ex]
    table = pd.DataFrame({"anchor_id": anchors * 2, "negative_id": [f"o{i % 5}" for i in range(2 * len(anchors))],
                          "rank": [1] * len(anchors) + [2] * len(anchors)})
    bank = NegativeBank(table, {f"o{i}": (f"ood text {i}", "") for i in range(5)}, n_hard=2, size=4, seed=0,
                        tokenizer=source.tokenizer, max_length=32)
    before = model.poincare_proj.linear.weight.detach().clone()
    hist = run_stage(model, source, bank, inp)["history"]
    assert all(h["euclidean"] > 0 and h["poincare"] > 0 for h in hist)
    assert all(0.0 <= h["coverage"] <= 1.0 for h in hist)
    assert not torch.equal(before, model.poincare_proj.linear.weight)


def test_each_terms_gradient_norm_is_logged_and_changes_nothing(smoke_cfg, id_tasks, tmp_path):
    """train.term_grad_norms_every: every N steps each weighted term's own gradient norm (issue 14: which term
    sets the direction under the global clip); the total before clipping every step; the weights as without."""
    import pandas as pd

    from cdco_core.methods import get_method
    from cdco_core.training.negatives import NegativeBank

    stage = StageConfig(name="c", groups=["upper"], losses={"task": 1.0, "euclidean": 0.5, "poincare": 0.5},
                        space="both", steps=4, lr=1e-2)
    runs = []
    for every in (0, 2):
        cfg = smoke_cfg.model_copy(update={"train": smoke_cfg.train.model_copy(
            update={"term_grad_norms_every": every})})
        model, source, inp = _setup(cfg, id_tasks, tmp_path / str(every), stage, method=get_method("cdco"))
        anchors = [e.example_id for ex in source.examples for e in ex]
        table = pd.DataFrame({"anchor_id": anchors, "negative_id": [f"o{i % 5}" for i in range(len(anchors))],
                              "rank": [1] * len(anchors)})
        bank = NegativeBank(table, {f"o{i}": (f"ood text {i}", "") for i in range(5)}, n_hard=1, size=4, seed=0,
                            tokenizer=source.tokenizer, max_length=32)
        runs.append((model, run_stage(model, source, bank, inp)["history"]))
    (plain, hist0), (logged, hist2) = runs
    assert all("grad_norm.task" not in h and h["grad_norm"] > 0 for h in hist0)
    assert [sorted(k for k in h if k.startswith("grad_norm.")) for h in hist2] == \
        [["grad_norm.euclidean", "grad_norm.poincare", "grad_norm.task"], []] * 2
    for h in hist2[::2]:  # the total's norm is at most the sum of the parts' (triangle inequality), and positive
        parts = [h[f"grad_norm.{k}"] for k in ("task", "euclidean", "poincare")]
        assert all(p > 0 for p in parts) and h["grad_norm"] <= sum(parts) * (1 + 1e-5)
    for k, v in plain.trainable_state_dict().items():
        assert torch.equal(v, logged.trainable_state_dict()[k]), k


def test_a_stage_carries_the_previous_stages_adam_state_and_warms_up_again(smoke_cfg, id_tasks, tmp_path):
    """train.carry_optimizer (issue 14: the schedule restarted cold): parameters the previous stage trained start
    from its AdamW moments and step counts; the ones it did not, from zero; the lr warms up again either way."""
    cfg = smoke_cfg.model_copy(update={"train": smoke_cfg.train.model_copy(update={"carry_optimizer": True})})
    first = StageConfig(name="a", groups=["lower"], losses={"task": 1.0}, steps=3, lr=1e-2, train_heads=False)
    model, source, inp = _setup(cfg, id_tasks, tmp_path / "a", first)
    a = run_stage(model, source, None, inp)
    saved = a["optimizer_state"]
    lower = set(model.group_parameter_names("lower"))
    assert {k.split("/", 1)[1] for k in saved} == lower and all(float(saved[f"step/{n}"]) == 3 for n in lower)

    second = StageConfig(name="b", groups=["all"], losses={"task": 1.0}, steps=4, lr=1e-2, warmup_steps=2)
    inp_b = StageInputs(cfg=cfg, method=Method(), stage=second, stage_index=1, global_offset=3,
                        task_types=inp.task_types, work_dir=tmp_path / "b", carried=saved)
    b = run_stage(model, source, None, inp_b)
    steps = {k.split("/", 1)[1]: float(v) for k, v in b["optimizer_state"].items() if k.startswith("step/")}
    assert all(steps[n] == 3 + 4 for n in lower)  # carried: 3 steps of stage a, then 4 of stage b
    upper = {n for n in steps if n not in lower and not n.startswith("heads.")}
    assert upper and {steps[n] for n in upper} == {4.0}  # the upper adapters start fresh
    assert all(steps[n] <= 4 for n in steps if n.startswith("heads."))  # a head steps when its task is drawn
    assert [round(h["lr"] / 1e-2, 3) for h in b["history"]][:2] == [0.5, 1.0]  # warm-up over 2 steps again

    cold = StageInputs(cfg=cfg, method=Method(), stage=second, stage_index=1, global_offset=3,
                       task_types=inp.task_types, work_dir=tmp_path / "c")  # carried=None: the old behaviour
    state = run_stage(model, source, None, cold)["optimizer_state"]
    assert {float(state[f"step/{n}"]) for n in lower} == {4.0}


@pytest.mark.parametrize("name", ["lora_mtl", "full_ft", "ca_mtl", "frozen"])
def test_heads_train_at_the_heads_rate_in_every_method(smoke_cfg, id_tasks, name):
    # issue 13: every method's heads get train.head_lr (default eval.head_lr), whatever its own groups
    from cdco_core.config import head_lr
    from cdco_core.methods import get_method
    from cdco_core.training.trainer import head_groups

    cfg = smoke_cfg.model_copy(update={"train": smoke_cfg.train.model_copy(update={"head_lr": 0.0123})})
    method = get_method(name, cfg)
    model, _ = method.build_model(method.configure(cfg), id_tasks)
    stage = method.stages(cfg)[0]
    model.set_trainable(list(stage.groups), stage.train_heads)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = head_groups(method.param_groups(model, params, stage), model, head_lr(cfg))
    heads = {id(p) for p in model.heads.parameters()}
    head_group = [g for g in groups if any(id(p) in heads for p in g["params"])]
    assert len(head_group) == 1 and head_group[0]["lr"] == 0.0123
    assert {id(p) for p in head_group[0]["params"]} == heads  # every head parameter, nothing else
    assert sum(len(g["params"]) for g in groups) == len(params)  # nothing lost or doubled
    assert head_lr(smoke_cfg) == smoke_cfg.eval.head_lr  # unset: the probe's rate
