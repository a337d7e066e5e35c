"""How a trained method is scored (the ``evaluate`` step calls :func:`evaluate_model`).

Protocol (docs/methods.md, "Evaluation protocol" and "Benchmark"):
    ID tasks       the training mixture; the method's own trained head on the task's eval split.
    OOD, KI tasks  never trained on; features from ``model.encode(..., task_ids=None)`` (frozen encoder + the
                   method's adapters), a fresh linear head trained on the task's train split with the fixed budget
                   of ``cfg.eval`` and the evaluation seed, scored on the eval split. With ``eval.probe_budgets``
                   the head is also trained on a seeded, stratified sample of N train rows (entry ``task.nN``);
                   the plain ``task`` entry is the full (capped) train split. Tasks with ``probe: false`` (pool
                   only) are not scored.
    zero-shot      ``eval.zero_shot``: an ID task's trained head applied unchanged to another task's eval split
                   (entry ``source_to_target``, kind ZS, accuracy).

An *entry* is one scored column: a task at one budget, or a zero-shot pair. Per entry: every metric that fits its
type, main metric first, and per-example predictions for the paired bootstrap. *Scopes* (:func:`scopes`) average
entries: ID, OOD, KI and overall at the full budget (as before budgets existed), OOD_seen / OOD_unseen, the same at
each budget (``OOD_unseen.n256``), zero_shot, and the primary endpoint.

``split="dev"`` scores what settings may be chosen on (``cdco tune``): the ID tasks' dev split (carved from train,
``data.dev_fraction``) and the seen-domain OOD tasks' validation split; never a reported split.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from cdco_core.config import Config
from cdco_core.errors import InputError
from cdco_core.evaluation.features import split_features
from cdco_core.evaluation.heads import HeadBudget
from cdco_core.evaluation.metrics import METRIC_FUNCS, score_task

KINDS = ("ID", "OOD", "KI")
ENTRY_KINDS = (*KINDS, "ZS")  # ZS: zero-shot transfer entries
FULL = "full"


def budget_entry(task: str, budget: str) -> str:
    """The entry name of ``task`` probed at ``budget`` ("full" -> the task's own name, "256" -> "task.n256")."""
    return task if budget == FULL else f"{task}.n{budget}"


def zero_shot_entry(source: str, target: str) -> str:
    return f"{source}_to_{target}"


# ---------------------------------------------------------------------------------------- scoring
def _predict_with_trained_head(model, tokenizer, task, cfg: Config, model_digest: str,
                               split: str) -> tuple[np.ndarray, ...]:
    """ID task: the method's own head on ``split``. Returns (example_ids, labels, predictions)."""
    import torch

    tid = list(model.task_names).index(task.name)
    f, _ = split_features(model, tokenizer, task, split, model_digest=model_digest,
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


def _probe(model, tokenizer, task, cfg: Config, seed: int, model_digest: str, split: str,
           budgets: list[int]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """OOD/KI task: features with task_ids=None, a fresh head per label budget and on the full train split,
    predictions on ``split``. Returns (example_ids, labels, {budget name: predictions})."""
    from cdco_core.evaluation.protocols import probe_at_budgets

    common = {"model_digest": model_digest, "max_length": cfg.model.max_length, "batch_size": cfg.eval.batch_size}
    tr, _ = split_features(model, tokenizer, task, "train", **common)
    ev, _ = split_features(model, tokenizer, task, split, **common)
    preds = probe_at_budgets(task.spec.type, tr, ev, budgets, head=HeadBudget.from_eval(cfg.eval), seed=seed,
                             num_labels=task.num_labels)
    return ev.example_ids, ev.labels, preds


def scored_split(task, split: str) -> str | None:
    """The split a task is scored on: ``"report"`` -> its eval split; ``"dev"`` -> an ID task's dev split, a seen
    OOD task's validation split, None for every other task (not scored while tuning)."""
    if split == "report":
        return task.eval_split if (task.spec.kind == "ID" or task.spec.probe) else None
    if task.spec.kind == "ID":
        return "dev"
    if task.spec.kind == "OOD" and task.spec.ood_protocol == "seen" and task.spec.probe:
        return "validation"
    return None


def check_dev_splits(tasks: list) -> None:
    """Refuse tuning when a task it scores has no such split (before any training).

    Raises:
        InputError: an ID task without a dev split (``data.dev_fraction`` is 0) or a seen OOD task without a
            validation split; names the task.
    """
    for t in tasks:
        want = scored_split(t, "dev")
        if want and (want not in t.splits or len(t.splits[want]) == 0):
            fix = "set data.dev_fraction > 0 (e.g. 0.1)" if want == "dev" else "give it a validation split"
            raise InputError(f"tuning scores task {t.name!r} on its {want!r} split, which it does not have; {fix}")


def scopes(entries: dict[str, dict[str, Any]], budgets: list[int]) -> dict[str, list[list[str]]]:
    """Scope name -> groups of entries; a scope's value is the mean over its groups of each group's mean.

    Args:
        entries: entry -> {"kind", "budget", "ood_protocol"} (as :func:`evaluate_model` records them).
        budgets: the probe budgets besides the full split.

    Returns:
        ``ID``, ``OOD``, ``KI``, ``overall`` (every ID entry and every full-budget OOD/KI entry, one group: the
        mean over tasks), ``OOD_seen``/``OOD_unseen`` where declared, each of those at every budget (``KI.n256``),
        ``zero_shot``, and ``primary`` = (ID + OOD_unseen + KI) / 3 at the smallest budget (plain OOD when no
        unseen domain is declared, the full split when there are no budgets): empty scopes are left out.
    """
    def pick(kind: str, budget: str = FULL, protocol: str | None = None) -> list[str]:
        ok = ("trained", FULL) if kind == "ID" else (budget,)  # an ID task without a head is probed at full
        return [e for e, m in entries.items() if m["kind"] == kind and m["budget"] in ok
                and (protocol is None or m.get("ood_protocol") == protocol)]

    out: dict[str, list[list[str]]] = {k: [pick(k)] for k in KINDS}
    out["overall"] = [pick("ID") + pick("OOD") + pick("KI")]
    for b in [FULL, *map(str, budgets)]:
        tail = "" if b == FULL else f".n{b}"
        if b != FULL:
            out[f"OOD{tail}"], out[f"KI{tail}"] = [pick("OOD", b)], [pick("KI", b)]
        for p in ("seen", "unseen"):
            out[f"OOD_{p}{tail}"] = [pick("OOD", b, p)]
    out["zero_shot"] = [[e for e, m in entries.items() if m["kind"] == "ZS"]]
    tail = f".n{min(budgets)}" if budgets else ""
    ood = out[f"OOD_unseen{tail}"] if out[f"OOD_unseen{tail}"][0] else out[f"OOD{tail}"]
    out["primary"] = [out["ID"][0], ood[0], out[f"KI{tail}"][0]]
    return {name: [g for g in groups if g] for name, groups in out.items() if any(groups)}


def scope_value(values: dict[str, float], groups: list[list[str]]) -> float:
    """Mean over ``groups`` of each group's mean value."""
    return float(np.mean([np.mean([values[e] for e in g]) for g in groups]))


def evaluate_model(model, tokenizer, tasks: list, cfg: Config, seed: int, model_digest: str,
                   split: str = "report", on_item: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Score a loaded model on ``tasks`` (protocol in the module docstring).

    Args:
        split: ``"report"`` (the eval splits, with probe budgets and zero-shot) or ``"dev"`` (what tuning reads).
        on_item: called after each task (its probes included) and each zero-shot pair with (items done, items in
            all, the item's name): a progress display.

    Returns:
        {"metrics": {entry: {metric: value}}, "main_metric": {entry: name}, "kinds": {entry: ID|OOD|KI|ZS},
         "entries": {entry: {"task", "kind", "budget", "ood_protocol", "split"}},
         "protocol": {entry: "trained_head" | "fresh_head" | "fresh_head_n<N>" | "zero_shot"},
         "averages": {scope: value}, "split": split, "predictions": DataFrame(task=entry, example_id, label, pred)}
    """
    from cdco_core.evaluation.protocols import zero_shot_transfer

    budgets = sorted(cfg.eval.probe_budgets) if split == "report" else sorted(cfg.eval.probe_budgets)[:1]
    metrics, main_metric, entries, protocol, frames = {}, {}, {}, {}, []
    trained = set(getattr(model, "task_names", []))

    def add(entry: str, task, kind: str, budget: str, where: str, how: str, ids, y, pred,
            metric: str | None = None) -> None:
        spec = task.spec
        metrics[entry] = {metric: METRIC_FUNCS[metric](y, pred)} if metric else score_task(spec, y, pred)
        main_metric[entry] = metric or spec.metric_name
        entries[entry] = {"task": task.name, "kind": kind, "budget": budget, "split": where,
                          "ood_protocol": spec.ood_protocol if kind == "OOD" else None}
        protocol[entry] = how
        frames.append(pd.DataFrame({"task": entry, "example_id": ids, "label": np.asarray(y, np.float64),
                                    "pred": np.asarray(pred, np.float64)}))

    scored = [(t, where) for t in tasks if (where := scored_split(t, split)) is not None]
    transfers = [zs for zs in cfg.eval.zero_shot if zs.source in trained] if split == "report" else []
    done = 0

    def item_done(name: str) -> None:
        nonlocal done
        done += 1
        if on_item is not None:
            on_item(done, len(scored) + len(transfers), name)

    for t, where in scored:
        if t.spec.kind == "ID" and t.name in trained:
            ids, y, pred = _predict_with_trained_head(model, tokenizer, t, cfg, model_digest, where)
            add(t.name, t, "ID", "trained", where, "trained_head", ids, y, pred)
            item_done(t.name)
            continue
        # OOD/KI, or an ID task the method has no head for (probed like OOD, and recorded so)
        ids, y, preds = _probe(model, tokenizer, t, cfg, seed, model_digest, where,
                               [b for b in budgets if b <= len(t.splits["train"])])
        for b, pred in sorted(preds.items(), key=lambda kv: kv[0] != FULL):  # the full split first
            add(budget_entry(t.name, b), t, t.spec.kind, b, where, "fresh_head" if b == FULL else f"fresh_head_n{b}",
                ids, y, pred)
        item_done(t.name)
    by_name = {t.name: t for t in tasks}
    for zs in transfers:  # a method without the source's head (none today) has nothing to transfer
        r = zero_shot_transfer(model, tokenizer, by_name[zs.source], by_name[zs.target], zs.label_map,
                               model_digest=model_digest, max_length=cfg.model.max_length,
                               batch_size=cfg.eval.batch_size)
        add(zero_shot_entry(zs.source, zs.target), by_name[zs.target], "ZS", "zero_shot",
            by_name[zs.target].eval_split, "zero_shot", r.example_ids, r.labels, r.predictions, metric="accuracy")
        item_done(f"{zs.source}->{zs.target}")
    main = {e: m[main_metric[e]] for e, m in metrics.items()}
    averages = {name: scope_value(main, groups) for name, groups in scopes(entries, budgets).items()}
    return {"metrics": metrics, "main_metric": main_metric, "kinds": {e: m["kind"] for e, m in entries.items()},
            "entries": entries, "protocol": protocol, "averages": averages, "split": split,
            "predictions": pd.concat(frames, ignore_index=True)}


def finite(obj: Any) -> Any:
    """NaN -> None, recursively, so metrics files are strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj
