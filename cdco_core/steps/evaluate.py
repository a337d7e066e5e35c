"""Step ``evaluate``: one trained method and seed scored on every task (:mod:`cdco_core.evaluation.scoring`).

Inputs: the method's last training stage and every task. Writes ``metrics.json`` (per entry: a task at a probe
budget, or a zero-shot pair; per scope; the method's size and measured seconds per step) and
``predictions.parquet`` (per example, for the paired bootstrap). ``node.params["split"]`` is ``"report"`` (the
eval splits) or ``"dev"`` (the dev splits ``cdco tune`` scores).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cdco_core.steps.base import Step, StepCall
from cdco_core.steps.train import method_module

if TYPE_CHECKING:
    from cdco_core.config import Config
    from cdco_core.plan import Node


def section(cfg: Config, node: Node) -> dict[str, Any]:
    """The evaluation budget and the method and seed (eval.methods, eval.seeds and the bootstrap settings are
    left out: changing them must not invalidate scores already computed)."""
    from cdco_core.steps.train import method_of

    method = method_of(cfg, node.method)
    e = cfg.eval
    return {"method": node.method, "settings": method.settings.model_dump(mode="json") if method.settings else None,
            "seed": node.params["seed"], "max_length": cfg.model.max_length,
            "split": node.params.get("split", "report"),
            "eval": {"head_epochs": e.head_epochs, "head_lr": e.head_lr, "head_batch_size": e.head_batch_size,
                     "batch_size": e.batch_size, "probe_budgets": sorted(e.probe_budgets),
                     "zero_shot": [z.model_dump(mode="json") for z in e.zero_shot]}}


def compute(call: StepCall) -> dict[str, Any]:
    from cdco_core.data import open_task
    from cdco_core.data.checks import check_task_set
    from cdco_core.evaluation.scoring import evaluate_model, finite
    from cdco_core.steps.train import load_trained, method_cost

    cfg, node = call.cfg, call.node
    final = call.inputs[node.inputs[0]]
    tasks = [open_task(r) for i, r in call.inputs.items() if i.startswith("prepare[")]
    check_task_set(tasks)
    id_tasks = [t for t in tasks if t.spec.kind == "ID"]
    model, tokenizer = load_trained(cfg, node.method, node.params["seed"], final, id_tasks)
    def on_item(done: int, total: int, name: str) -> None:  # a task scored (its probes included)
        if call.on_step is not None:
            call.on_step({"step": done, "total": total, "unit": "task", "what": name})

    res = evaluate_model(model, tokenizer, tasks, cfg, node.params["seed"], final.digest,
                         split=node.params.get("split", "report"), on_item=on_item)
    preds = res.pop("predictions")
    preds.to_parquet(call.out / "predictions.parquet", index=False)
    summary = finite({"method": node.method, "seed": node.params["seed"], **res, "cost": method_cost(final),
                      "weights": final.digest})
    (call.out / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")  # keeps task order
    return summary


STEP = Step("evaluate", section, compute, label=lambda node: f"{node.method}-seed{node.params['seed']}",
            modules=lambda cfg, node: ("cdco_core.steps.evaluate", method_module(node.method)))
