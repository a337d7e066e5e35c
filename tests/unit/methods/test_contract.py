"""One contract, every registered method (PEFT runs one matrix over every tuner the same way).

A method added to the registry gets these checks without writing a test: its stages validate; a few steps on one
batch lower its loss; its trainable state saves and reloads to equal logits; disabling its adapters changes its
logits (methods without adapters of their own: nothing changes); and its training key follows its config.
"""

from __future__ import annotations

import pytest
import torch

from cdco_core.methods import METHODS, get_method

OVERRIDES = ["train.stages.0.steps=2", "train.stages.1.steps=1", "train.stages.2.steps=1", "train.stages.3.steps=1"]


@pytest.fixture(scope="module")
def smoke():
    """(config, ID tasks, one mixed batch, one single-task batch) of the smoke profile."""
    from cdco_core.data import load_tasks
    from cdco_core.models.encoder import load_tokenizer
    from cdco_core.profile import load_profile
    from cdco_core.training.batches import collate, task_examples

    cfg = load_profile("smoke", OVERRIDES)
    tasks = [t for t in load_tasks(cfg.data) if t.spec.kind == "ID"]
    tok = load_tokenizer(cfg.model)
    examples = [e for i, t in enumerate(tasks) for e in task_examples(t, i)[:4]]
    single = task_examples(tasks[0], 0)[:8]
    return cfg, tasks, collate(examples, tok, cfg.model.max_length), collate(single, tok, cfg.model.max_length)


def batch_for(method, smoke):
    """The mixed batch, or a one-task batch for methods with one adapter set per task (they need those)."""
    return smoke[3] if method.per_task_adapters else smoke[2]


def build(name: str, cfg, tasks):
    method = get_method(name, cfg)
    mcfg = method.configure(cfg)
    torch.manual_seed(0)
    model, _ = method.build_model(mcfg, tasks)
    return method, mcfg, model


def logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.task_ids)
        return torch.cat([lg.flatten() for _, lg in model.batch_logits(batch, pooled).values()])


@pytest.mark.parametrize("name", METHODS.names())
def test_stages_validate(name, smoke):
    from cdco_core.config import StageConfig, adapter_group_names, check_stage_groups

    cfg = smoke[0]
    method = get_method(name, cfg)
    stages = method.stages(method.configure(cfg))
    assert stages and all(isinstance(s, StageConfig) for s in stages)
    check_stage_groups(stages, adapter_group_names(cfg) | set(method.extra_groups))


@pytest.mark.parametrize("name", METHODS.names())
def test_a_few_steps_lower_the_loss(name, smoke):
    from cdco_core.methods.base import StepContext
    from cdco_core.training.trainer import weighted_loss

    cfg, tasks = smoke[:2]
    method, mcfg, model = build(name, cfg, tasks)
    batch = batch_for(method, smoke)
    stage = method.stages(mcfg)[-1]  # the last stage weights every term the method trains with
    model.set_trainable(list(stage.groups), stage.train_heads)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(method.param_groups(model, params, stage), lr=5e-3)
    ctx = StepContext(cfg=mcfg, stage_index=0, step=0, global_step=0,
                      task_types={t.name: t.spec.type for t in tasks})
    losses = []
    model.train()
    torch.manual_seed(0)
    for _ in range(8):
        opt.zero_grad()
        loss = weighted_loss(method.loss_terms(model, batch, stage, ctx), stage)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses


@pytest.mark.parametrize("name", METHODS.names())
def test_save_and_reload_give_equal_logits(name, smoke):
    cfg, tasks = smoke[:2]
    method, _, model = build(name, cfg, tasks)
    batch = batch_for(method, smoke)
    with torch.no_grad():  # move the trainable tensors away from their initial values
        for p in model.trainable_state_dict().values():
            p.add_(0.01 * torch.randn_like(p.float()).to(p.dtype)) if p.is_floating_point() else None
    state = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    _, _, fresh = build(name, cfg, tasks)
    fresh.load_trainable_state_dict(state)
    assert torch.equal(logits(model, batch), logits(fresh, batch))


@pytest.mark.parametrize("name", METHODS.names())
def test_disabling_adapters_changes_logits_only_for_methods_with_adapters(name, smoke):
    cfg, tasks = smoke[:2]
    method, _, model = build(name, cfg, tasks)
    batch = batch_for(method, smoke)
    names = [n for n, _ in model.named_parameters()]
    adapter_params = [p for n, p in model.named_parameters()
                      if "lora_B" in n or ".adapter" in n or "generator" in n or "film" in n.lower()]
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA's B starts at zero (an identity adapter): give every adapter an effect
        for p in adapter_params:
            p.add_(0.05 * torch.randn_like(p))  # random, not constant: a layer norm would cancel a uniform shift
    with_adapters = logits(model, batch)
    with model.adapters_disabled():
        without = logits(model, batch)
    if method.adapter_type == "none" and not adapter_params:  # frozen, full fine-tuning: no adapters
        assert torch.equal(with_adapters, without)
    else:
        assert adapter_params, f"{name}: no adapter parameters among {names[:5]}..."
        assert not torch.allclose(with_adapters, without)


@pytest.mark.parametrize("name", METHODS.names())
def test_training_key_follows_the_config(name, smoke):
    from cdco_core.cache import Record
    from cdco_core.plan import build_plan
    from cdco_core.profile import complete_config
    from cdco_core.steps import node_key

    cfg = smoke[0]

    def key(c) -> str:
        plan = build_plan(c, [name], [0])
        node = plan.last_stage(name, 0)
        fake = {i: Record("x", i, "k", "/nowhere", {}, digest=f"digest-of-{i}") for i in node.inputs}
        return node_key(plan.config_for(node), node, fake)

    base = key(cfg)
    assert key(cfg) == base
    assert key(cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": 4})})) != base
    entry = METHODS.entry(name)
    if entry.config_cls is not None:  # a method's own settings enter its key directly
        settings = entry.config_cls().model_dump(mode="json")
        numbers = [(k, v * 2 or 0.5) for k, v in settings.items() if isinstance(v, int | float)
                   and not isinstance(v, bool)]
        flags = [(k, not v) for k, v in settings.items() if isinstance(v, bool)]
        field, value = (numbers or flags)[0]  # a number when the method has one, else a switch
        changed = complete_config(cfg.model_copy(update={"method_settings": {name: {field: value}}}))
        assert key(changed) != base
