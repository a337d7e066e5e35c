"""Every mirror dataset the benchmark profile names loads; the demo's package data loads offline."""

from __future__ import annotations

import pytest

from cdco_core.config import load_config
from cdco_core.data import load_task, task_specs
from cdco_core.data.spec import DataConfig
from cdco_core.errors import DataError, OfflineError

BENCHMARK = task_specs(load_config("benchmark").data)


@pytest.mark.parametrize("spec", BENCHMARK, ids=lambda s: s.name)
def test_every_benchmark_mirror_dataset_loads(spec):
    task = load_task(spec, DataConfig())
    assert "train" in task.splits and task.eval_split in task.splits
    for split, df in task.splits.items():
        assert len(df) > 0, split
        assert df["text_a"].str.len().min() > 0
        assert df["example_id"].is_unique
        if spec.type in {"classification", "pair_classification", "boolean_qa"}:
            assert df["label"].between(0, task.num_labels - 1).all()
        if spec.type == "multiple_choice":
            assert (df["label"] < df["choices"].map(len)).all()
    if spec.type == "pair_classification":
        assert (task.splits["train"]["text_b"] != "").all()


def test_mirror_datasets_without_train_are_split_and_recorded():
    fever = load_task(next(s for s in BENCHMARK if s.name == "fever"), DataConfig())
    assert fever.split_record["train"]["from"] == "validation"
    assert len(fever.splits["train"]) + len(fever.splits["validation"]) == 9999


def test_lama_becomes_candidate_ranking():
    lama = load_task(next(s for s in BENCHMARK if s.name == "lama_trex"), DataConfig())
    row = lama.splits["test"].iloc[0]
    assert len(row["choices"]) == 5 and "___" in row["text_a"]
    assert all("___" not in c for c in row["choices"])


def test_demo_package_tasks_load():
    cfg = load_config("demo")
    tasks = {s.name: load_task(s, cfg.data) for s in task_specs(cfg.data)}
    assert set(tasks) == {"rotten_tomatoes", "sms_spam", "imdb", "country_region", "country_capital"}
    assert tasks["rotten_tomatoes"].label_names == ["negative", "positive"]
    assert tasks["sms_spam"].label_names == ["ham", "spam"]
    assert {"Europe", "Asia", "Africa"} <= set(tasks["country_region"].label_names)
    capital = tasks["country_capital"].splits["train"]
    assert capital["choices"].map(len).eq(4).all()
    assert "<br />" not in " ".join(tasks["imdb"].splits["train"]["text_a"].head(50))


def test_unknown_mirror_and_package_names():
    from cdco_core.data.spec import TaskSpec

    with pytest.raises(DataError, match=r"mirror:nope is not in .*available: .*sst2"):
        load_task(TaskSpec(name="x", kind="ID", type="classification", source="mirror:nope"), DataConfig())
    with pytest.raises(DataError, match=r"package:nope is unknown; available: .*sms_spam"):
        load_task(TaskSpec(name="x", kind="ID", type="classification", source="package:nope"), DataConfig())


def test_hub_source_offline_is_a_clear_error(monkeypatch):
    from cdco_core.data.spec import TaskSpec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match=r"hf:glue/sst2 needs the Hugging Face hub, but this process is offline"):
        load_task(TaskSpec(name="x", kind="ID", type="classification", source="hf:glue/sst2"), DataConfig())
