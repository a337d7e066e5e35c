"""EGO-PLM's task-agnostic pre-defined task: the backbone's own pre-training objective, kept alive.

Two objectives, chosen per backbone (``methods.ego_plm.pretext``, default "auto"):

* ``mlm``: masked language modelling (BERT). Mask 15% of the non-special tokens (80% -> [MASK],
  10% -> a random token, 10% unchanged) and predict them with an MLM head whose decoder is tied to the
  input word embeddings: ``p(v | h_i) = softmax(E · LN(GELU(W h_i + b)) + c)_v``.
* ``contrastive``: unsupervised SimCSE (Gao et al., 2021), the sentence-embedding objective MiniLM was
  trained with in spirit: two dropout views z, z' of the same batch,
  ``L = -1/B Σ_i log exp(cos(z_i, z'_i)/τ) / Σ_j exp(cos(z_i, z'_j)/τ)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cdco_core.config import ModelConfig

log = logging.getLogger(__name__)

# Files sentence-transformers writes beside a checkpoint; their presence marks a sentence-embedding model.
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")
# MLM head weights in a BertForMaskedLM / BertForPreTraining checkpoint, ours <- theirs.
_CKPT_KEYS = {
    "transform.dense.weight": "cls.predictions.transform.dense.weight",
    "transform.dense.bias": "cls.predictions.transform.dense.bias",
    "transform.norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "transform.norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "bias": "cls.predictions.bias",
}


def detect_pretext(model_cfg: ModelConfig) -> Literal["mlm", "contrastive"]:
    """The pre-defined task that matches how the backbone was pre-trained.

    A model folder holding sentence-transformers files (``modules.json``, ...) is a sentence-embedding
    model (all-MiniLM-L6-v2 is one) -> "contrastive". Anything else (tiny-random, a plain BERT folder)
    -> "mlm".
    """
    from cdco_core.models.encoder import resolve_model_path

    path = resolve_model_path(model_cfg.source)
    if path is not None and any((path / name).exists() for name in SENTENCE_TRANSFORMERS_FILES):
        return "contrastive"
    return "mlm"


def mask_tokens(
    input_ids: torch.Tensor,  # (B, T)
    attention_mask: torch.Tensor,  # (B, T)
    special_ids: list[int],
    mask_id: int,
    vocab_size: int,
    probability: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: returns (masked input ids (B, T), labels (B, T) with -100 where not predicted).

    Draws from torch's global RNG, so the trainer's saved RNG state makes a resumed run identical.
    At least one token per batch is chosen, so the loss is always defined.
    """
    candidates = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids, device=input_ids.device))
    chosen = (torch.rand(input_ids.shape, device=input_ids.device) < probability) & candidates  # (B, T)
    if not chosen.any() and candidates.any():
        flat = candidates.flatten().nonzero().squeeze(1)
        chosen.view(-1)[flat[torch.randint(len(flat), (1,))]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(input_ids.shape, device=input_ids.device)
    masked = input_ids.clone()
    masked[chosen & (roll < 0.8)] = mask_id
    random_pos = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[random_pos] = torch.randint(vocab_size, (int(random_pos.sum()),), device=input_ids.device)
    return masked, labels


class MlmHead(nn.Module):
    """BERT's LM prediction head with the decoder tied to the input embeddings.

    The word-embedding matrix is passed at call time rather than stored, so it is neither duplicated in
    this module's state dict nor trained (the backbone stays frozen; only transform and bias learn).
    """

    def __init__(self, hidden: int, vocab_size: int, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(hidden, hidden)
        self.transform.norm = nn.LayerNorm(hidden, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """hidden (N, H), word_embeddings (V, H) -> logits (N, V)."""
        x = self.transform.norm(F.gelu(self.transform.dense(hidden)))  # (N, H)
        return x @ word_embeddings.t() + self.bias  # (N, V)

    def load_from_checkpoint(self, folder: Path | None) -> bool:
        """Copy ``cls.predictions.*`` from ``folder/model.safetensors`` when the checkpoint has an MLM head.

        Returns:
            True when weights were loaded; False (head stays freshly initialised) otherwise.
        """
        weights = folder / "model.safetensors" if folder is not None else None
        if weights is None or not weights.exists():
            return False
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            keys = set(f.keys())
            if not all(k in keys for k in _CKPT_KEYS.values()):
                log.info("no MLM head in %s: the EGO-PLM MLM head starts from a fresh initialisation", weights)
                return False
            state = {ours: f.get_tensor(theirs) for ours, theirs in _CKPT_KEYS.items()}
        self.load_state_dict(state)
        return True


def mlm_loss(
    head: MlmHead,
    hidden: torch.Tensor,  # (B, T, H) last hidden states of the masked input
    labels: torch.Tensor,  # (B, T), -100 = not predicted
    word_embeddings: torch.Tensor,  # (V, H)
) -> torch.Tensor:
    """Cross-entropy on the masked positions only (decoding all B·T positions would cost B·T·V)."""
    picked = labels != -100  # (B, T)
    if not picked.any():
        raise ValueError("mlm_loss: no position is masked (labels are all -100)")
    logits = head(hidden[picked], word_embeddings)  # (N, V)
    return F.cross_entropy(logits, labels[picked])


def simcse_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Unsupervised SimCSE loss between two dropout views z1, z2 (B, H) of the same sentences.

    ``L = -1/B Σ_i log softmax_j(cos(z1_i, z2_j) / τ)_i``: the other view of the same sentence is the
    positive; the other sentences' second views are the negatives.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"simcse_loss: views must both be (B, H), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError("simcse_loss: needs a batch of at least 2 sentences (in-batch negatives)")
    sim = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).t() / temperature  # (B, B)
    return F.cross_entropy(sim, torch.arange(z1.shape[0], device=z1.device))
