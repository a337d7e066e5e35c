"""MultiTaskModel: pooling, heads by type, save/reload, task_ids=None, single-task adapter routing."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from cdco_core.models.heads import HeadSpec, head_output_dim
from cdco_core.models.multitask import build_multitask_model
from cdco_core.models.pooling import mean_pool
from cdco_core.training.batches import Example, collate, task_examples


@pytest.fixture
def id_tasks(smoke_cfg):
    from cdco_core.data import load_tasks

    return [t for t in load_tasks(smoke_cfg.data) if t.spec.kind == "ID"]


def test_mean_pool_by_hand():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2); the third token is padding
    m = torch.tensor([[1, 1, 0]])
    assert mean_pool(h, m).tolist() == [[2.0, 3.0]]


def test_head_output_dims():
    assert head_output_dim(HeadSpec("a", "classification", 3)) == 3
    assert head_output_dim(HeadSpec("b", "regression", 0)) == 1
    assert head_output_dim(HeadSpec("c", "multiple_choice", 0)) == 1
    assert head_output_dim(HeadSpec("d", "boolean_qa", 2)) == 2


def test_logits_equal_after_save_and_reload(smoke_cfg, id_tasks, tmp_path):
    torch.manual_seed(0)
    model, tok = build_multitask_model(smoke_cfg, id_tasks)
    with torch.no_grad():  # stands in for training: every saved tensor moves
        for n, p in model.named_parameters():
            if n in model.trainable_state_dict():
                p.add_(0.05 * torch.randn_like(p))
    save_file(model.trainable_state_dict(), str(tmp_path / "w.safetensors"))
    torch.manual_seed(123)  # other random heads: the reload must overwrite them
    fresh, _ = build_multitask_model(smoke_cfg, id_tasks)
    batch = collate(task_examples(id_tasks[1], 1)[:5], tok, 32)
    model.eval()
    fresh.eval()
    assert not torch.equal(fresh(batch)["sms_spam"][1], model(batch)["sms_spam"][1])
    fresh.load_trainable_state_dict(load_file(str(tmp_path / "w.safetensors")))
    assert torch.equal(fresh(batch)["sms_spam"][1], model(batch)["sms_spam"][1])
    with pytest.raises(ValueError, match="missing"):
        fresh.load_trainable_state_dict({})


def test_encode_without_task_ids_and_multiple_choice(smoke_cfg, id_tasks, tiny_model):
    from cdco_core.data import load_tasks

    mc = [t for t in load_tasks(smoke_cfg.data) if t.spec.type == "multiple_choice"]
    model, tok = build_multitask_model(smoke_cfg, id_tasks + mc)
    batch = collate(task_examples(mc[0], 2)[:3], tok, 32)
    pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids, task_ids=None)
    assert pooled.shape == (3 * batch.choice_mask.shape[1], 32)
    rows, scores = model.batch_logits(batch, pooled)[mc[0].name]
    assert rows.tolist() == [0, 1, 2] and scores.shape == batch.choice_mask.shape


def test_single_task_adapters_route_by_task(smoke_cfg, id_tasks):
    model, tok = build_multitask_model(smoke_cfg, id_tasks, per_task_adapters=True, default_task="sms_spam")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B.sms_spam" in n:
                p.fill_(0.1)  # only sms_spam's set moves
    ex = [Example("rotten_tomatoes", 0, "classification", "x", "a quiet film", label=1)]
    b = collate(ex, tok, 16)
    args = (b.input_ids, b.attention_mask, b.token_type_ids)
    rt = model.encode(*args, task_ids=torch.tensor([0]))
    spam = model.encode(*args, task_ids=torch.tensor([1]))
    default = model.encode(*args, task_ids=None)
    assert not torch.allclose(rt, spam)
    assert torch.equal(default, spam)  # no task id: the default (largest task's) set
    with pytest.raises(ValueError, match="single-task batches"):
        model.encode(*args[:2], None, task_ids=torch.tensor([0, 1]))
