"""Sentence vectors from token states: the one pooling every part of cdco uses (embedding, training, evaluation)."""

from __future__ import annotations

import torch


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token states over the real (unmasked) tokens.

    ``pooled_b = sum_t m_bt * h_bt / max(sum_t m_bt, eps)``

    Args:
        last_hidden: (B, T, H) token states.
        attention_mask: (B, T) 1 for real tokens, 0 for padding.

    Returns:
        (B, H) pooled states (not normalised).
    """
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)  # (B, T, 1)
    summed = (last_hidden * mask).sum(dim=1)  # (B, H)
    counts = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1): an all-padding row gives 0, not NaN
    return summed / counts
