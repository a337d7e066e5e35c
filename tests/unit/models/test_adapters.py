"""Adapters: layer groups, bottleneck identity at init, disabling LoRA/bottleneck changes the output."""

from __future__ import annotations

import pytest
import torch

from cdco_core.config import AdapterConfig
from cdco_core.errors import ConfigError
from cdco_core.models.adapters import BottleneckAdapter, add_adapters, is_adapter_param, layer_index, resolve_groups


def test_layer_index_and_adapter_names():
    assert layer_index("encoder.base_model.model.encoder.layer.3.attention.self.query.lora_A.default.weight") == 3
    assert layer_index("embeddings.word_embeddings.weight") is None
    assert is_adapter_param("x.layer.0.output.dense.adapter.down.weight")
    assert not is_adapter_param("x.layer.0.output.dense.base.weight")


def test_default_groups_are_halves():
    g = resolve_groups(AdapterConfig(), 6)
    assert g["lower"] == [0, 1, 2] and g["upper"] == [3, 4, 5] and g["all"] == list(range(6))
    g5 = resolve_groups(AdapterConfig(), 5)
    assert g5["lower"] == [0, 1, 2] and g5["upper"] == [3, 4]


def test_explicit_groups_and_out_of_range():
    g = resolve_groups(AdapterConfig(groups={"top": [5, 4], "lower": [0]}), 6)
    assert g["top"] == [4, 5] and g["lower"] == [0] and g["upper"] == [3, 4, 5]
    with pytest.raises(ConfigError, match=r"adapters.groups.mid: layer\(s\) \[7\] do not exist"):
        resolve_groups(AdapterConfig(groups={"mid": [1, 7]}), 6)


def test_bottleneck_is_identity_until_trained():
    torch.manual_seed(0)
    a = BottleneckAdapter(hidden_size=16, reduction_factor=4)
    assert a.down.out_features == 4
    h = torch.randn(2, 3, 16)
    assert torch.equal(a(h), h)  # U = 0 at init
    torch.nn.init.normal_(a.up.weight)
    assert not torch.allclose(a(h), h)
    a.enabled = False
    assert torch.equal(a(h), h)


def test_unknown_adapter_type(tiny_model):
    with pytest.raises(ConfigError, match="adapters.type 'prefix' is not supported"):
        add_adapters(tiny_model[0], AdapterConfig(), "prefix")


@pytest.mark.parametrize("kind", ["lora", "bottleneck"])
def test_logits_change_when_adapters_disabled(smoke_cfg, kind):
    from cdco_core.data import load_tasks
    from cdco_core.models.multitask import build_multitask_model
    from cdco_core.training.batches import collate, task_examples

    tasks = [t for t in load_tasks(smoke_cfg.data) if t.spec.kind == "ID"]
    torch.manual_seed(0)
    model, tok = build_multitask_model(smoke_cfg, tasks, adapter_type=kind)
    model.eval()
    batch = collate(task_examples(tasks[0], 0)[:4], tok, 32)
    base = model(batch)[tasks[0].name][1]
    with model.adapters_disabled():
        assert torch.equal(model(batch)[tasks[0].name][1], base)  # fresh adapters are the identity
    # what training would do: move the adapters away from zero
    with torch.no_grad():
        for n, p in model.named_parameters():
            if is_adapter_param(n):
                p.add_(0.05 * torch.randn_like(p))
    model.set_trainable(["lower"], train_heads=False)
    adapted = model(batch)[tasks[0].name][1]
    with model.adapters_disabled():
        bare = model(batch)[tasks[0].name][1]
    assert not torch.allclose(adapted, bare)
    assert torch.allclose(bare, base)
    assert torch.equal(model(batch)[tasks[0].name][1], adapted)  # adapters back on after the block
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(model.group_parameter_names("lower"))  # flags untouched by disabling


def test_groups_partition_the_adapters(smoke_cfg):
    from cdco_core.data import load_tasks
    from cdco_core.models.multitask import build_multitask_model

    tasks = [t for t in load_tasks(smoke_cfg.data) if t.spec.kind == "ID"]
    model, _ = build_multitask_model(smoke_cfg, tasks)
    lower, upper = set(model.group_parameter_names("lower")), set(model.group_parameter_names("upper"))
    every = {f"encoder.{n}" for n, _ in model.encoder.named_parameters() if is_adapter_param(n)}
    assert lower and upper and not lower & upper and lower | upper == every == set(model.group_parameter_names("all"))
    assert all(".layer.0." in n for n in lower) and all(".layer.1." in n for n in upper)
    with pytest.raises(ConfigError, match="unknown adapter group 'middle'"):
        model.group_parameter_names("middle")
