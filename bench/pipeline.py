"""Pipeline re-run cost: wall time of an unchanged re-run (ours) against the cold run (peer), same profile.

Each run is ``cdco run --profile P`` in a fresh process, as a user would type it (Python start-up, Prefect's
local server, MLflow logging included), in a private temporary CDCO_HOME with its own MLflow SQLite store
and PREFECT_HOME; the re-run reuses the cold run's home. Target (issue 6): re-run <= 10% of cold on demo.
``quick`` runs smoke only.

Each run also reports its peak memory: the RSS of ``cdco run`` and of its whole process tree (the local Prefect
server is a child process), sampled every 0.1 s. Target (issue 18): the cold demo's tree <= 3 GiB.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TARGET = 0.10
RSS_TARGET_MIB = 3 * 1024


def run_sampled(cmd: list[str], env: dict[str, str], every: float = 0.1) -> tuple[subprocess.CompletedProcess,
                                                                                  dict[str, float | None]]:
    """Run ``cmd`` to completion (output captured) while sampling the RSS of it and its descendants.

    Returns:
        (the completed process, {"peak_rss_mib": peak of the process itself,
        "peak_tree_rss_mib": peak of the sum over the process and all its descendants at one sample}); both None
        when not one sample could be read, so a failed probe never reads as a low peak. If this is interrupted
        (Ctrl-C), the command and its descendants are killed before the exception goes on.
    """
    import psutil

    peak: dict[str, float | None] = {"peak_rss_mib": None, "peak_tree_rss_mib": None}
    stop = threading.Event()
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:

        def sample() -> None:
            while not stop.is_set():
                try:
                    root = psutil.Process(proc.pid)
                    own = root.memory_info().rss
                    tree = own + sum(_rss(c) for c in root.children(recursive=True))
                except psutil.NoSuchProcess:  # the command has exited (a zombie until communicate reaps it)
                    return
                except psutil.Error:  # AccessDenied and the like: skip this sample, keep trying
                    stop.wait(every)
                    continue
                peak["peak_rss_mib"] = max(peak["peak_rss_mib"] or 0.0, own / 2**20)
                peak["peak_tree_rss_mib"] = max(peak["peak_tree_rss_mib"] or 0.0, tree / 2**20)
                stop.wait(every)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            stdout, stderr = proc.communicate()
        except BaseException:
            _kill_tree(proc.pid)
            raise
        finally:
            stop.set()
            sampler.join()
    done = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    return done, {k: None if v is None else round(v, 1) for k, v in peak.items()}


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant (the local Prefect server is one), children first."""
    import psutil

    try:
        root = psutil.Process(pid)
        family = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.kill()


def _rss(p: Any) -> int:
    """RSS of a descendant, 0 once it has gone (children come and go between the listing and the read)."""
    import psutil

    try:
        return p.memory_info().rss
    except psutil.Error:
        return 0


def timed_run(profile: str, home: Path, overrides: list[str] | None = None) -> tuple[float, dict[str, Any],
                                                                                  dict[str, float | None]]:
    """(wall seconds, the pipeline's JSON result, its peak memory) of one ``cdco run`` in a subprocess."""
    env = {**os.environ, "CDCO_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
           "PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PREFECT_API_URL", None)  # local mode, like `make demo`
    sets = [a for o in overrides or [] for a in ("--set", o)]
    cmd = [sys.executable, "-m", "cli.main", "run", "--profile", profile, *sets, "--json"]
    t0 = time.perf_counter()
    proc, memory = run_sampled(cmd, env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = "\n" + proc.stdout
    return wall, json.loads(out[out.rindex("\n{\n"):]), memory  # the result: the last JSON object printed


def measure(profile: str) -> dict[str, Any]:
    from bench import comparison

    with tempfile.TemporaryDirectory(prefix=f"cdco-bench-{profile}-") as tmp:
        home = Path(tmp)
        cold, first, cold_memory = timed_run(profile, home)
        warm, second, _ = timed_run(profile, home)
    recomputed = sorted(n for n, s in second["steps"].items() if not s["cached"])
    return comparison(f"rerun_vs_cold_{profile}", ours=warm, peer=cold, unit="s", higher_is_better=False,
                      target=TARGET, cold_s=round(cold, 2), rerun_s=round(warm, 2),
                      steps=len(second["steps"]), recomputed_on_rerun=recomputed,
                      cold_cached_steps=sum(s["cached"] for s in first["steps"].values()),
                      cold_peak_rss_mib=cold_memory["peak_rss_mib"],
                      cold_peak_tree_rss_mib=cold_memory["peak_tree_rss_mib"], peak_rss_target_mib=RSS_TARGET_MIB,
                      peak_rss_meets=cold_memory["peak_tree_rss_mib"] is not None
                      and cold_memory["peak_tree_rss_mib"] <= RSS_TARGET_MIB)


def run(quick: bool = False) -> dict[str, Any]:
    profiles = ["smoke"] if quick else ["smoke", "demo"]
    return {"comparisons": [measure(p) for p in profiles],
            "note": "ours = unchanged re-run wall time, peer = cold run; each a fresh `cdco run` process"}
