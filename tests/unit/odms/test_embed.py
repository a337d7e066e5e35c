"""Pooling, batching and embedding with the tiny random BERT (real tokenizer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdco_core.errors import InputError
from cdco_core.models.pooling import mean_pool
from cdco_core.odms.embed import embed_texts, length_batches


def test_mean_pool_by_hand_2x3():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                      [[5.0, 6.0], [-1.0, -1.0], [-1.0, -1.0]]])  # (B=2, T=3, H=2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    pooled = mean_pool(h, mask)
    assert pooled.shape == (2, 2)
    # row 0: mean of the first two tokens; row 1: the first token alone; padding never counts
    assert torch.allclose(pooled, torch.tensor([[2.0, 3.0], [5.0, 6.0]]))


def test_mean_pool_all_padding_row_is_zero_not_nan():
    pooled = mean_pool(torch.ones(1, 3, 2), torch.zeros(1, 3, dtype=torch.long))
    assert torch.equal(pooled, torch.zeros(1, 2))


def test_length_batches_respect_budget_and_cover_every_row_once():
    lengths = np.array([5, 40, 7, 3, 40, 12, 9, 100])
    batches = length_batches(lengths, batch_tokens=80, max_batch_size=4)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 4
        assert len(b) == 1 or len(b) * lengths[b].max() <= 80
    assert batches[0].tolist() == [7]  # 100 tokens exceed the budget: a batch of one, longest first
    assert [len(b) for b in batches] == [1, 2, 4, 1]  # short rows travel in bigger batches


def test_embed_texts_unit_norm_order_independent_and_pairs(tiny_model):
    model, tok, _ = tiny_model
    texts = ["a short one", "a much longer sentence with many more words in it than the first", "mid length text"]
    vecs = embed_texts(model, tok, texts, max_length=32, batch_tokens=64, max_batch_size=2)
    assert vecs.shape == (3, 32) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    alone = embed_texts(model, tok, [texts[1]], max_length=32)
    assert np.allclose(alone[0], vecs[1], atol=1e-5)  # padding and batch company do not change a row

    pair = embed_texts(model, tok, ["is it raining"], ["it pours outside"], max_length=32)
    enc = tok("is it raining", "it pours outside", return_tensors="pt")
    with torch.no_grad():
        ref = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    assert np.allclose(pair, ref, atol=1e-5)  # pairs go through the tokenizer as (text_a, text_b)
    assert not np.allclose(pair, embed_texts(model, tok, ["is it raining"], max_length=32), atol=1e-3)


def test_embed_texts_rejects_mismatched_pairs(tiny_model):
    model, tok, _ = tiny_model
    with pytest.raises(InputError, match="texts_b has 1 rows but texts_a has 2"):
        embed_texts(model, tok, ["a", "b"], ["c"])
