"""The benchmark-cpu profile on the real mirror: task roles, split sizes, the dev split, the mirror-absent error."""

from __future__ import annotations

import pytest

from cdco_core.data import load_task, load_tasks, task_specs
from cdco_core.data.canonical import DEV_SPLIT
from cdco_core.data.roles import check_task_roles, ood_protocol_of, pool_tasks, probed_tasks
from cdco_core.errors import ConfigError, DataError
from cdco_core.profile import load_profile as load_config

ID = ["sst2", "cola", "mrpc", "rte", "stsb", "qnli", "mnli"]
SEEN, UNSEEN = ["chemprot", "citation_intent"], ["amazon_multidomain", "ag_news", "scicite"]
KI = ["boolq_closed_book", "fever", "lama_trex", "commonsense_qa"]


@pytest.fixture(scope="module")
def cfg():
    return load_config("benchmark-cpu")


def test_roles_pool_probe_and_protocols(cfg):
    specs = task_specs(cfg.data)
    check_task_roles(cfg, specs)
    assert [s.name for s in specs if s.kind == "ID"] == ID
    assert pool_tasks(specs, cfg.negatives.strict_exclude) == ["chemprot", "citation_intent", "imdb",
                                                               "hyperpartisan_news"]
    assert probed_tasks(specs) == SEEN + UNSEEN + KI  # imdb and hyperpartisan_news feed the pool only
    assert ood_protocol_of(specs) == {**dict.fromkeys(SEEN, "seen"), **dict.fromkeys(UNSEEN, "unseen")}
    assert {s.name: s.metric_name for s in specs if s.kind == "ID"} == {
        "sst2": "accuracy", "cola": "mcc", "mrpc": "f1", "rte": "accuracy", "stsb": "pearson", "qnli": "accuracy",
        "mnli": "accuracy"}
    assert cfg.eval.probe_budgets == [256] and cfg.data.dev_fraction == 0.1


def test_contradicting_roles_are_refused_before_any_work(cfg):
    specs = task_specs(cfg.data)
    leaky = cfg.model_copy(update={"negatives": cfg.negatives.model_copy(update={"strict_exclude": ["ag_news"]})})
    with pytest.raises(ConfigError, match=r"'amazon_multidomain' is ood_protocol: unseen but not in "
                                          r"negatives.strict_exclude"):
        check_task_roles(leaky, specs)
    both = cfg.model_copy(update={"negatives": cfg.negatives.model_copy(
        update={"strict_exclude": [*UNSEEN, "imdb"]})})
    with pytest.raises(ConfigError, match=r"'imdb' is ood_protocol: seen but listed in negatives.strict_exclude"):
        check_task_roles(both, specs)
    zs = cfg.eval.zero_shot[0].model_copy(update={"source": "chemprot", "target": "sst9"})
    bad = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"zero_shot": [zs]})})
    with pytest.raises(ConfigError, match=r"(?s)zero_shot.0.target: unknown task 'sst9'.*'chemprot' is OOD"):
        check_task_roles(bad, specs)


def test_every_task_loads_with_the_promised_sizes(cfg):
    tasks = {t.name: t for t in load_tasks(cfg.data)}
    for name in ID:
        t = tasks[name]
        assert len(t.splits["train"]) == 1800 and len(t.splits[DEV_SPLIT]) == 200, name
        reported = set(t.splits[t.eval_split]["example_id"])
        assert not reported & set(t.splits[DEV_SPLIT]["example_id"]), name
        assert not reported & set(t.splits["train"]["example_id"]), name
    for name in KI[:3]:  # >= 1,000 held-out items where the mirror has them
        assert len(tasks[name].splits[tasks[name].eval_split]) == 1000, name
    csqa = tasks["commonsense_qa"]
    assert len(csqa.splits["train"]) == 256 and len(csqa.splits["validation"]) == 965
    for name in probed_tasks(task_specs(cfg.data)):  # the few-label budget fits every probed task
        assert len(tasks[name].splits["train"]) >= max(cfg.eval.probe_budgets), name
    for name in SEEN + UNSEEN:
        assert len(tasks[name].splits["train"]) <= 1000
        assert DEV_SPLIT not in tasks[name].splits
    # zero-shot label maps cover the targets' label names and land on the source's
    for zs in cfg.eval.zero_shot:
        assert set(zs.label_map) == set(tasks[zs.target].label_names)
        assert set(zs.label_map.values()) <= set(tasks[zs.source].label_names)


def test_absent_mirror_names_cdco_mirror(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("CDCO_MIRROR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"benchmark mirror not found at .*nowhere.*CDCO_MIRROR"):
        load_task(task_specs(cfg.data)[0], cfg.data)
