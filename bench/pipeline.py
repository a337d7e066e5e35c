"""Pipeline re-run cost: wall time of an unchanged re-run (ours) against the cold run (peer), same profile.

Each run is ``cdco run --profile P`` in a fresh process, as a user would type it (Python start-up, Prefect's
local server, MLflow logging included), in a private temporary CDCO_HOME with its own MLflow SQLite store
and PREFECT_HOME; the re-run reuses the cold run's home. Target (issue 6): re-run <= 10% of cold on demo.
``quick`` runs smoke only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 0.10


def timed_run(profile: str, home: Path, overrides: list[str] | None = None) -> tuple[float, dict[str, Any]]:
    """(wall seconds, the pipeline's JSON result) of one ``cdco run`` in a subprocess."""
    env = {**os.environ, "CDCO_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
           "PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PREFECT_API_URL", None)  # local mode, like `make demo`
    sets = [a for o in overrides or [] for a in ("--set", o)]
    cmd = [sys.executable, "-m", "cli.main", "run", "--profile", profile, *sets, "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = "\n" + proc.stdout
    return wall, json.loads(out[out.rindex("\n{\n"):])  # the result: the last JSON object printed


def measure(profile: str) -> dict[str, Any]:
    from bench import comparison

    with tempfile.TemporaryDirectory(prefix=f"cdco-bench-{profile}-") as tmp:
        home = Path(tmp)
        cold, first = timed_run(profile, home)
        warm, second = timed_run(profile, home)
    recomputed = sorted(n for n, s in second["steps"].items() if not s["cached"])
    return comparison(f"rerun_vs_cold_{profile}", ours=warm, peer=cold, unit="s", higher_is_better=False,
                      target=TARGET, cold_s=round(cold, 2), rerun_s=round(warm, 2),
                      steps=len(second["steps"]), recomputed_on_rerun=recomputed,
                      cold_cached_steps=sum(s["cached"] for s in first["steps"].values()))


def run(quick: bool = False) -> dict[str, Any]:
    profiles = ["smoke"] if quick else ["smoke", "demo"]
    return {"comparisons": [measure(p) for p in profiles],
            "note": "ours = unchanged re-run wall time, peer = cold run; each a fresh `cdco run` process"}
