"""The data layer: canonical tables, digests, deterministic splits, and one clear error per bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cdco_core.data import load_task, read_task_file
from cdco_core.data.spec import DataConfig, TaskSpec
from cdco_core.errors import DataError


def _spec(tmp_path: Path, **kw) -> TaskSpec:
    base = {"name": "t", "kind": "ID", "type": "classification", "text": ["review"], "label": "rating"}
    base.update(kw)
    if "files" not in base and "source" not in base:
        base["files"] = {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "valid.csv")}
    return TaskSpec(**base)


def _write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


@pytest.fixture
def good_files(tmp_path):
    _write(tmp_path, "train.csv", "review,rating\ngood film,pos\nbad film,neg\nfine,pos\n")
    _write(tmp_path, "valid.csv", "review,rating\nawful,neg\ngreat,pos\n")
    return tmp_path


def test_canonical_columns_ids_and_labels(good_files, cdco_home):
    task = load_task(_spec(good_files), DataConfig())
    train = task.splits["train"]
    assert list(train.columns) == ["example_id", "text_a", "text_b", "label"]
    assert train["example_id"].tolist() == ["t:train:0", "t:train:1", "t:train:2"]
    assert task.label_names == ["neg", "pos"]  # inferred, sorted
    assert train["label"].tolist() == [1, 0, 1]
    assert task.eval_split == "validation"
    assert task.path is not None and task.path.is_relative_to(cdco_home)


def test_same_content_same_digest_and_cache_reused(good_files):
    a = load_task(_spec(good_files), DataConfig())
    b = load_task(_spec(good_files), DataConfig())
    assert a.digest == b.digest and a.path == b.path
    _write(good_files, "valid.csv", "review,rating\nawful,neg\ngreat,pos\nmeh,neg\n")
    c = load_task(_spec(good_files), DataConfig())
    assert c.digests["train"] == a.digests["train"]
    assert c.digests["validation"] != a.digests["validation"]


def test_corrupt_cache_is_rebuilt_not_trusted(good_files):
    a = load_task(_spec(good_files), DataConfig())
    (a.path / "train.parquet").write_bytes(b"not parquet")
    b = load_task(_spec(good_files), DataConfig())
    assert b.digest == a.digest
    assert pd.read_parquet(b.path / "train.parquet").shape[0] == 3


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'{"digests": 3}'],
                         ids=["empty", "garbage", "not-an-object", "wrong-shape"])
def test_damaged_meta_json_is_rebuilt(good_files, content):
    """Issue 17: an empty or garbage ``meta.json`` in the task cache is a miss (rebuilt), not a traceback."""
    a = load_task(_spec(good_files), DataConfig())
    (a.path / "meta.json").write_bytes(content)
    b = load_task(_spec(good_files), DataConfig())
    assert b.digest == a.digest and b.digests == a.digests and (b.path / "meta.json").read_bytes() != content


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"data file not found: .*train\.csv"):
        load_task(_spec(tmp_path), DataConfig())


def test_missing_column_names_it_and_lists_found(good_files):
    found = r"valid\.csv: column\(s\) \['review'\] not found; columns found: \['text', 'rating'\]"
    with pytest.raises(DataError, match=found):
        _write(good_files, "valid.csv", "text,rating\nawful,neg\n")
        load_task(_spec(good_files), DataConfig())


def test_empty_split(good_files):
    _write(good_files, "valid.csv", "review,rating\n")
    with pytest.raises(DataError, match=r"split 'validation' \(.*valid\.csv\) is empty"):
        load_task(_spec(good_files), DataConfig())


def test_label_outside_declared_set_names_file_and_row(good_files):
    _write(good_files, "valid.csv", "review,rating\nawful,neg\ngreat,meh\n")
    with pytest.raises(DataError, match=r"valid\.csv row 2: label 'meh' is not in the label set \['neg', 'pos'\]"):
        load_task(_spec(good_files, label_names=["neg", "pos"]), DataConfig())


def test_label_unseen_in_train_when_inferred(good_files):
    _write(good_files, "valid.csv", "review,rating\nawful,neutral\n")
    with pytest.raises(DataError, match=r"valid\.csv row 1: label 'neutral' is not in the label set"):
        load_task(_spec(good_files), DataConfig())


@pytest.mark.parametrize("cell", ['""', "   "])
def test_empty_text_names_file_and_row(good_files, cell):
    _write(good_files, "train.csv", f"review,rating\ngood,pos\n{cell},neg\n")
    with pytest.raises(DataError, match=r"train\.csv row 2: column 'review' is empty or NaN"):
        load_task(_spec(good_files), DataConfig())


def test_nan_text_in_parquet(tmp_path):
    pd.DataFrame({"review": ["ok", None], "rating": ["pos", "neg"]}).to_parquet(tmp_path / "train.parquet")
    spec = _spec(tmp_path, files={"train": str(tmp_path / "train.parquet")})
    with pytest.raises(DataError, match=r"train\.parquet row 2: column 'review' is empty or NaN"):
        load_task(spec, DataConfig())


def test_undecodable_bytes_suggest_encoding(good_files):
    _write(good_files, "train.csv", "review,rating\ncaf\u00e9 cr\u00e8me,pos\nbad,neg\n", encoding="latin-1")
    hint = r"train\.csv: byte 0xe9 at offset 17 \(line 2\) is not valid utf-8; set the task's 'encoding:'"
    with pytest.raises(DataError, match=hint):
        load_task(_spec(good_files), DataConfig())
    task = load_task(_spec(good_files, encoding="latin-1"), DataConfig())
    assert task.splits["train"]["text_a"][0] == "caf\u00e9 cr\u00e8me"


def test_unknown_spec_field(tmp_path):
    f = tmp_path / "tasks.yaml"
    f.write_text("tasks:\n  - {name: a, kind: ID, type: classification, files: {train: x.csv}, colour: red}\n")
    with pytest.raises(DataError, match=r"tasks\.0\.colour: unknown key; allowed here: .*label"):
        read_task_file(f)


def test_bad_kind_in_spec(tmp_path):
    f = tmp_path / "tasks.yaml"
    f.write_text("tasks:\n  - {name: a, kind: INDOMAIN, type: classification, files: {train: x.csv}}\n")
    with pytest.raises(DataError, match=r"tasks\.0\.kind: Input should be 'ID', 'OOD' or 'KI'"):
        read_task_file(f)


def test_nothing_partial_written_on_error(good_files, cdco_home):
    _write(good_files, "valid.csv", "review,rating\nawful,neutral\n")
    with pytest.raises(DataError):
        load_task(_spec(good_files), DataConfig())
    cache = cdco_home / "cache" / "tasks"
    assert not cache.exists() or not any(cache.iterdir())


def test_relative_files_resolve_against_spec_file(good_files):
    f = good_files / "tasks.yaml"
    f.write_text(
        "tasks:\n  - name: rel\n    kind: OOD\n    type: classification\n"
        "    files: {train: train.csv, validation: valid.csv}\n    text: [review]\n    label: rating\n"
    )
    (spec,) = read_task_file(f)
    assert load_task(spec, DataConfig()).splits["train"].shape[0] == 3


def test_single_split_is_split_deterministically_and_recorded(tmp_path):
    rows = "\n".join(f"text {i},{'pos' if i % 2 else 'neg'}" for i in range(50))
    _write(tmp_path, "all.jsonl", "")
    _write(tmp_path, "all.csv", "review,rating\n" + rows + "\n")
    spec = _spec(tmp_path, files={"train": str(tmp_path / "all.csv")})
    a = load_task(spec, DataConfig(heldout_fraction=0.2))
    assert len(a.splits["train"]) == 40 and len(a.splits["validation"]) == 10
    assert a.split_record["validation"]["from"] == "train"
    assert not set(a.splits["train"]["example_id"]) & set(a.splits["validation"]["example_id"])
    b = load_task(spec, DataConfig(heldout_fraction=0.2, split_seed=1))
    assert set(b.splits["validation"]["example_id"]) != set(a.splits["validation"]["example_id"])


def test_pairs_regression_and_jsonl(tmp_path):
    _write(tmp_path, "tr.jsonl", '{"s1": "a", "s2": "b", "score": 1.5}\n{"s1": "c", "s2": "d", "score": "4"}\n')
    spec = TaskSpec(name="sts", kind="ID", type="regression", text=["s1", "s2"], label="score",
                    files={"train": str(tmp_path / "tr.jsonl"), "validation": str(tmp_path / "tr.jsonl")})
    task = load_task(spec, DataConfig())
    df = task.splits["train"]
    assert df["text_b"].tolist() == ["b", "d"] and df["label"].tolist() == [1.5, 4.0]
    assert task.label_names == []


def test_multiple_choice_answers_by_letter_text_or_index(tmp_path):
    _write(tmp_path, "mc.jsonl",
           '{"q": "2+2?", "opts": ["3", "4"], "a": "B"}\n{"q": "sky?", "opts": ["blue", "red"], "a": "blue"}\n'
           '{"q": "x?", "opts": ["y", "z"], "a": 1}\n')
    spec = TaskSpec(name="mc", kind="KI", type="multiple_choice", text=["q"], label="a", choices="opts",
                    files={"train": str(tmp_path / "mc.jsonl"), "validation": str(tmp_path / "mc.jsonl")})
    df = load_task(spec, DataConfig()).splits["train"]
    assert df["label"].tolist() == [1, 0, 1]
    assert df["choices"][0] == ["3", "4"]


def test_max_rows_caps_with_a_seeded_sample(tmp_path):
    rows = "\n".join(f"text {i},{'pos' if i % 2 else 'neg'}" for i in range(30))
    _write(tmp_path, "train.csv", "review,rating\n" + rows + "\n")
    _write(tmp_path, "valid.csv", "review,rating\n" + rows + "\n")
    task = load_task(_spec(tmp_path), DataConfig(max_rows={"train": 10}))
    assert len(task.splits["train"]) == 10 and len(task.splits["validation"]) == 30
    again = load_task(_spec(tmp_path), DataConfig(max_rows={"train": 10}))
    assert again.splits["train"]["example_id"].tolist() == task.splits["train"]["example_id"].tolist()
