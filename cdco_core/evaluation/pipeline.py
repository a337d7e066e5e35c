"""``evaluate_step(cfg, method, seed)``: score one trained method and seed on every configured task.

Protocol (docs/methods.md, "Evaluation protocol"):
    ID tasks       the training mixture; the method's own trained head on the task's eval split.
    OOD, KI tasks  never trained on; features from ``model.encode(..., task_ids=None)`` (frozen encoder +
                   the method's adapters), a fresh linear head trained on the task's train split with the
                   fixed budget of ``cfg.eval`` and the evaluation seed, scored on the eval split.
Per task: every metric that fits its type, main metric first; averages of the main metric per kind and
overall. Per-example predictions are kept for the paired bootstrap.

Output, content-addressed: ``CDCO_HOME/eval/<method>/<key>/{metrics.json, predictions.parquet}`` with key =
sha256 of the trained model's digest, the tasks' data digests, the eval settings, the seed and
:data:`EVAL_VERSION`. Same inputs, same key: the cached result is returned.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cdco_core.config import Config, apply_overrides, cdco_home, format_validation_error
from cdco_core.errors import ConfigError, InputError
from cdco_core.evaluation.features import split_features
from cdco_core.evaluation.heads import HeadBudget, train_head
from cdco_core.evaluation.metrics import score_task, task_metric_names
from cdco_core.io import atomic_dir, sha256_json

EVAL_VERSION = "1"  # bump when scoring changes: every cached evaluation is recomputed
KINDS = ("ID", "OOD", "KI")
# What an evaluation result depends on besides the trained model and the data (eval.methods, eval.seeds and
# the bootstrap settings are left out: changing them must not invalidate scores already computed).
EVAL_SECTIONS = ("eval.head_epochs", "eval.head_lr", "eval.head_batch_size", "eval.batch_size", "model.max_length")


# ----------------------------------------------------------------------------------------- inputs
def method_config(cfg: Config, method: Any) -> Config:
    """``cfg`` with the method's ``config_overrides`` applied to the raw dict and re-validated.

    Raises:
        ConfigError: an override names an unknown key or a bad value (message names the method).
    """
    overrides = list(getattr(method, "config_overrides", []) or [])
    if not overrides:
        return cfg
    from pydantic import ValidationError

    raw = apply_overrides(cfg.model_dump(mode="json"), overrides)
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"(method {method.name!r} config_overrides)")) from None


def select_tasks(all_tasks: list, names: list[str] | None) -> list:
    """The tasks named (in that order), or all. Raises InputError for an unknown name, listing the known."""
    if names is None:
        return list(all_tasks)
    known = {t.name: t for t in all_tasks}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"unknown task(s) {unknown}; configured tasks: {', '.join(sorted(known))}")
    return [known[n] for n in names]


def check_tasks(tasks: list) -> None:
    """Refuse, before any training, tasks that cannot be scored.

    Raises:
        InputError: a metric that does not fit the type, or a missing train / eval split (names task and split).
    """
    if not tasks:
        raise InputError("no tasks to evaluate")
    for t in tasks:
        task_metric_names(t.spec)  # raises MetricError for a metric that does not fit the type
        if t.spec.kind not in KINDS:
            raise InputError(f"task {t.name!r}: kind {t.spec.kind!r} is not one of {', '.join(KINDS)}")
        for split in ("train", t.eval_split):
            if split not in t.splits or len(t.splits[split]) == 0:
                raise InputError(
                    f"task {t.name!r}: split {split!r} is missing or empty; found splits: {sorted(t.splits)} "
                    f"(the protocol needs 'train' and the eval split {t.eval_split!r})"
                )


def load_checked_tasks(cfg: Config, names: list[str] | None = None) -> list:
    """Load the configured tasks, select ``names``, and check them (:func:`check_tasks`)."""
    from cdco_core.data import load_tasks

    tasks = select_tasks(load_tasks(cfg.data), names)
    check_tasks(tasks)
    return tasks


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


# ------------------------------------------------------------------------------------------- step
def eval_key(cfg: Config, seed: int, model_digest: str, tasks: list) -> str:
    return sha256_json({"model": model_digest, "tasks": {t.name: t.digest for t in tasks}, "seed": seed,
                        "eval": cfg.section_digest(*EVAL_SECTIONS), "version": EVAL_VERSION})


def _read_cached(path: Path) -> dict[str, Any] | None:
    try:
        out = json.loads((path / "metrics.json").read_text())
        if not (path / "predictions.parquet").exists():
            return None
    except (OSError, ValueError):
        return None
    return out


def evaluate_step(cfg: Config, method: str, seed: int, tasks: list[str] | None = None) -> dict[str, Any]:
    """Train ``method`` with ``seed`` (from the trainer's cache when unchanged) and score it on every task.

    Args:
        cfg: validated config; the method's ``config_overrides`` are applied here.
        method: registry name (see :func:`cdco_core.methods.list_methods`).
        seed: training and evaluation seed.
        tasks: restrict scoring to these task names (default: every configured task).

    Returns:
        {"method", "seed", "metrics", "main_metric", "kinds", "protocol", "averages", "path", "predictions",
         "cached"}: JSON-able; ``predictions`` is the Parquet path of per-example predictions.

    Raises:
        InputError: unknown method or task, a metric that does not fit, a missing split (before training).
    """
    from cdco_core.methods import get_method

    m = get_method(method)
    mcfg = method_config(cfg, m)
    task_data = load_checked_tasks(mcfg, tasks)
    from cdco_core.training.pipeline import load_trained, train_all_stages

    trained = train_all_stages(mcfg, method, seed)
    key = eval_key(mcfg, seed, str(trained["digest"]), task_data)
    out_dir = cdco_home() / "eval" / method / key[:16]
    cached = _read_cached(out_dir)
    if cached is not None:
        return {**cached, "path": str(out_dir), "cached": True}
    model, tokenizer = load_trained(mcfg, method, seed)
    res = evaluate_model(model, tokenizer, task_data, mcfg, seed, str(trained["digest"]))
    preds = res.pop("predictions")
    summary = {"method": method, "seed": seed, **res, "key": key,
               "predictions": str(out_dir / "predictions.parquet")}
    with atomic_dir(out_dir) as tmp:
        preds.to_parquet(tmp / "predictions.parquet", index=False)
        (tmp / "metrics.json").write_text(json.dumps(_finite(summary), indent=2))  # keeps task order
    return {**summary, "path": str(out_dir), "cached": False}


def _finite(obj: Any) -> Any:
    """NaN -> None so metrics.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
