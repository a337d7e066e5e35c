"""Step ``report``: the comparison over every evaluated method and seed (:mod:`cdco_core.evaluation.compare`).

Inputs: every ``evaluate`` record, in method x seed order, every task (for the majority-class floors) and every
``train`` record (for the share of steps each task received, and each run's final weights: methods that trained
the same bytes are named as one model). ``params["runs"]`` lists each method x seed's stages
(:meth:`~cdco_core.plan.Plan.runs`): a stage shared by several methods is one record.
Writes comparison.csv, comparison.md, bootstrap.csv, results.json and the plots.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from cdco_core.steps.base import Step, StepCall

if TYPE_CHECKING:
    from cdco_core.config import Config
    from cdco_core.plan import Node


def section(cfg: Config, node: Node) -> dict[str, Any]:
    return {"profile": cfg.profile, "seed": cfg.seed, "eval": cfg.eval.model_dump(mode="json"),
            "methods": node.params["methods"], "seeds": node.params["seeds"]}


def compute(call: StepCall) -> dict[str, Any]:
    from cdco_core.data import open_task
    from cdco_core.evaluation.compare import majority_floors, task_step_shares, write_report

    t0 = time.perf_counter()
    results = [{**call.inputs[i].outputs, "predictions": str(call.inputs[i].path("predictions.parquet"))}
               for i in call.node.inputs if i.startswith("evaluate[")]
    floors = majority_floors([open_task(call.inputs[i]) for i in call.node.inputs if i.startswith("prepare[")])
    metas = {i: json.loads(call.inputs[i].path("meta.json").read_text(encoding="utf-8"))  # verified records' files
             for i in call.node.inputs if i.startswith("train[")}
    histories: dict[tuple[str, int], list[list[dict[str, Any]]]] = {}
    finals: dict[tuple[str, int], str] = {}  # (method, seed) -> the last stage's weights sha256
    for method, seed, chain in call.node.params["runs"]:  # a stage shared by several methods counts for each
        histories[(method, int(seed))] = [metas[i]["history"] for i in chain]
        finals[(method, int(seed))] = metas[chain[-1]]["weights_sha256"]
    return write_report(call.cfg, results, call.out, call.node.params["methods"], call.node.params["seeds"], t0,
                        floors=floors, step_shares=task_step_shares(histories), final_weights=finals)


STEP = Step("report", section, compute, label=lambda node: "comparison")
