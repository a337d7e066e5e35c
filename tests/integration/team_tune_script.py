"""Child process of test_team: one `cdco tune` worker on the team's study storage ($CDCO_OPTUNA_STORAGE).

argv: the go-file both workers wait for (so they really share the study), the study's complete trials.
Scores with the cheap deterministic score of tests/unit/tuning_script.py, one second per trial.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from tuning_script import cheap_score  # noqa: E402


def main() -> None:
    from cdco_core.profile import load_profile
    from cdco_core.tuning import run_study

    go, n_trials = Path(sys.argv[1]), int(sys.argv[2])
    while not go.exists():
        time.sleep(0.1)

    def score(overrides: list[str]) -> float:
        time.sleep(1.0)  # long enough for the other worker to ask while this trial runs
        return cheap_score(overrides)

    run_study(load_profile("smoke"), "lora_mtl", score, n_trials=n_trials, seed=3)  # storage from the environment


if __name__ == "__main__":
    main()
