"""Step ``report``: the comparison over every evaluated method and seed (:mod:`cdco_core.evaluation.compare`).

Inputs: every ``evaluate`` record, in method x seed order. Writes comparison.csv, comparison.md, bootstrap.csv,
results.json and the plots.
"""

from __future__ import annotations

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
    from cdco_core.evaluation.compare import write_report

    t0 = time.perf_counter()
    results = [{**r.outputs, "predictions": str(r.path("predictions.parquet"))}
               for r in (call.inputs[i] for i in call.node.inputs)]
    return write_report(call.cfg, results, call.out, call.node.params["methods"], call.node.params["seeds"], t0)


STEP = Step("report", section, compute, label=lambda node: "comparison")
