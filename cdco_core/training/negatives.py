"""The negative bank: ODMS hard negatives encoded without gradients and re-encoded every N steps.

Why a bank. Encoding every anchor's K hard negatives afresh each step costs B·K extra forward passes per step
(B=16, K=4: 64 sequences next to 16 trained ones), several times the cost of the task step. Instead the bank
holds at most M = ``train.negative_bank_size`` negatives, re-encoded by the current model every
R = ``train.negative_refresh_every`` steps: M/R forward passes per step, no backward, and each embedding is at
most R steps stale (MoCo-style staleness, without a momentum encoder). The encoding runs under bfloat16 autocast
where the hardware has native bf16 (``train.negative_bank_dtype``): ~2.7x faster on this CPU, and a negative's
embedding needs no more precision than its staleness already costs. Gradients still reach the projection
heads through the negatives: the bank stores pooled encoder outputs (H), projected each step.

What goes in. At a refresh the trainer passes the example ids of the next R batches (samplers that do not
depend on the model can be replayed from a copy of their state). Each of their top-K ODMS negatives is ranked by
how many of those rows list it (one encoding then serves them all), then by its best rank; the first M are
encoded. The encode budget per step is M/R; without sharing a row could own at most (M/R)/(B·K) of its K
negatives, and sharing is what lifts it above that. A row then gets its own ODMS negatives
that made it into the bank, best rank first, topped up to K with bank entries drawn at random (these are other
anchors' ODMS negatives, i.e. hard OOD points too; drawing them at random keeps the ``negatives.mode=random``
ablation honest). When no plan exists (batch-level samplers) the bank is a seeded sample of all negatives,
weighted by how many anchors share each one. ``coverage`` (logged) is the share of a row's K negatives that are
its own.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import torch

from cdco_core.training.batches import tokenize


class NegativeBank:
    """Bank of pooled encoder embeddings (M, H) of ODMS negatives (see the module docstring).

    Args:
        table: the ODMS negatives Parquet (anchor_id, negative_id, rank, ...).
        texts: negative example_id -> (text_a, text_b) from the OOD tasks' canonical train splits.
        n_hard: negatives per row (K); ranks above it are not used.
        size: M, the most entries encoded per refresh; ``"planned"``: every distinct negative of the planned
            rows (with no plan, as many as the pool holds).
        seed: seeds the top-up and the unplanned fill.
    """

    def __init__(self, table: pd.DataFrame, texts: dict[str, tuple[str, str]], n_hard: int, size: int | str,
                 seed: int, tokenizer: Any, max_length: int, encode_batch: int = 64, dtype: str = "float32") -> None:
        t = table[table["rank"] <= n_hard].sort_values(["anchor_id", "rank"], kind="stable")
        missing = sorted(set(t["negative_id"]) - set(texts))
        if missing:
            raise ValueError(f"{len(missing)} negatives are not in the OOD tasks' train splits, e.g. {missing[:3]}; "
                             "the negatives Parquet is stale for this data")
        self.by_anchor: dict[str, list[str]] = t.groupby("anchor_id", sort=False)["negative_id"].agg(list).to_dict()
        counts = Counter(t["negative_id"])
        self._pool = sorted(counts)
        self._weights = np.array([counts[n] for n in self._pool], dtype=np.float64)
        self._weights /= self._weights.sum()
        self.texts = texts
        self.n_hard, self.size, self.seed = n_hard, size, seed
        self.tokenizer, self.max_length, self.encode_batch = tokenizer, max_length, encode_batch
        self.dtype = dtype  # "float32" | "bfloat16" | "auto" (bf16 autocast where native)
        self.ids: list[str] = []
        self.emb: torch.Tensor | None = None  # (M, H)
        self.pos: dict[str, int] = {}
        self.refreshes = 0

    # ------------------------------------------------------------------------------------- filling
    def choose(self, planned: list[str] | None) -> list[str]:
        """Bank entries for the upcoming rows ``planned``, or a weighted sample of all negatives without a plan.

        With a plan, a negative's priority is how many upcoming rows list it among their K (shared OOD points serve
        many anchors for one encoding), then its best rank, then first appearance; the top M are kept.
        """
        if planned is None:
            rng = np.random.default_rng([self.seed, 15485863, self.refreshes])
            m = len(self._pool) if self.size == "planned" else min(self.size, len(self._pool))
            pick = rng.choice(len(self._pool), size=m, replace=False, p=self._weights)
            return [self._pool[i] for i in sorted(pick)]
        refs: dict[str, list[int]] = {}  # negative -> [uses, best rank, first position]
        for pos, a in enumerate(planned):
            for r, n in enumerate(self.by_anchor.get(a, ())):
                e = refs.setdefault(n, [0, r, pos])
                e[0] += 1
                e[1] = min(e[1], r)
        order = sorted(refs, key=lambda n: (-refs[n][0], refs[n][1], refs[n][2]))
        return order if self.size == "planned" else order[:self.size]

    @torch.no_grad()
    def refresh(self, model: Any, planned: list[str] | None) -> dict[str, Any]:
        """Re-encode the bank with the current model (eval mode, no gradients). Returns small stats."""
        ids = self.choose(planned)
        was_training = model.training
        model.eval()
        try:
            emb = self._encode(model, ids)
        finally:
            model.train(was_training)
        self.ids, self.emb = ids, emb
        self.pos = {n: i for i, n in enumerate(ids)}
        self.refreshes += 1
        return {"bank_entries": len(ids)}

    def _encode(self, model: Any, ids: list[str]) -> torch.Tensor:
        if not ids:
            return torch.zeros(0, model.hidden_size)
        # length-sorted chunks: far less padding when OOD texts vary in length
        order = sorted(range(len(ids)), key=lambda i: len(self.texts[ids[i]][0]) + len(self.texts[ids[i]][1]))
        out = torch.empty(len(ids), model.hidden_size)
        device = next(model.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self._bf16(device.type)):
            for start in range(0, len(order), self.encode_batch):
                idx = order[start:start + self.encode_batch]
                enc = tokenize(self.tokenizer, [self.texts[ids[i]][0] for i in idx],
                               [self.texts[ids[i]][1] for i in idx], self.max_length)
                enc = {k: v.to(device) for k, v in enc.items()}
                pooled = model.encode(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])  # (b, H)
                out[torch.tensor(idx)] = pooled.float().cpu()
        return out

    def _bf16(self, device_type: str) -> bool:
        if self.dtype == "auto":
            from cdco_core.odms.embed import resolve_dtype

            return resolve_dtype("auto", device_type) == torch.bfloat16
        return self.dtype == "bfloat16"

    # ------------------------------------------------------------------------------------------ use
    def lookup(self, example_ids: list[str], step: int) -> tuple[torch.Tensor, float]:
        """(B, K, H) negatives for the rows ``example_ids`` and the share that are the rows' own.

        Raises:
            RuntimeError: the bank was never filled.
        """
        if self.emb is None or len(self.ids) == 0:
            raise RuntimeError("negative bank is empty: refresh() it before lookup()")
        rng = np.random.default_rng([self.seed, 104729, step])
        m, k = len(self.ids), self.n_hard
        rows, own_total = [], 0
        for a in example_ids:
            own = [self.pos[n] for n in self.by_anchor.get(a, []) if n in self.pos][:k]
            own_total += len(own)
            need = k - len(own)
            fill: list[int] = []
            if need > 0:
                rest = np.setdiff1d(np.arange(m), own)
                pool = rest if len(rest) >= need else np.arange(m)  # a tiny bank repeats entries
                fill = rng.choice(pool, size=need, replace=len(pool) < need).tolist()
            rows.append(own + fill)
        index = torch.tensor(rows, dtype=torch.long)  # (B, K)
        return self.emb[index], own_total / max(1, k * len(example_ids))

    # ---------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors for safetensors, JSON-able metadata)."""
        tensors = {"bank_emb": self.emb.contiguous()} if self.emb is not None else {}
        return tensors, {"ids": self.ids, "refreshes": self.refreshes}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.ids = list(meta["ids"])
        self.refreshes = int(meta["refreshes"])
        self.emb = tensors.get("bank_emb")
        self.pos = {n: i for i, n in enumerate(self.ids)}


def load_bank(cfg: Any, negatives_path: str, ood_tasks: list[Any], tokenizer: Any, seed: int) -> NegativeBank:
    """A bank over the ODMS Parquet at ``negatives_path``, texts from the OOD tasks' train splits."""
    table = pd.read_parquet(negatives_path, columns=["anchor_id", "negative_dataset", "negative_id", "rank"])
    wanted = set(table["negative_dataset"])
    texts: dict[str, tuple[str, str]] = {}
    for task in ood_tasks:
        if task.name in wanted:
            df = task.splits["train"]
            pairs = zip(df["text_a"].astype(str), df["text_b"].fillna("").astype(str), strict=True)
            texts.update(zip(df["example_id"].astype(str), pairs, strict=True))
    return NegativeBank(table, texts, cfg.train.n_hard_negatives, cfg.train.negative_bank_size, seed,
                        tokenizer, cfg.model.max_length, dtype=cfg.train.negative_bank_dtype)
