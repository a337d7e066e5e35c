"""Features from a trained model for evaluation: ``model.encode(...)`` on a task split, batched, cached.

OOD and KI tasks are encoded with ``task_ids=None`` (the model never saw them, so no task id applies);
ID tasks pass their own task id so task-conditioned methods (CA-MTL) see what they were trained with.
Multiple-choice items are encoded as one (question, option) pair per option and come back as
(N, C, H) with an (N, C) mask for items with fewer than C options.

Cache: ``CDCO_HOME/cache/features/<task>-<split>-<key>.npz`` where key = sha256 of the trained model's
digest, the split's content digest, max_length, the task id and the extraction's code digest. The same
(method, seed, task) is therefore encoded once, however often it is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cdco_core.io import atomic_path, sha256_json
from cdco_core.paths import cdco_home

# The extraction's code (this module's import closure) is part of every feature file's key: no version to bump.


@dataclass
class Features:
    """Encoded split: x (N, H), or (N, C, H) with mask (N, C) for multiple choice; labels (N,)."""

    x: np.ndarray
    labels: np.ndarray
    example_ids: np.ndarray
    mask: np.ndarray | None = None


def pair_texts(df: pd.DataFrame) -> tuple[list[str], list[str] | None, np.ndarray | None]:
    """Flatten a canonical split into encoder inputs.

    Returns:
        (texts_a, texts_b or None, mask): for multiple choice, one (question, option) pair per option
        in row-major order and the (N, C) option mask; otherwise text_a, text_b (None when all empty).
    """
    if "choices" in df.columns:
        n_opts = df["choices"].map(len).to_numpy()
        width = int(n_opts.max())
        mask = np.arange(width)[None, :] < n_opts[:, None]  # (N, C)
        a = [q for q, k in zip(df["text_a"], n_opts, strict=True) for _ in range(k)]
        b = [str(o) for opts in df["choices"] for o in opts]
        return a, b, mask
    b = df["text_b"].astype(str).tolist() if "text_b" in df.columns else []
    return df["text_a"].astype(str).tolist(), (b if any(b) else None), None


def encode_texts(model: Any, tokenizer: Any, texts_a: list[str], texts_b: list[str] | None, *, max_length: int,
                 batch_size: int, task_id: int | None = None) -> np.ndarray:
    """(M, H) float32 pooled features from ``model.encode``, in input order.

    Inputs are processed in order of length (less padding; mean pooling ignores padding, so the order
    does not change the result) and put back in input order.
    """
    import torch

    from cdco_core.training.batches import tokenize  # the trainer's tokenisation, so ID inputs match training

    lengths = np.array([len(a) + (len(texts_b[i]) if texts_b else 0) for i, a in enumerate(texts_a)])
    order = np.argsort(-lengths, kind="stable")
    out: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = tokenize(tokenizer, [texts_a[i] for i in idx], [texts_b[i] for i in idx] if texts_b else None,
                               max_length)
                tids = None if task_id is None else torch.full((len(idx),), task_id, dtype=torch.long)
                pooled = model.encode(enc["input_ids"], enc["attention_mask"],
                                      token_type_ids=enc["token_type_ids"], task_ids=tids)  # (b, H)
                out.append(pooled.float().cpu().numpy())
    finally:
        model.train(was_training)
    feats = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    result = np.empty_like(feats)
    result[order] = feats
    return result


def _split_features(model, tokenizer, df: pd.DataFrame, *, max_length: int, batch_size: int,
                    task_id: int | None) -> Features:
    a, b, mask = pair_texts(df)
    flat = encode_texts(model, tokenizer, a, b, max_length=max_length, batch_size=batch_size, task_id=task_id)
    labels = df["label"].to_numpy()
    ids = df["example_id"].astype(str).to_numpy()
    if mask is None:
        return Features(flat, labels, ids)
    x = np.zeros((*mask.shape, flat.shape[1]), dtype=np.float32)  # (N, C, H), padded options stay 0
    x[mask] = flat  # row-major fill matches pair_texts' order
    return Features(x, labels, ids, mask)


def feature_cache_path(task: str, split: str, key_parts: dict[str, Any]) -> Path:
    from cdco_core.cache import code_digest

    key = sha256_json({**key_parts, "code": code_digest(__name__)})
    return cdco_home() / "cache" / "features" / f"{task}-{split}-{key[:20]}.npz"


def split_features(model, tokenizer, task, split: str, *, model_digest: str, max_length: int, batch_size: int,
                   task_id: int | None = None) -> tuple[Features, bool]:
    """Encode one split of a :class:`~cdco_core.data.TaskData`, from the cache when present.

    Returns:
        (features, cached)
    """
    path = feature_cache_path(task.name, split, {"model": model_digest, "data": task.digests[split],
                                                 "max_length": max_length, "task_id": task_id})
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                mask = z["mask"] if z["mask"].size else None
                return Features(z["x"], z["labels"], z["example_ids"], mask), True
        except Exception:  # noqa: BLE001 - any unreadable file (truncated, bad CRC, pickled objects) is a miss
            pass  # recompute and overwrite
    feats = _split_features(model, tokenizer, task.splits[split], max_length=max_length, batch_size=batch_size,
                            task_id=task_id)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=feats.x, labels=feats.labels, example_ids=feats.example_ids.astype(str),
                 mask=feats.mask if feats.mask is not None else np.zeros(0, bool))
    return feats, False
