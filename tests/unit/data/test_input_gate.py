"""Bad input that used to get past the gate (issue 17): split names, eval_split, encodings, JSONL rows that are
not objects, non-UTF-8 spec files, the checks `cdco run` applies, and `on_invalid_rows: drop`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from pydantic import ValidationError

from cdco_core.data import load_task, read_task_file
from cdco_core.data.checks import check_task_set, check_task_specs
from cdco_core.data.spec import DataConfig, TaskSpec
from cdco_core.errors import DataError, InputError


def _spec(tmp_path: Path, **kw) -> TaskSpec:
    base = {"name": "t", "kind": "ID", "type": "classification", "text": ["review"], "label": "rating",
            "files": {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "valid.csv")}}
    base.update(kw)
    return TaskSpec(**base)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "train.csv").write_text("review,rating\ngood film,pos\nbad film,neg\nfine,pos\nmeh,neg\n")
    (tmp_path / "valid.csv").write_text("review,rating\nawful,neg\ngreat,pos\n")
    return tmp_path


# ------------------------------------------------------------------------------------------ split names
def test_misspelt_split_key_is_refused_naming_it(files):
    with pytest.raises(ValidationError, match=r"'valdiation'.*allowed: train, validation, test"):
        _spec(files, files={"train": "train.csv", "valdiation": "valid.csv"})


def test_misspelt_split_key_in_a_spec_file(files):
    (files / "tasks.yaml").write_text(
        "tasks:\n  - {name: t, kind: ID, type: classification, text: [review], label: rating,\n"
        "     files: {train: train.csv, valdiation: valid.csv}}\n")
    with pytest.raises(DataError, match=r"tasks\.0: task 't': files: split 'valdiation' is not a split name"):
        read_task_file(files / "tasks.yaml")


def test_unknown_eval_split_is_refused(files):
    with pytest.raises(ValidationError, match=r"eval_split 'nosuch'.*allowed: validation, test"):
        _spec(files, eval_split="nosuch")


def test_eval_split_naming_a_split_the_files_lack_is_refused(files):
    # train + validation given, eval_split: test: today a "test" split is carved from train and the user's
    # validation file is ignored.
    with pytest.raises(DataError, match=r"task 't': eval_split 'test'.*found: train, validation"):
        load_task(_spec(files, eval_split="test"), DataConfig())


def test_eval_split_carved_from_a_lone_train_split_is_still_allowed(files):
    task = load_task(_spec(files, files={"train": str(files / "train.csv")}, eval_split="test"), DataConfig())
    assert task.eval_split == "test" and set(task.splits) == {"train", "test"}


# ------------------------------------------------------------------------------------------ encodings
def test_unknown_encoding_is_one_clear_error(files):
    with pytest.raises(ValidationError, match=r"encoding 'utf-9' is not a known text encoding"):
        _spec(files, encoding="utf-9")


def test_latin1_byte_reported_at_its_real_offset_and_line(tmp_path):
    head = "review,rating\n" + "".join(f"plain ascii row number {i:02d},pos\n" for i in range(6))
    body = head.encode() + b"caf\xe9 au lait,neg\n"
    bad = body.index(b"\xe9")
    assert bad > 150
    (tmp_path / "train.csv").write_bytes(body)
    (tmp_path / "valid.csv").write_text("review,rating\nx,pos\ny,neg\n")
    with pytest.raises(DataError, match=rf"byte 0xe9 at offset {bad} \(line 8\) is not valid utf-8"):
        load_task(_spec(tmp_path), DataConfig())


def test_jsonl_line_that_is_not_an_object(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"review": "a", "rating": "pos"}\n[1, 2]\n')
    spec = _spec(tmp_path, files={"train": str(tmp_path / "train.jsonl")})
    with pytest.raises(DataError, match=r"train\.jsonl line 2: a JSON object .* expected, got a list"):
        load_task(spec, DataConfig())


def test_spec_yaml_that_is_not_utf8(tmp_path):
    (tmp_path / "tasks.yaml").write_bytes("tasks:\n  - {name: caf\xe9}\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"tasks\.yaml is not UTF-8 text: byte 0xe9 at offset 21 \(line 2\)"):
        read_task_file(tmp_path / "tasks.yaml")


def test_config_yaml_that_is_not_utf8(tmp_path):
    from cdco_core.errors import ConfigError
    from cdco_core.profile import load_profile as load_config

    (tmp_path / "p.yaml").write_bytes("profile: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"p\.yaml is not UTF-8 text"):
        load_config(str(tmp_path / "p.yaml"))


# ------------------------------------------------------------------------------- the checks run applies
def test_empty_and_duplicate_task_sets(files):
    with pytest.raises(InputError, match="no tasks"):
        check_task_specs([])
    with pytest.raises(InputError, match=r"task names must be unique; repeated: \['t'\]"):
        check_task_specs([_spec(files), _spec(files)])


def test_one_class_train_split_is_refused(files):
    (files / "train.csv").write_text("review,rating\ngood film,pos\nfine,pos\n")
    task = load_task(_spec(files, label_names=["neg", "pos"]), DataConfig())
    with pytest.raises(InputError, match=r"task 't': the train split has one class \('pos'\)"):
        check_task_set([task])


def test_a_good_task_set_passes(files):
    check_task_set([load_task(_spec(files), DataConfig())])


# ---------------------------------------------------------------------------------- on_invalid_rows
BAD_TRAIN = "review,rating\ngood film,pos\n,neg\nbad film,neg\n   ,pos\nfine,\nokay,pos\nmeh,neg\n"


def test_refusal_names_the_option(files):
    (files / "train.csv").write_text(BAD_TRAIN)
    with pytest.raises(DataError, match=r"train\.csv row 2: column 'review' is empty.*on_invalid_rows: drop"):
        load_task(_spec(files), DataConfig())


def test_drop_counts_per_reason_records_and_warns(files):
    (files / "train.csv").write_text(BAD_TRAIN)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = load_task(_spec(files, on_invalid_rows="drop"), DataConfig())
    assert task.dropped == {"train": {"empty_text": 2, "empty_label": 1}}
    assert len(task.splits["train"]) == 4
    # ids keep the source row numbers, so they do not shift when a row is dropped
    assert task.splits["train"]["example_id"].tolist() == ["t:train:0", "t:train:2", "t:train:5", "t:train:6"]
    msgs = [str(w.message) for w in caught]
    assert any("train.csv: dropped 3 invalid row(s)" in m and "empty_text=2" in m for m in msgs), msgs
    meta = json.loads((task.path / "meta.json").read_text())
    assert meta["dropped"] == {"train": {"empty_text": 2, "empty_label": 1}}
    again = load_task(_spec(files, on_invalid_rows="drop"), DataConfig())  # from the cache
    assert again.dropped == task.dropped and again.path == task.path


def test_drop_and_error_are_cached_apart(files):
    a = load_task(_spec(files), DataConfig())
    b = load_task(_spec(files, on_invalid_rows="drop"), DataConfig())
    assert a.path != b.path and a.dropped == b.dropped == {}
