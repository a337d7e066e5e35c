"""Sentence embeddings from the frozen base encoder: mean pooling, token-budget batches grouped by length.

Why token-budget batching and not a fixed batch size: cost on CPU is roughly linear in the padded tokens of a
batch, ``B * T_max``. Sorting by length keeps ``T_max`` close to every row's length; a token budget then lets
short sentences travel in large batches and long ones in small batches, so every forward pass does about the
same amount of work and fewer passes are needed. Rows are tokenised once, up front, with the fast tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cdco_core.errors import InputError

if TYPE_CHECKING:
    import torch


def resolve_dtype(name: str, device: str = "cpu") -> torch.dtype:
    """The encoder's compute dtype for ``embed.dtype``: "auto" = bfloat16 where the hardware runs it natively.

    Native bf16 matmuls (CUDA, or CPUs with avx512_bf16/AMX through oneDNN) roughly halve the encoder's time;
    elsewhere bf16 is emulated and slower, so "auto" falls back to float32 there.
    """
    import torch

    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return torch.bfloat16 if native else torch.float32


def tokenize_rows(tokenizer: Any, texts_a: Sequence[str], texts_b: Sequence[str] | None,
                  max_length: int) -> tuple[list[list[int]], list[list[int]] | None]:
    """Tokenise once, unpadded. Rows with a non-empty ``texts_b`` are encoded as pairs, the rest as singles.

    Returns:
        (input_ids per row, token_type_ids per row or None when the tokenizer has none).
    """
    n = len(texts_a)
    ids: list[list[int] | None] = [None] * n
    types: list[list[int] | None] = [None] * n
    is_pair = np.zeros(n, dtype=bool) if texts_b is None else np.array([bool(b) for b in texts_b])
    for pair in (False, True):
        rows = np.flatnonzero(is_pair == pair)
        if len(rows) == 0:
            continue
        a = [texts_a[i] for i in rows]
        b = [texts_b[i] for i in rows] if pair else None  # type: ignore[index]
        enc = tokenizer(a, b, truncation=True, max_length=max_length, padding=False)
        tt = enc.get("token_type_ids")
        for j, i in enumerate(rows):
            ids[i] = enc["input_ids"][j]
            types[i] = tt[j] if tt is not None else None
    has_types = all(t is not None for t in types)
    return ids, (types if has_types else None)  # type: ignore[return-value]


def length_batches(lengths: np.ndarray, batch_tokens: int, max_batch_size: int) -> list[np.ndarray]:
    """Group row indices into batches of similar length under a padded-token budget.

    Rows are sorted by length (longest first, so the largest buffers are allocated once, at the start);
    a batch grows while ``len(batch) * max_len(batch) <= batch_tokens`` and ``len(batch) <= max_batch_size``.
    A single row longer than the budget still forms a batch of one.

    Returns:
        A list of index arrays into ``lengths``; each index appears exactly once.
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        t_max = int(lengths[order[start]])  # longest first: the first row fixes the padded length
        size = max(1, min(max_batch_size, batch_tokens // max(t_max, 1), n - start))
        batches.append(order[start:start + size])
        start += size
    return batches


def _pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    t = max(len(r) for r in rows)
    ids = np.full((len(rows), t), pad_id, dtype=np.int64)  # (B, T)
    mask = np.zeros((len(rows), t), dtype=np.int64)  # (B, T)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def embed_texts(model: Any, tokenizer: Any, texts_a: Sequence[str], texts_b: Sequence[str] | None = None,
                max_length: int = 128, batch_tokens: int = 8192, max_batch_size: int = 128,
                on_rows: Callable[[int], None] | None = None) -> np.ndarray:
    """Embed texts (or text pairs) with the frozen encoder: mean pooling, L2-normalised, float32.

    The model runs in whatever dtype it has (see :func:`resolve_dtype`); pooling and normalisation are float32.

    Args:
        model: a Hugging Face encoder returning ``last_hidden_state``; used in eval mode without gradients.
        tokenizer: its tokenizer; pairs are encoded as ``tokenizer(text_a, text_b)``.
        texts_a: N first texts.
        texts_b: N second texts, or None; an empty string means "no pair" for that row.
        max_length: truncation length in tokens.
        batch_tokens: padded-token budget per forward pass.
        max_batch_size: upper bound on rows per pass.
        on_rows: called after every forward pass with the number of rows embedded so far (a progress display).

    Returns:
        (N, H) float32 array, each row of unit L2 norm, in input order.

    Raises:
        InputError: ``texts_b`` is given with a different length than ``texts_a``.
    """
    import torch

    from cdco_core.models.pooling import mean_pool

    if texts_b is not None and len(texts_b) != len(texts_a):
        raise InputError(f"texts_b has {len(texts_b)} rows but texts_a has {len(texts_a)}; give one per row")
    n = len(texts_a)
    hidden = int(model.config.hidden_size)
    out = np.zeros((n, hidden), dtype=np.float32)
    if n == 0:
        return out
    ids, types = tokenize_rows(tokenizer, texts_a, texts_b, max_length)
    lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=n)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    done = 0
    with torch.inference_mode():
        for idx in length_batches(lengths, batch_tokens, max_batch_size):
            input_ids, mask = _pad([ids[i] for i in idx], pad_id)
            inputs = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
            if types is not None:
                inputs["token_type_ids"] = torch.from_numpy(_pad([types[i] for i in idx], 0)[0])
            hidden_states = model(**inputs).last_hidden_state.float()  # (B, T, H); pool in float32
            pooled = mean_pool(hidden_states, inputs["attention_mask"])  # (B, H)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
            out[idx] = pooled.numpy()
            done += len(idx)
            if on_rows is not None:
                on_rows(done)
    return out
