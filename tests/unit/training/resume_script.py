"""Run all stages of a method in this process; optionally freeze at a global step so a test can SIGKILL it.

    python resume_script.py OUT.json METHOD KILL_AT [override ...]

KILL_AT > 0: after that global step, write OUT.json.ready and sleep (the test kills the process).
ODMS is replaced by ``conftest.fake_negatives`` (no UMAP), so only the trainer is exercised.
"""

from __future__ import annotations

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

    import cdco_core.odms.pipeline as odms
    from cdco_core.config import load_config
    from cdco_core.training.pipeline import train_all_stages

    odms.negatives_step = conftest.fake_negatives

    def on_step(info: dict) -> None:
        if info["global_step"] == kill_at:
            Path(f"{out}.ready").write_text(json.dumps(info))
            time.sleep(120)  # the test sends SIGKILL now

    result = train_all_stages(load_config("smoke", overrides), method, 0, on_step=on_step)
    out.write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
