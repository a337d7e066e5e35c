"""Batches: keys, multiple-choice layout, selection, deterministic streams and planning."""

from __future__ import annotations

import json

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


def _varied(task="a", ti=0, n=40):
    """Rows whose token lengths differ a lot: row i has 1 + (7 * i) % 23 words."""
    return [Example(task=task, task_index=ti, task_type="classification", example_id=f"{task}:train:{i}",
                    text_a=" ".join(["word"] * (1 + (7 * i) % 23)), label=i % 2) for i in range(n)]


def test_length_buckets_cut_padding_and_keep_each_row_once_per_epoch(tok):
    examples = [_varied()]
    plain = BatchSource(examples, get_sampler("uniform"), 4, tok, 64, seed=0, length_bucket_batches=1)
    bucketed = BatchSource(examples, get_sampler("uniform"), 4, tok, 64, seed=0, length_bucket_batches=5)

    def epoch(src):
        batches = [src.next_batch() for _ in range(10)]  # 40 rows = one epoch
        ids = sorted(i for b in batches for i in b.example_ids)
        real = sum(int(b.attention_mask.sum()) for b in batches)
        return ids, real / sum(b.attention_mask.numel() for b in batches)

    ids_plain, share_plain = epoch(plain)
    ids_bucketed, share_bucketed = epoch(bucketed)
    assert ids_bucketed == ids_plain == sorted(e.example_id for e in examples[0])
    assert share_bucketed > share_plain + 0.15  # rows of similar length share a batch
    # within a window the batches are length-sorted chunks, served in a seeded (not length) order
    lens = [bucketed.token_lengths(0, [int(i.rsplit(":", 1)[1]) for i in bucketed.next_batch().example_ids])
            for _ in range(5)]
    assert all(max(a) <= min(b) or max(b) <= min(a) for a in lens for b in lens if a is not b)
    assert [min(x) for x in lens] != sorted(min(x) for x in lens)


def test_length_buckets_resume_mid_window(tok):
    examples = [_varied(), _varied("b", 1, n=13)]

    def src():
        return BatchSource(examples, get_sampler("uniform"), 3, tok, 64, seed=4, length_bucket_batches=4)

    a = src()
    for _ in range(5):  # part-way through a window of one task at least
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # checkpoints store it as JSON
    assert any(s["queue"] for s in state["streams"])
    expected = [a.next_batch().example_ids for _ in range(12)]
    b = src()
    b.load_state_dict(state)
    assert [b.next_batch().example_ids for _ in range(12)] == expected
    fresh = src()
    plan = fresh.plan(6)  # the bank's plan replays the window queue without consuming it
    assert plan == [fresh.next_batch().example_ids for _ in range(6)]


def test_length_buckets_must_be_positive(tok):
    from cdco_core.errors import ConfigError

    with pytest.raises(ConfigError, match="length_bucket_batches"):
        BatchSource([_varied()], get_sampler("uniform"), 4, tok, 64, seed=0, length_bucket_batches=0)


def test_trimmed_drops_only_all_padding_columns(tok):
    b = collate([_ex(i=0), Example("a", 0, "classification", "a:train:9", " ".join(["long"] * 12), label=0)],
                tok, 32)
    short = b.select([0])
    t = short.trimmed()
    assert t.input_ids.shape[1] == int(short.attention_mask.sum()) < short.input_ids.shape[1]
    assert torch.equal(t.input_ids, short.input_ids[:, :t.input_ids.shape[1]])
    assert b.trimmed() is b  # nothing to cut


def test_length_buckets_of_a_small_task_never_repeat_a_row_in_a_batch(tok):
    # 10 rows, batches of 4, windows of 16 batches (64 rows > the epoch): windows stop at the epoch's end, so only
    # a batch that crosses into the next epoch can hold a row twice, exactly as without buckets
    def duplicates(buckets):
        src = BatchSource([_varied(n=10)], get_sampler("uniform"), 4, tok, 64, seed=1, length_bucket_batches=buckets)
        batches = [src.next_batch().example_ids for _ in range(15)]  # 60 rows = 6 epochs
        return sum(len(b) - len(set(b)) for b in batches), batches

    bucketed, batches = duplicates(16)
    assert bucketed <= duplicates(1)[0]
    assert len(set(batches[0] + batches[1])) == 8  # the first window: 8 distinct rows of epoch 0
