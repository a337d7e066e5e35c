"""The negative bank: rank-major filling, own negatives first, exact state round trip."""

from __future__ import annotations

import pandas as pd
import torch

from cdco_core.training.negatives import NegativeBank


class _Enc(torch.nn.Module):
    """Stands in for a model: pooled = (length of the first text's ids, 1, 0, 0)."""

    hidden_size = 4

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def encode(self, input_ids, attention_mask, token_type_ids=None, task_ids=None):
        n = attention_mask.sum(1, keepdim=True).float()  # (b, 1)
        return torch.cat([n, torch.ones_like(n), torch.zeros(len(n), 2)], 1)


def _bank(tiny_model, size=3, k=2):
    table = pd.DataFrame({
        "anchor_id": ["a1", "a1", "a1", "a2", "a2"],
        "negative_id": ["n1", "n2", "n3", "n2", "n4"],
        "rank": [1, 2, 3, 1, 2],
    })
    texts = {n: (f"text {i}" + " word" * i, "") for i, n in enumerate(["n1", "n2", "n3", "n4"], 1)}
    return NegativeBank(table, texts, n_hard=k, size=size, seed=0, tokenizer=tiny_model[1], max_length=32)


def test_choose_prefers_shared_then_better_rank(tiny_model):
    bank = _bank(tiny_model, size=3)
    # upcoming rows a1, a2, a1 with K=2: n2 is listed 3 times, n1 twice (rank 1), n4 once; n3 is beyond K
    assert bank.choose(["a1", "a2", "a1"]) == ["n2", "n1", "n4"]
    assert bank.choose(["a2"]) == ["n2", "n4"]
    assert _bank(tiny_model, size=1).choose(["a1", "a2"]) == ["n2"]


def test_lookup_own_first_then_fill(tiny_model):
    bank = _bank(tiny_model, size=2)
    bank.refresh(_Enc(), ["a1"])  # bank = n1, n2 (a1's two best)
    negs, coverage = bank.lookup(["a1", "a2", "zz"], step=0)
    assert negs.shape == (3, 2, 4)
    assert torch.equal(negs[0], bank.emb[[0, 1]])  # a1: exactly its own, in rank order
    assert torch.equal(negs[1, 0], bank.emb[1])  # a2: n2 is its own (rank 1); n4 missing -> filled
    assert coverage == (2 + 1 + 0) / 6


def test_state_round_trip(tiny_model):
    bank = _bank(tiny_model)
    bank.refresh(_Enc(), ["a1", "a2"])
    tensors, meta = bank.state_dict()
    other = _bank(tiny_model)
    other.load_state_dict(tensors, meta)
    a, _ = bank.lookup(["a2", "a1"], step=7)
    b, _ = other.lookup(["a2", "a1"], step=7)
    assert torch.equal(a, b) and other.refreshes == 1


def test_the_bank_covers_every_planned_negative_when_its_size_allows(tiny_model):
    """Rows a1, a2 with K=2 list 3 distinct negatives (n1, n2, n4): a bank of 3, or sized "planned", holds them
    all, so every row gets exactly its own K (coverage 1); a bank of 2 cannot."""
    for size, coverage in ((3, 1.0), ("planned", 1.0), (2, 0.75)):
        bank = _bank(tiny_model, size=size)
        bank.refresh(_Enc(), ["a1", "a2"])
        _, got = bank.lookup(["a1", "a2"], step=0)
        assert got == coverage, size
    assert sorted(_bank(tiny_model, size="planned").choose(["a1", "a2", "a1"])) == ["n1", "n2", "n4"]
