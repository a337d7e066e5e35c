"""top_half_ft: the upper half of the encoder trains (as CA-MTL's unfrozen half), nothing below it, no conditioning."""

from __future__ import annotations

import pytest
import torch

from cdco_core.methods import get_method
from cdco_core.methods.baselines.method import TOP_HALF_LR_SCALE, TopHalfFT


@pytest.fixture
def id_tasks(smoke_cfg):
    from cdco_core.data import load_tasks

    return [t for t in load_tasks(smoke_cfg.data) if t.spec.kind == "ID"]


@pytest.mark.parametrize("layers", [2, 4])
def test_exactly_the_upper_half_and_the_heads_train(smoke_cfg, id_tasks, layers):
    from cdco_core.profile import load_profile as load_config

    cfg = load_config("smoke", [f"model.tiny.num_hidden_layers={layers}", "adapters.groups={}"])
    method = get_method("top_half_ft")
    assert isinstance(method, TopHalfFT) and method.name == "top_half_ft"
    model, _ = method.build_model(cfg, id_tasks)
    [stage] = method.stages(cfg)
    assert stage.groups == ["top_half"] and stage.steps == sum(s.steps for s in cfg.train.stages)
    trainable = model.set_trainable(stage.groups, stage.train_heads)
    encoder = [n for n in trainable if n.startswith("encoder.")]
    upper = {f".layer.{i}." for i in range(layers // 2, layers)}
    assert encoder and all(any(u in n for u in upper) for n in encoder)
    # every weight of the upper layers, none of the embeddings or the lower layers
    for name, _ in model.encoder.named_parameters():
        in_upper = any(u in f".{name}" for u in upper)
        assert (f"encoder.{name}" in trainable) == in_upper, name
    assert any(n.startswith("heads.") for n in trainable)
    assert not any("lora" in n for n, _ in model.named_parameters())  # no adapters, no conditioning
    # the same frozen/trainable split CA-MTL uses at its default freeze_fraction
    from cdco_core.methods.ca_mtl.model import frozen_layer_count

    assert min(int(n.split(".layer.")[1].split(".")[0]) for n in encoder) == frozen_layer_count(layers, 0.5)


def test_encoder_weights_train_at_the_scaled_rate_and_a_step_moves_only_them(smoke_cfg, id_tasks):
    from cdco_core.methods.base import batch_task_loss
    from cdco_core.training.batches import collate, task_examples

    method = get_method("top_half_ft")
    model, tok = method.build_model(smoke_cfg, id_tasks)
    [stage] = method.stages(smoke_cfg)
    names = set(model.set_trainable(stage.groups, stage.train_heads))
    params = [p for n, p in model.named_parameters() if n in names]
    groups = method.param_groups(model, params, stage)
    assert [g["lr"] for g in groups] == pytest.approx([stage.lr * TOP_HALF_LR_SCALE, stage.lr])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(groups, lr=stage.lr)
    batch = collate(task_examples(id_tasks[0], 0)[:8], tok, smoke_cfg.model.max_length)
    pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.task_ids)
    batch_task_loss(model, batch, pooled).backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= names
    assert any(".layer.1." in n for n in moved) and not any(".layer.0." in n or "embeddings" in n for n in moved)
