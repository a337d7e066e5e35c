"""Batches: keys, multiple-choice layout, selection, deterministic streams and planning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdco_core.samplers import get_sampler
from cdco_core.training.batches import (
    KEY_STRIDE,
    Batch,
    BatchSource,
    Example,
    TaskStream,
    collate,
    contrastive_key,
    tokenize,
)


@pytest.fixture(scope="module")
def tok(tiny_model):
    return tiny_model[1]


def _ex(task="a", ti=0, kind="classification", i=0, label=1, **kw):
    return Example(task=task, task_index=ti, task_type=kind, example_id=f"{task}:train:{i}", text_a=f"text {i}",
                   label=label, **kw)


def test_contrastive_keys_pair_task_and_label():
    assert contrastive_key(0, "classification", 1) == 1
    assert contrastive_key(2, "pair_classification", 0) == 2 * KEY_STRIDE
    assert contrastive_key(1, "regression", 0.7) == -1
    assert contrastive_key(1, "multiple_choice", 2) == -1


def test_collate_classification_shapes_and_keys(tok):
    b = collate([_ex(i=0, label=1), _ex(i=1, label=0), _ex("b", 1, i=2, label=1)], tok, 16)
    assert b.input_ids.shape[0] == 3 and b.input_ids.shape == b.attention_mask.shape == b.token_type_ids.shape
    assert b.keys.tolist() == [1, 0, KEY_STRIDE + 1]
    assert b.task_ids.tolist() == [0, 0, 1] and b.labels.dtype == torch.long
    assert b.choice_mask is None and b.tasks == ["a", "a", "b"]


def test_tokenize_pairs_get_second_segment(tok):
    single = tokenize(tok, ["a cat"], ["", ], 16)
    pair = tokenize(tok, ["a cat"], ["a dog"], 16)
    assert int(single["token_type_ids"].sum()) == 0
    assert int(pair["token_type_ids"].sum()) > 0


def test_collate_multiple_choice_layout_and_select(tok):
    rows = [_ex(kind="multiple_choice", i=0, label=2, choices=["x", "y", "z"]),
            _ex(kind="multiple_choice", i=1, label=0, choices=["p", "q"])]
    b = collate(rows, tok, 16)
    assert b.input_ids.shape[0] == 6  # B * C sequences, row-major
    assert b.choice_mask.tolist() == [[True, True, True], [True, True, False]]
    assert b.keys.tolist() == [-1, -1]
    second = b.select([1])
    assert torch.equal(second.input_ids, b.input_ids[3:6]) and second.labels.tolist() == [0]


def test_concat_refuses_mixing_multiple_choice(tok):
    mc = collate([_ex(kind="multiple_choice", label=0, choices=["x", "y"])], tok, 16)
    cl = collate([_ex()], tok, 16)
    with pytest.raises(ValueError, match="multiple-choice"):
        Batch.concat([mc, cl])
    both = Batch.concat([cl, collate([_ex(i=5, label=0)], tok, 16)])
    assert len(both) == 2


def test_task_stream_epochs_and_resume():
    s = TaskStream(5, seed=3, task_index=1)
    first = s.take(4) + s.take(4)  # crosses into the second epoch
    assert sorted(first[:5]) == [0, 1, 2, 3, 4]
    state = s.state_dict()
    nxt = s.take(3)
    t = TaskStream(5, seed=3, task_index=1)
    t.load_state_dict(state)
    assert t.take(3) == nxt


def test_batch_source_plan_does_not_consume(tok):
    examples = [[_ex("a", 0, i=i, label=i % 2) for i in range(10)], [_ex("b", 1, i=i, label=0) for i in range(4)]]
    src = BatchSource(examples, get_sampler("uniform"), 3, tok, 16, seed=0)
    plan = src.plan(4)
    got = [src.next_batch().example_ids for _ in range(4)]
    assert plan == got
    state = src.state_dict()
    after = src.next_batch().example_ids
    src2 = BatchSource(examples, get_sampler("uniform"), 3, tok, 16, seed=0)
    src2.load_state_dict(state)
    assert src2.next_batch().example_ids == after


def test_batch_level_sampler_hook_keeps_top_rows(tok, smoke_cfg, id_tasks):
    """A batch-level sampler only scores rows; the source draws from every task and keeps the top k."""
    from cdco_core.models.multitask import build_multitask_model
    from cdco_core.samplers import BatchLevelSampler

    class ByIndex(BatchLevelSampler):  # scores = task index: keeps task-1 rows first
        name = "by_index_test"

        def score_rows(self, model, batch):
            return batch.task_ids.numpy().astype(float) + np.linspace(0, 0.1, len(batch))

    model, tok2 = build_multitask_model(smoke_cfg, id_tasks)
    examples = [[_ex("rotten_tomatoes", 0, i=i, label=0) for i in range(6)],
                [_ex("sms_spam", 1, i=i, label=1) for i in range(6)]]
    src = BatchSource(examples, ByIndex(), 4, tok2, 16, seed=0)
    b = src.next_batch(model)
    assert len(b) == 4 and b.tasks == ["sms_spam"] * 4
