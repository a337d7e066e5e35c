"""`cdco cache prune`: stale `.partial` folders and `.tmp-*` leftovers go, live work and real caches stay."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cdco_core.prune import find_leftovers, remove_leftovers

ROOT = Path(__file__).resolve().parents[2]
DAY = 24 * 3600


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (t, t), follow_symlinks=False)


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    stale = home / "runs" / "cdco" / "abc.partial" / "ckpt-00000008"
    stale.mkdir(parents=True)
    (stale / "weights.safetensors").write_bytes(b"w" * 1000)
    _age(home / "runs" / "cdco" / "abc.partial", 2 * DAY)
    live = home / "runs" / "cdco" / "def.partial" / "ckpt-00000004"
    live.mkdir(parents=True)
    (live / "weights.safetensors").write_bytes(b"w" * 500)
    _age(home / "runs" / "cdco" / "def.partial", 2 * DAY)
    (live / "state.json").write_text("{}")  # written just now: the stage is still running
    tmp = home / "cache" / "tasks" / ".tmp-meta.json-x1"
    tmp.parent.mkdir(parents=True)
    tmp.write_bytes(b"t" * 200)
    _age(tmp, 2 * DAY)
    kept = home / "cache" / "tasks" / "sst2-0123" / "train.parquet"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"p" * 300)
    _age(kept.parent, 2 * DAY)
    return home


def test_find_and_remove_only_stale_leftovers(tmp_path):
    home = _home(tmp_path)
    found = find_leftovers(home, older_than_hours=24)
    assert sorted(f.path.name for f in found) == [".tmp-meta.json-x1", "abc.partial"]
    assert {f.path.name: f.bytes for f in found} == {".tmp-meta.json-x1": 200, "abc.partial": 1000}
    assert find_leftovers(home, older_than_hours=72) == []
    assert remove_leftovers(found) == 1200
    assert not (home / "runs" / "cdco" / "abc.partial").exists()
    assert (home / "runs" / "cdco" / "def.partial" / "ckpt-00000004" / "state.json").exists()
    assert (home / "cache" / "tasks" / "sst2-0123" / "train.parquet").exists()


def test_cli_dry_run_lists_and_keeps_then_prunes(tmp_path):
    home = _home(tmp_path)
    env = {**os.environ, "CDCO_HOME": str(home)}
    cmd = [sys.executable, "-m", "cli.main", "cache", "prune", "--older-than", "24"]
    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "abc.partial" in dry.stdout and ".tmp-meta.json-x1" in dry.stdout and "def.partial" not in dry.stdout
    assert "would free 1200 bytes (2 items)" in dry.stdout
    assert (home / "runs" / "cdco" / "abc.partial").exists()
    real = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert real.returncode == 0, real.stderr
    assert "freed 1200 bytes (2 items)" in real.stdout
    assert not (home / "runs" / "cdco" / "abc.partial").exists()
