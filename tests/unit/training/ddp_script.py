"""Train stages 0..STAGE of cdco on the smoke profile, in one process or under ``torchrun`` (DDP).

    python ddp_script.py OUT.json STAGE KILL_AT [override ...]
    python -m torch.distributed.run --nproc-per-node 2 ddp_script.py OUT.json STAGE KILL_AT [override ...]

Dropout is set to 0 after the model is built: with dropout a rank's rows get other masks than the same rows in a
one-process batch, so the two could not be compared. ODMS is ``conftest.fake_negatives`` (no UMAP).
KILL_AT > 0: rank 1 (or the only rank) writes OUT.json.ready with its pid after that global step and sleeps.
Rank 0 writes OUT.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    out, stage, kill_at, overrides = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    torch.set_num_threads(1)
    import conftest

    import cdco_core.steps.negatives as negatives
    import cdco_core.steps.train as train_step
    from cdco_core.plan import build_plan
    from cdco_core.profile import load_profile
    from cdco_core.runner import run_plan
    from cdco_core.training import distributed

    d = distributed.setup()
    # the step table reads negatives.STEP on every call: the plan's negatives node runs the fake (no UMAP)
    negatives.STEP = dataclasses.replace(negatives.STEP, compute=lambda call: conftest.fake_negatives(call.cfg,
                                                                                                     call.out))
    build = train_step.build_model

    def build_without_dropout(*args, **kwargs):
        model, tok = build(*args, **kwargs)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        return model, tok

    train_step.build_model = build_without_dropout
    victim = 1 if d.active else 0

    def on_step(info: dict) -> None:
        if info["global_step"] == kill_at and d.rank == victim:
            Path(f"{out}.ready").write_text(json.dumps({**info, "pid": os.getpid()}))
            time.sleep(300)  # the test sends SIGKILL now

    plan = build_plan(load_profile("smoke", overrides), ["cdco"], [0])
    for node in plan.of_step("negatives"):
        node.inputs = []  # the fake reads no embeddings: neither embed nor manifold runs
    nodes = [n.id for n in plan.of_step("train")][: stage + 1]
    records = run_plan(plan, nodes[-1:], on_step=on_step)
    distributed.barrier()
    if d.main:
        last = records[nodes[-1]]
        out.write_text(json.dumps({"key": last.key, "path": last.dir, "stage0_path": records[nodes[0]].dir,
                                   "train": last.outputs["train"], "world": d.world}, default=str))


if __name__ == "__main__":
    main()
