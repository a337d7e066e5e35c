"""`cdco data check` applies every check `cdco run` applies, and bad input is one line with exit code 2
(issue 17: it used to exit 0 for duplicate names, a one-class train split and `tasks: []`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdco_core.errors import InputError
from cdco_core.io import check_home_writable

ROOT = Path(__file__).resolve().parents[2]
TRAIN = "review,rating\ngood,pos\nbad,neg\nfine,pos\nawful,neg\nok,pos\n"
TASK = ("{{name: {name}, kind: ID, type: classification, files: {{train: train.csv}}, text: [review], "
        "label: rating{extra}}}")


def _check(tmp_path: Path, spec: str, train: str = TRAIN, home: Path | None = None) -> subprocess.CompletedProcess:
    (tmp_path / "train.csv").write_text(train)
    (tmp_path / "tasks.yaml").write_text(spec)
    env = {**os.environ, "CDCO_HOME": str(home or tmp_path / "h")}
    return subprocess.run([sys.executable, "-m", "cli.main", "data", "check", "--tasks",
                           str(tmp_path / "tasks.yaml")], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)


def _one_line_exit_2(out: subprocess.CompletedProcess, message: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def _task(name: str = "a", extra: str = "") -> str:
    return TASK.format(name=name, extra=extra)


@pytest.mark.parametrize(
    ("spec", "train", "message"),
    [
        (f"tasks:\n  - {_task('a')}\n  - {_task('a')}\n", TRAIN, "task names must be unique; repeated: ['a']"),
        ("tasks: []\n", TRAIN, "no tasks configured"),
        (f"tasks:\n  - {_task()}\n", "review,rating\ngood,pos\nfine,pos\nok,pos\n",
         "task 'a': a classification task needs at least two labels; got ['pos']"),
        (f"tasks:\n  - {_task(extra=', label_names: [neg, pos]')}\n", "review,rating\ngood,pos\nfine,pos\nok,pos\n",
         "task 'a': the train split has one class ('pos')"),
        (f"tasks:\n  - {_task(extra=', encoding: utf-9')}\n", TRAIN, "encoding 'utf-9' is not a known text encoding"),
        (f"tasks:\n  - {_task(extra=', eval_split: nosuch')}\n", TRAIN, "eval_split 'nosuch' is not a held-out split"),
    ],
    ids=["duplicate-names", "no-tasks", "one-label", "one-class-train", "unknown-encoding", "bad-eval-split"],
)
def test_data_check_refuses_what_run_refuses(tmp_path, spec, train, message):
    out = _check(tmp_path, spec, train)
    if "\n" in out.stderr.strip():  # a spec validation error lists its key path on a second line
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    else:
        _one_line_exit_2(out, message)


def test_run_refuses_bad_data_in_one_line_before_the_flow(tmp_path):
    """`cdco run` used to find a one-class task inside the flow, after starting Prefect's temporary server, and
    printed 80 lines (two Prefect tracebacks) before the message."""
    import yaml

    from cdco_core.paths import CONF_DIR

    (tmp_path / "train.csv").write_text("review,rating\ngood,pos\nfine,pos\nok,pos\n")
    raw = yaml.safe_load((CONF_DIR / "smoke.yaml").read_text(encoding="utf-8"))
    raw["profile"] = "onelabel"
    raw["data"]["tasks"] = [yaml.safe_load(_task()) | {"files": {"train": str(tmp_path / "train.csv")}}]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "cli.main", "run", "-p", str(tmp_path / "p.yaml")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "CDCO_HOME": str(tmp_path / "h")})
    _one_line_exit_2(out, "task 'a': a classification task needs at least two labels; got ['pos']")
    assert out.stdout == ""  # no flow ran: it would print Prefect's log lines and the result


def test_run_refuses_what_the_plan_refuses_in_one_line_before_the_flow(tmp_path):
    # every OOD task excluded from the pool: CDCO's contrastive stages have no negatives to draw
    out = subprocess.run([sys.executable, "-m", "cli.main", "run", "-p", "smoke", "--set",
                          "negatives.strict_exclude=[imdb]"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "CDCO_HOME": str(tmp_path / "h")})
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1 and "pool" in out.stderr, out.stderr[-2000:]
    assert out.stdout == ""  # no flow ran


def test_non_utf8_spec_yaml(tmp_path):
    (tmp_path / "train.csv").write_text(TRAIN)
    (tmp_path / "tasks.yaml").write_bytes(f"# caf\xe9\ntasks:\n  - {_task()}\n".encode("latin-1"))
    out = subprocess.run([sys.executable, "-m", "cli.main", "data", "check", "--tasks",
                          str(tmp_path / "tasks.yaml")], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "CDCO_HOME": str(tmp_path / "h")}, timeout=120)
    _one_line_exit_2(out, "tasks.yaml is not UTF-8 text: byte 0xe9 at offset 5 (line 1)")


def test_jsonl_row_that_is_not_an_object(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"review": "a", "rating": "pos"}\n"just a string"\n')
    spec = f"tasks:\n  - {_task()}\n".replace("train.csv", "train.jsonl")
    _one_line_exit_2(_check(tmp_path, spec), "train.jsonl line 2: a JSON object")


def test_dropped_rows_are_printed(tmp_path):
    train = TRAIN + ",neg\n  ,pos\nnice,\n"
    out = _check(tmp_path, f"tasks:\n  - {_task(extra=', on_invalid_rows: drop')}\n", train)
    assert out.returncode == 0, out.stderr
    assert "train       dropped 3 invalid row(s): empty_text=2, empty_label=1  (on_invalid_rows: drop)" in out.stdout
    assert "train.csv: dropped 3 invalid row(s) of 8" in out.stderr  # the warning names the file
    refused = _check(tmp_path, f"tasks:\n  - {_task()}\n", train)
    _one_line_exit_2(refused, "set 'on_invalid_rows: drop' on task 'a'")


@pytest.fixture
def unwritable_home(tmp_path):
    """A real folder this process cannot create files in: a 0555 folder, or (root ignores modes) a path in
    sysfs, where nobody may create anything."""
    if os.geteuid() == 0:
        yield Path("/sys/cdco-test-home")
        return
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o555)
    yield home
    home.chmod(0o755)


def test_unwritable_home_is_one_line(tmp_path, unwritable_home):
    out = _check(tmp_path, f"tasks:\n  - {_task()}\n", home=unwritable_home)
    _one_line_exit_2(out, f"CDCO_HOME {unwritable_home} is not writable")


def test_full_home_is_refused(tmp_path, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=5 << 20))
    with pytest.raises(InputError, match=r"has only 5 MiB free \(at least 256 MiB needed\)"):
        check_home_writable(tmp_path / "h")
    monkeypatch.setattr(shutil, "disk_usage", real)
    assert check_home_writable(tmp_path / "h") == tmp_path / "h"
    assert list((tmp_path / "h").iterdir()) == []  # the probe is gone
