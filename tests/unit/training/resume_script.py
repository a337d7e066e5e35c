"""Run every training stage of a method in this process; optionally freeze at a global step so a test can SIGKILL it.

    python resume_script.py OUT.json METHOD KILL_AT [override ...]

KILL_AT > 0: after that global step, write OUT.json.ready and sleep (the test kills the process). Writes
{train node id: record} to OUT.json. The negatives node is replaced by ``conftest.fake_negatives`` with no inputs
(no embedding, no UMAP), so only the trainer is exercised.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    out, method, kill_at, overrides = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    torch.set_num_threads(1)
    import conftest

    import cdco_core.steps.negatives as negatives
    from cdco_core.plan import build_plan
    from cdco_core.profile import load_profile
    from cdco_core.runner import run_plan

    # the step table reads negatives.STEP on every call: the plan's negatives node runs the fake
    negatives.STEP = dataclasses.replace(negatives.STEP, compute=lambda call: conftest.fake_negatives(call.cfg,
                                                                                                     call.out))

    def on_step(info: dict) -> None:
        if info["global_step"] == kill_at:
            Path(f"{out}.ready").write_text(json.dumps(info))
            time.sleep(120)  # the test sends SIGKILL now

    plan = build_plan(load_profile("smoke", overrides), [method], [0])
    for node in plan.of_step("negatives"):
        node.inputs = []  # the fake reads no embeddings: neither embed nor manifold (UMAP) runs
    train = [n.id for n in plan.of_step("train")]
    done = run_plan(plan, targets=train, on_step=on_step)
    out.write_text(json.dumps({n: done[n].as_dict() for n in train}, default=str))


if __name__ == "__main__":
    main()
