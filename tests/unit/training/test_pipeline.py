"""The cached stage pipeline: schedule validation, content-addressed stages, load_trained."""

from __future__ import annotations

import pytest

from cdco_core.config import StageConfig, load_config
from cdco_core.errors import ConfigError
from cdco_core.training.pipeline import load_trained, plan_training, train_all_stages, validate_stages

GROUPS = {"lower", "upper", "all"}


def test_unknown_group_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train.stages.1.groups: unknown adapter group\(s\) \['middle'\]"):
        load_config("smoke", ["train.stages.1.groups=[middle]"])
    st = StageConfig(name="x", groups=["middle"], losses={"task": 1.0}, steps=1, lr=1e-3)
    with pytest.raises(ConfigError, match=r"train.stages.0 \(x\).groups: unknown adapter group"):
        validate_stages([st], GROUPS)


def test_empty_stage_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train.stages.0.groups"):
        load_config("smoke", ["train.stages.0.groups=[]"])
    with pytest.raises(ConfigError, match=r"train.stages.0.steps"):
        load_config("smoke", ["train.stages.0.steps=0"])
    with pytest.raises(ConfigError, match="no stage"):
        validate_stages([], GROUPS)
    empty = StageConfig.model_construct(name="e", groups=[], losses={"task": 1.0}, steps=1, lr=1e-3)
    with pytest.raises(ConfigError, match=r"\(e\).groups: empty"):
        validate_stages([empty], GROUPS)


def test_negative_weight_is_a_config_error():
    with pytest.raises(ConfigError, match=r"loss weights must be >= 0"):
        load_config("smoke", ["train.stages.1.losses.euclidean=-0.5"])
    bad = StageConfig.model_construct(name="n", groups=["all"], losses={"task": 1.0, "euclidean": -1.0}, steps=1,
                                      lr=1e-3)
    with pytest.raises(ConfigError, match=r"\(n\).losses: weights must be >= 0"):
        validate_stages([bad], GROUPS)


def test_stage_keys_chain(smoke_cfg):
    """Changing stage 1 changes keys from stage 1 on; stage 0's cached output stays valid."""
    a = plan_training(smoke_cfg, "cdco_strict", 0).keys
    b = plan_training(load_config("smoke", ["train.stages.1.lr=1e-3"]), "cdco_strict", 0).keys
    c = plan_training(smoke_cfg, "cdco_strict", 1).keys
    assert a[0] == b[0] and all(x != y for x, y in zip(a[1:], b[1:], strict=True))
    assert not set(a) & set(c)  # another seed: nothing shared


def test_train_is_cached_and_loads_for_evaluation(cdco_home):
    import torch

    torch.set_num_threads(1)
    cfg = load_config("smoke", ["train.stages.0.steps=3", "train.stages.1.steps=2", "train.stages.2.steps=2",
                                "train.stages.3.steps=1"])
    first = train_all_stages(cfg, "lora_single", 0)
    assert first["stages"][0]["train"]["steps"] == 8 and not first["stages"][0]["cached"]
    again = train_all_stages(cfg, "lora_single", 0)
    assert again["stages"][0]["cached"] and again["digest"] == first["digest"]
    assert again["checkpoint"].startswith(str(cdco_home / "runs" / "lora_single"))

    model, tok = load_trained(cfg, "lora_single", 0)
    enc = tok(["a fine film", "free prize now"], padding=True, return_tensors="pt")
    pooled = model.encode(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], task_ids=None)
    assert pooled.shape == (2, 32) and not model.training
    assert model.default_adapter in model.task_names
