"""The dev split (data.dev_fraction), per-task held-out sizes, and the task-role fields of TaskSpec."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from cdco_core.data import load_task
from cdco_core.data.canonical import DEV_SPLIT, spec_key
from cdco_core.data.spec import DataConfig, TaskSpec
from cdco_core.errors import DataError


def _csv(path: Path, n: int, start: int = 0) -> Path:
    pd.DataFrame({"review": [f"text {i}" for i in range(start, start + n)],
                  "rating": ["pos" if i % 2 else "neg" for i in range(start, start + n)]}).to_csv(path, index=False)
    return path


def _spec(tmp_path: Path, kind: str = "ID", **kw) -> TaskSpec:
    files = kw.pop("files", {"train": str(_csv(tmp_path / "train.csv", 60)),
                             "validation": str(_csv(tmp_path / "valid.csv", 20, start=1000))})
    return TaskSpec(name="t", kind=kind, type="classification", text=["review"], label="rating", files=files, **kw)


def _ids(df: pd.DataFrame) -> set[str]:
    return set(df["example_id"])


def test_dev_split_is_a_seeded_tenth_of_the_capped_train_split_and_recorded(tmp_path):
    data = DataConfig(max_rows={"train": 50}, dev_fraction=0.1)
    task = load_task(_spec(tmp_path), data)
    capped = load_task(_spec(tmp_path), DataConfig(max_rows={"train": 50})).splits["train"]
    train, dev, valid = task.splits["train"], task.splits[DEV_SPLIT], task.splits["validation"]
    assert len(dev) == 5 and len(train) == 45
    assert not _ids(dev) & _ids(train)
    assert _ids(dev) | _ids(train) == _ids(capped)  # carved from the capped split, nothing lost or added
    assert not _ids(dev) & _ids(valid)  # never meets the reported split
    meta = json.loads((task.path / "meta.json").read_text())
    assert meta["split_record"][DEV_SPLIT]["rows"] == 5 and "seed=0" in meta["split_record"][DEV_SPLIT]["method"]
    assert meta["digests"][DEV_SPLIT] == task.digests[DEV_SPLIT]
    # seeded: the same seed gives the same rows, another seed other rows
    again = load_task(_spec(tmp_path), data)
    assert again.splits[DEV_SPLIT]["example_id"].tolist() == dev["example_id"].tolist()
    other = load_task(_spec(tmp_path), DataConfig(max_rows={"train": 50}, dev_fraction=0.1, split_seed=3))
    assert _ids(other.splits[DEV_SPLIT]) != _ids(dev)


def test_dev_split_of_a_task_whose_train_split_was_carved_from_its_only_split(tmp_path):
    files = {"validation": str(_csv(tmp_path / "only.csv", 100))}
    task = load_task(_spec(tmp_path, files=files), DataConfig(dev_fraction=0.1))
    splits = task.splits
    assert len(splits["validation"]) == 20 and len(splits[DEV_SPLIT]) == 8 and len(splits["train"]) == 72
    assert not _ids(splits[DEV_SPLIT]) & _ids(splits["validation"])
    assert not _ids(splits[DEV_SPLIT]) & _ids(splits["train"])
    assert task.split_record["train"]["from"] == "validation" and "dev" in task.split_record["train"]


def test_only_id_tasks_get_a_dev_split_and_zero_changes_nothing(tmp_path):
    ood = load_task(_spec(tmp_path, kind="OOD"), DataConfig(dev_fraction=0.1))
    assert DEV_SPLIT not in ood.splits and len(ood.splits["train"]) == 60
    plain = load_task(_spec(tmp_path), DataConfig())
    zero = load_task(_spec(tmp_path), DataConfig(dev_fraction=0.0))
    assert DEV_SPLIT not in zero.splits and zero.path == plain.path  # same cache key as before the key existed
    ood_plain = load_task(_spec(tmp_path, kind="OOD"), DataConfig())
    assert ood.path == ood_plain.path  # dev_fraction does not touch tasks it does not apply to


def test_smoke_training_rows_exclude_the_dev_split(smoke_cfg):
    from cdco_core.data import load_tasks
    from cdco_core.training.batches import task_examples

    data = smoke_cfg.data.model_copy(update={"dev_fraction": 0.1})
    tasks = load_tasks(data)
    id_tasks = [t for t in tasks if t.spec.kind == "ID"]
    assert id_tasks
    for i, t in enumerate(tasks):
        if t.spec.kind != "ID":
            assert DEV_SPLIT not in t.splits
            continue
        dev = _ids(t.splits[DEV_SPLIT])
        assert len(dev) == int(0.1 * (len(dev) + len(t.splits["train"])))
        trained_on = {e.example_id for e in task_examples(t, i)}  # what the trainer's batch source reads
        assert trained_on and not trained_on & dev
        for split in set(t.splits) - {"train", DEV_SPLIT}:  # every reported split
            assert not _ids(t.splits[split]) & dev, (t.name, split)


def test_heldout_rows_fixes_the_scored_split_size(tmp_path):
    files = {"validation": str(_csv(tmp_path / "only.csv", 100))}
    task = load_task(_spec(tmp_path, files=files, heldout_rows=70), DataConfig())
    assert len(task.splits["validation"]) == 70 and len(task.splits["train"]) == 30
    assert "held-out rows=70" in task.split_record["validation"]["method"]
    with pytest.raises(DataError, match=r"split 'validation' has 100 row\(s\), too few to hold out 100.*heldout_rows"):
        load_task(_spec(tmp_path, files=files, heldout_rows=100), DataConfig())


def test_role_fields_do_not_enter_the_cache_key(tmp_path):
    base = _spec(tmp_path, kind="OOD")
    seen = _spec(tmp_path, kind="OOD", ood_protocol="seen", probe=False)
    assert spec_key(base) == spec_key(seen)
    assert "heldout_rows" not in spec_key(base)
    assert spec_key(_spec(tmp_path, heldout_rows=5))["heldout_rows"] == 5


@pytest.mark.parametrize(("kw", "match"), [
    ({"kind": "ID", "ood_protocol": "seen"}, "ood_protocol is for OOD tasks only"),
    ({"kind": "KI", "probe": False}, "probe: false is for pool-only OOD tasks"),
    ({"kind": "OOD", "ood_protocol": "unseen", "probe": False}, "unseen-domain task that is not probed"),
    ({"kind": "OOD", "ood_protocol": "sideways"}, "ood_protocol"),
    ({"kind": "OOD", "heldout_rows": 0}, "heldout_rows"),
])
def test_bad_role_fields_are_refused(tmp_path, kw, match):
    with pytest.raises(ValidationError, match=match):
        TaskSpec(name="t", type="classification", source="mirror:sst2", **kw)


def test_bad_dev_fraction_is_refused():
    with pytest.raises(ValidationError, match="dev_fraction"):
        DataConfig(dev_fraction=1.0)


def test_a_task_s_own_max_rows_replace_the_profile_s_caps(tmp_path):
    task = load_task(_spec(tmp_path, max_rows={"validation": 5}), DataConfig(max_rows={"train": 40, "validation": 15}))
    assert len(task.splits["train"]) == 40 and len(task.splits["validation"]) == 5
    assert spec_key(_spec(tmp_path, max_rows={"validation": 5}))["max_rows"] == {"validation": 5}
