"""Train stages 0..STAGE of cdco on the smoke profile, in one process or under ``torchrun`` (DDP).

    python ddp_script.py OUT.json STAGE KILL_AT [override ...]
    python -m torch.distributed.run --nproc-per-node 2 ddp_script.py OUT.json STAGE KILL_AT [override ...]

Dropout is set to 0 after the model is built: with dropout a rank's rows get other masks than the same rows in a
one-process batch, so the two could not be compared. ODMS is ``conftest.fake_negatives`` (no UMAP).
KILL_AT > 0: rank 1 (or the only rank) writes OUT.json.ready with its pid after that global step and sleeps.
Rank 0 writes OUT.json.
"""

from __future__ import annotations

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

    import cdco_core.odms.pipeline as odms
    import cdco_core.training.pipeline as pipeline
    from cdco_core.config import load_config
    from cdco_core.training import distributed

    d = distributed.setup()
    odms.negatives_step = conftest.fake_negatives
    build = pipeline.build_for_plan

    def build_without_dropout(plan):
        model, tok = build(plan)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        return model, tok

    pipeline.build_for_plan = build_without_dropout
    victim = 1 if d.active else 0

    def on_step(info: dict) -> None:
        if info["global_step"] == kill_at and d.rank == victim:
            Path(f"{out}.ready").write_text(json.dumps({**info, "pid": os.getpid()}))
            time.sleep(300)  # the test sends SIGKILL now

    result = pipeline.train_stage(load_config("smoke", overrides), "cdco", 0, stage, on_step=on_step)
    distributed.barrier()
    if d.main:
        out.write_text(json.dumps({**result, "world": d.world}, default=str))


if __name__ == "__main__":
    main()
