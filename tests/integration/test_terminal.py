"""What a person sees in a terminal: ``cdco run --profile smoke`` through a pseudo-terminal draws a progress bar per
training stage and ends with the summary."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_pty(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """(exit code, everything written to the terminal, colour codes removed)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, cwd=ROOT, env=env,
                            close_fds=True)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
        if time.monotonic() > deadline:  # a hang guard, not a speed target
            proc.kill()
            break
    os.close(leader)
    code = proc.wait(timeout=60)
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r\n", "\n")


def test_cdco_run_ends_with_the_summary(tmp_path) -> None:
    env = {**os.environ, "CDCO_HOME": str(tmp_path / "home"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}", "TERM": "xterm"}
    env.pop("PREFECT_API_URL", None)
    env.pop("CI", None)  # progress bars are drawn on a terminal unless CI is set
    code, out = run_in_pty([sys.executable, "-m", "cli.main", "run", "--profile", "smoke",
                            "--set", "orchestration.task_runner=thread"], env, timeout=900)
    assert code == 0, out[-3000:]
    tail = out.rstrip().splitlines()
    start = max(i for i, ln in enumerate(tail) if ln.startswith("cdco run: profile smoke,"))
    summary = tail[start:]
    assert re.match(r"cdco run: profile smoke, \d+ steps \(\d+ computed, 0 from cache\), [\d.]+ s$", summary[0])
    assert summary[2].split() == ["method", "ID", "OOD", "KI", "primary", "overall"]  # overall last
    assert re.match(r"cdco( +\d\.\d{3}){5}$", summary[4])  # ID, OOD, KI, primary, overall
    assert any(ln.startswith("report      ") and ln.endswith("comparison.md") for ln in summary)
    assert any(ln.startswith("registered  cdco-smoke version 1 @latest_run (new") for ln in summary)
    assert summary[-1].startswith("MLflow      mlflow ui --backend-store-uri sqlite:///")
    assert "{" not in "\n".join(summary)  # no JSON unless --json
    # a bar per training stage, ending with the stage's last step: steps, rate (or s/step when slower), loss
    for stage in ("0-warmup", "3-consolidate"):
        assert re.search(rf"train\[cdco/seed0/{stage}\]: 100%\|[^\r\n]*\| (\d+)/\1 \[[^\]]*(step/s|s/step), loss=\d",
                         out), out[-3000:]
    # the other long steps draw theirs: embedding in rows, the manifold fit in phases, the evaluation in tasks
    assert re.search(r"embed\[imdb\]: 100%\|[^\r\n]*\| (\d+)/\1 \[[^\]]*(row/s|s/row)", out), out[-3000:]
    assert re.search(r"manifold\[[^\]]*\]: 100%\|[^\r\n]*\| 2/2 \[[^\]]*(phase/s|s/phase), done", out), out[-3000:]
    assert re.search(r"evaluate\[cdco/seed0\]: 100%\|[^\r\n]*\| (\d+)/\1 \[[^\]]*(task/s|s/task)", out), out[-3000:]
    # Prefect's first-run telemetry notice at most once (its temporary server would repeat it)
    assert out.count("Prefect collects anonymous usage data") <= 1
