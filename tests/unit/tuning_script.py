"""Child process of test_tuning: run a 2-trial study with a cheap deterministic score.

argv: storage URL, marker folder, mode ("hang": the second trial writes 'second-started' and sleeps until killed).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path


def cheap_score(overrides: list[str]) -> float:
    """Deterministic, distinct per setting: best near lr 3e-4, head lr 1e-2, r 16."""
    values = dict(o.split("=", 1) for o in overrides)
    lr, head_lr, r = float(values["train.stages.0.lr"]), float(values["train.head_lr"]), int(values["adapters.r"])
    return -abs(math.log10(lr) + 3.5) - abs(math.log10(head_lr) + 2.0) + r / 100.0


def main() -> None:
    from cdco_core.profile import load_profile as load_config
    from cdco_core.tuning import run_study

    storage, markers, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    calls = []

    def score(overrides: list[str]) -> float:
        calls.append(overrides)
        if mode == "hang" and len(calls) == 2:
            (markers / "second-started").write_text("\n".join(overrides))
            time.sleep(600)  # killed here, mid-trial
        return cheap_score(overrides)

    run_study(load_config("smoke"), "lora_mtl", score, n_trials=2, seed=7, storage=storage)


if __name__ == "__main__":
    main()
