"""Every shipped config validates; bad keys and values fail with the key's path and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdco_core.config import apply_overrides, load_config, parse_override
from cdco_core.data import read_task_file
from cdco_core.errors import ConfigError
from cdco_core.paths import CONF_DIR, cdco_home

PROFILES = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
TASK_FILES = sorted((CONF_DIR / "tasks").glob("*.yaml"))


def test_the_three_profiles_ship():
    assert {"smoke", "demo", "benchmark"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_shipped_profile_validates(profile):
    cfg = load_config(profile)
    assert cfg.profile == profile
    assert cfg.train.stages, "a profile must define at least one stage"


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.name)
def test_every_shipped_task_file_validates(path):
    specs = read_task_file(path)
    assert specs and len({s.name for s in specs}) == len(specs)


def test_unknown_key_names_its_path_and_allowed_keys():
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key; allowed here: .*batch_size"):
        load_config("smoke", ["train.learning_rate=0.1"])


def test_ill_typed_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.batch_size: .*\(got 'many'\)"):
        load_config("smoke", ["train.batch_size=many"])


def test_literal_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"negatives\.index: Input should be 'flat', 'ivf' or 'hnsw'"):
        load_config("smoke", ["negatives.index=kdtree"])


def test_override_sets_nested_and_list_items():
    cfg = load_config("smoke", ["train.stages.1.lr=3e-4", "adapters.r=2", "eval.seeds=[0,1]"])
    assert cfg.train.stages[1].lr == pytest.approx(3e-4)
    assert cfg.adapters.r == 2
    assert cfg.eval.seeds == [0, 1]


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="is not an index of a list of 4"):
        apply_overrides({"train": {"stages": [1, 2, 3, 4]}}, ["train.stages.9.lr=1"])


def test_unknown_profile_lists_available():
    with pytest.raises(ConfigError, match=r"unknown profile 'nope'; available: .*smoke"):
        load_config("nope")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.stages.1.groups=[middle]", r"unknown adapter group\(s\) \['middle'\]"),
        ("train.stages.0.losses={}", "a stage needs at least one loss"),
        ("train.stages.0.losses={task: -1.0}", "loss weights must be >= 0"),
        ("train.stages.0.steps=0", r"train\.stages\.0\.steps"),
        ("train.stages=[]", r"train\.stages"),
    ],
)
def test_schedule_validation(override, message):
    from cdco_core.profile import load_profile

    # load_config checks the structure; the stage groups are checked by load_profile (what every command calls)
    with pytest.raises(ConfigError, match=message):
        load_profile("smoke", [override])


def test_metric_must_fit_task_type(tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text(
        "tasks:\n  - {name: t, kind: ID, type: regression, files: {train: a.csv}, text: [x], label: y, metric: mcc}\n"
    )
    from cdco_core.errors import DataError

    with pytest.raises(DataError, match=r"metric 'mcc' does not fit type 'regression'; allowed: pearson, spearman"):
        read_task_file(spec)


def test_cdco_home_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CDCO_HOME", str(tmp_path / "state"))
    assert cdco_home() == (tmp_path / "state").resolve()
    monkeypatch.delenv("CDCO_HOME")
    assert cdco_home() == (Path(__file__).resolve().parents[2] / ".cdco").resolve()


def test_config_file_path_works(tmp_path):
    custom = tmp_path / "mine.yaml"
    custom.write_text((CONF_DIR / "smoke.yaml").read_text().replace("profile: smoke", "profile: mine"))
    assert load_config(str(custom)).profile == "mine"
