"""The console command: fast help, and bad input as one message with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cdco(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)


def test_help_lists_commands_without_importing_torch():
    out = _cdco("--help")
    assert out.returncode == 0
    for cmd in ("run", "step", "compare", "bench", "data"):
        assert cmd in out.stdout
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys, cli.main; print('torch' in sys.modules, 'prefect' in sys.modules)"],
        capture_output=True, text=True, cwd=ROOT)
    assert probe.stdout.split() == ["False", "False"]


def _check_one_csv_task(tmp_path: Path, name: str, csv: str) -> subprocess.CompletedProcess:
    """Write train.csv and a one-task spec for it, then run ``cdco data check`` on the spec."""
    (tmp_path / "train.csv").write_text(csv)
    (tmp_path / "tasks.yaml").write_text(
        f"tasks:\n  - {{name: {name}, kind: ID, type: classification, files: {{train: train.csv}},"
        " text: [review], label: rating}\n")
    return _cdco("data", "check", "--tasks", str(tmp_path / "tasks.yaml"), env={"CDCO_HOME": str(tmp_path / "h")})


def test_data_check_prints_rows_labels_digests(tmp_path):
    out = _check_one_csv_task(tmp_path, "mine", "review,rating\ngood,pos\nbad,neg\nfine,pos\nawful,neg\nok,pos\n")
    assert out.returncode == 0, out.stderr
    assert "mine  kind=ID" in out.stdout
    assert "train       rows=4" in out.stdout and "validation  rows=1" in out.stdout and "digest=" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--profile", "smoke", "--set", "train.nope=1"], "train.nope: unknown key"),
        (["run", "--profile", "nope"], "unknown profile 'nope'"),
        (["run", "--profile", "smoke", "--methods", "cdco,nope"], "unknown method 'nope'; available:"),
        (["data", "check", "--tasks", "missing.yaml"], "task spec file not found: missing.yaml"),
        (["step", "fly", "--profile", "smoke"], "unknown step 'fly'"),
    ],
)
def test_bad_input_is_one_message_and_exit_2(args, message, tmp_path):
    out = _cdco(*args, env={"CDCO_HOME": str(tmp_path / "h")})
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "h").exists() or not any((tmp_path / "h").rglob("*.parquet"))


def test_bad_data_file_exits_2_and_names_row(tmp_path):
    out = _check_one_csv_task(tmp_path, "m", "review,rating\ngood,pos\n,neg\n")
    assert out.returncode == 2
    assert "train.csv row 2: column 'review' is empty or NaN" in out.stderr
