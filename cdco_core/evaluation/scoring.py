"""How a trained method is scored on every configured task (the ``evaluate`` step calls :func:`evaluate_model`).

Protocol (docs/methods.md, "Evaluation protocol"):
    ID tasks       the training mixture; the method's own trained head on the task's eval split.
    OOD, KI tasks  never trained on; features from ``model.encode(..., task_ids=None)`` (frozen encoder +
                   the method's adapters), a fresh linear head trained on the task's train split with the
                   fixed budget of ``cfg.eval`` and the evaluation seed, scored on the eval split.
Per task: every metric that fits its type, main metric first; averages of the main metric per kind and
overall. Per-example predictions are kept for the paired bootstrap.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from cdco_core.config import Config
from cdco_core.evaluation.features import split_features
from cdco_core.evaluation.heads import HeadBudget, train_head
from cdco_core.evaluation.metrics import score_task

KINDS = ("ID", "OOD", "KI")


# ---------------------------------------------------------------------------------------- scoring
def _predict_with_trained_head(model, tokenizer, task, cfg: Config, model_digest: str) -> tuple[np.ndarray, ...]:
    """ID task: the method's own head on the eval split. Returns (example_ids, labels, predictions)."""
    import torch

    tid = list(model.task_names).index(task.name)
    f, _ = split_features(model, tokenizer, task, task.eval_split, model_digest=model_digest,
                          max_length=cfg.model.max_length, batch_size=cfg.eval.batch_size, task_id=tid)
    x = torch.as_tensor(f.x.reshape(-1, f.x.shape[-1]), dtype=torch.float32)  # (N, H) or (N*C, H)
    model.eval()
    with torch.inference_mode():
        logits = model.head_logits(task.name, x).float().cpu().numpy()
    kind = task.spec.type
    if kind == "regression":
        pred = logits.reshape(len(f.labels), -1)[:, 0]
    elif kind == "multiple_choice":
        scores = logits.reshape(f.mask.shape)  # (N, C)
        pred = np.where(f.mask, scores, -np.inf).argmax(axis=1)
    else:
        pred = logits.argmax(axis=1)
    return f.example_ids, f.labels, pred


def _predict_with_fresh_head(model, tokenizer, task, cfg: Config, seed: int, model_digest: str):
    """OOD/KI task: features with task_ids=None, a fresh head on train, predictions on the eval split."""
    common = {"model_digest": model_digest, "max_length": cfg.model.max_length, "batch_size": cfg.eval.batch_size}
    tr, _ = split_features(model, tokenizer, task, "train", **common)
    ev, _ = split_features(model, tokenizer, task, task.eval_split, **common)
    head = train_head(task.spec.type, tr.x, tr.labels, budget=HeadBudget.from_eval(cfg.eval), seed=seed,
                      num_labels=task.num_labels, mask=tr.mask)
    return ev.example_ids, ev.labels, head.predict(ev.x, ev.mask)


def kind_averages(main: dict[str, float], kinds: dict[str, str]) -> dict[str, float | None]:
    """Mean of the per-task main metric per kind, and over all tasks ("overall"); None for an empty kind."""
    out: dict[str, float | None] = {}
    for k in KINDS:
        vals = [v for t, v in main.items() if kinds[t] == k]
        out[k] = float(np.mean(vals)) if vals else None
    out["overall"] = float(np.mean(list(main.values()))) if main else None
    return out


def evaluate_model(model, tokenizer, tasks: list, cfg: Config, seed: int, model_digest: str) -> dict[str, Any]:
    """Score a loaded model on ``tasks`` (protocol in the module docstring).

    Returns:
        {"metrics": {task: {metric: value}}, "main_metric": {task: name}, "kinds": {task: kind},
         "protocol": {task: "trained_head" | "fresh_head"}, "averages": {...}, "predictions": DataFrame}
    """
    metrics, main_metric, kinds, protocol, frames = {}, {}, {}, {}, []
    trained = set(getattr(model, "task_names", []))
    for t in tasks:
        if t.spec.kind == "ID" and t.name in trained:
            ids, y, pred = _predict_with_trained_head(model, tokenizer, t, cfg, model_digest)
            protocol[t.name] = "trained_head"
        else:  # OOD/KI, or an ID task the method has no head for (scored like OOD, and recorded so)
            ids, y, pred = _predict_with_fresh_head(model, tokenizer, t, cfg, seed, model_digest)
            protocol[t.name] = "fresh_head"
        metrics[t.name] = score_task(t.spec, y, pred)
        main_metric[t.name], kinds[t.name] = t.spec.metric_name, t.spec.kind
        frames.append(pd.DataFrame({"task": t.name, "example_id": ids, "label": np.asarray(y, np.float64),
                                    "pred": np.asarray(pred, np.float64)}))
    averages = kind_averages({t: m[main_metric[t]] for t, m in metrics.items()}, kinds)
    return {"metrics": metrics, "main_metric": main_metric, "kinds": kinds, "protocol": protocol,
            "averages": averages, "predictions": pd.concat(frames, ignore_index=True)}


def finite(obj: Any) -> Any:
    """NaN -> None, recursively, so metrics files are strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj
