"""The cached stage pipeline: schedule validation, content-addressed train steps that chain, load_trained."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cdco_core.cache import Record
from cdco_core.config import StageConfig, check_stage_groups
from cdco_core.errors import ConfigError
from cdco_core.plan import build_plan
from cdco_core.profile import load_profile
from cdco_core.runner import run_plan
from cdco_core.steps import get_step
from cdco_core.steps.train import load_trained

GROUPS = {"lower", "upper", "all"}


def test_unknown_group_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train.stages.1.groups \(\w+\): unknown adapter group\(s\) \['middle'\]"):
        load_profile("smoke", ["train.stages.1.groups=[middle]"])
    st = StageConfig(name="x", groups=["middle"], losses={"task": 1.0}, steps=1, lr=1e-3)
    with pytest.raises(ConfigError, match=r"train.stages.0.groups \(x\): unknown adapter group"):
        check_stage_groups([st], GROUPS)
    with pytest.raises(ConfigError, match=r"cdco: stages.0.groups \(x\): unknown adapter group"):
        check_stage_groups([st], GROUPS, where="cdco: stages")


def test_empty_stage_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train.stages.0.groups"):
        load_profile("smoke", ["train.stages.0.groups=[]"])
    with pytest.raises(ConfigError, match=r"train.stages.0.steps"):
        load_profile("smoke", ["train.stages.0.steps=0"])
    with pytest.raises(ConfigError, match="no stage"):
        check_stage_groups([], GROUPS)
    with pytest.raises(ValidationError, match="groups"):  # a stage a method builds is validated as well
        StageConfig(name="e", groups=[], losses={"task": 1.0}, steps=1, lr=1e-3)


def test_negative_weight_is_a_config_error():
    with pytest.raises(ConfigError, match=r"loss weights must be >= 0"):
        load_profile("smoke", ["train.stages.1.losses.euclidean=-0.5"])
    with pytest.raises(ValidationError, match=r"loss weights must be >= 0"):
        StageConfig(name="n", groups=["all"], losses={"task": 1.0, "euclidean": -1.0}, steps=1, lr=1e-3)


def _stage_keys(cfg, method: str, seed: int) -> list[str]:
    """The train nodes' keys in order, each stage's input digest standing for the previous stage's output (a
    stage's output is named by its key, so its digest follows it)."""
    plan = build_plan(cfg, [method], [seed])
    keys: dict[str, str] = {}
    for node in plan.of_step("train"):
        inputs = {i: Record("x", i, "k", "/nowhere", {}, digest=keys.get(i, f"data-{i}")) for i in node.inputs}
        keys[node.id] = get_step("train").key(plan.config_for(node), node, inputs)
    return list(keys.values())


def test_stage_keys_chain(smoke_cfg):
    """Changing stage 1 changes keys from stage 1 on; stage 0's cached output stays valid."""
    a = _stage_keys(smoke_cfg, "cdco_strict", 0)
    b = _stage_keys(load_profile("smoke", ["train.stages.1.lr=1e-3"]), "cdco_strict", 0)
    c = _stage_keys(smoke_cfg, "cdco_strict", 1)
    assert len(a) == 4
    assert a[0] == b[0] and all(x != y for x, y in zip(a[1:], b[1:], strict=True))
    assert not set(a) & set(c)  # another seed: nothing shared


def test_train_is_cached_and_loads_for_evaluation(cdco_home):
    import torch

    from cdco_core.data import open_task

    torch.set_num_threads(1)
    cfg = load_profile("smoke", ["train.stages.0.steps=3", "train.stages.1.steps=2", "train.stages.2.steps=2",
                                 "train.stages.3.steps=1"])
    plan = build_plan(cfg, ["lora_single"], [0])
    last = plan.last_stage("lora_single", 0).id
    first = run_plan(plan, targets=[last])
    assert first[last].outputs["train"]["steps"] == 8 and not first[last].cached
    assert {"weights.safetensors", "meta.json"} <= set(first[last].files)
    again = run_plan(build_plan(cfg, ["lora_single"], [0]), targets=[last])
    assert again[last].cached and again[last].digest == first[last].digest
    assert again[last].dir.startswith(str(cdco_home / "steps" / "train" / "lora_single"))

    tasks = [open_task(r) for n, r in again.items() if n.startswith("prepare[") and r.outputs["kind"] == "ID"]
    model, tok = load_trained(cfg, "lora_single", 0, again[last], tasks)
    enc = tok(["a fine film", "free prize now"], padding=True, return_tensors="pt")
    pooled = model.encode(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], task_ids=None)
    assert pooled.shape == (2, 32) and not model.training
    assert model.default_adapter in model.task_names


def test_the_staged_decomposition_runs_and_carries_adam_state_between_its_stages(cdco_home):
    """cdco_task_only (CDCO's four stages, task loss only, no negatives) with train.carry_optimizer: every stage
    publishes its AdamW state, and each later stage's parameters continue the earlier stages' step counts."""
    import json

    from safetensors.torch import load_file

    cfg = load_profile("smoke", ["train.carry_optimizer=true"])
    plan = build_plan(cfg, ["cdco_task_only"], [0])
    trains = [n.id for n in plan.of_step("train")]
    assert not plan.of_step("negatives") and len(trains) == 4
    done = run_plan(plan, targets=[trains[-1]])
    steps = [s.steps for s in cfg.train.stages]
    for nid in trains:
        assert "optimizer.safetensors" in done[nid].files  # hashed and verified with the stage's other files
        meta = json.loads(done[nid].path("meta.json").read_text())
        assert set(meta["stage"]["losses"]) == {"task"}
    state = load_file(str(done[trains[-1]].path("optimizer.safetensors")))
    adapters = {k: float(v) for k, v in state.items() if k.startswith("step/") and ".lora_" in k}
    lower = {v for k, v in adapters.items() if ".layer.0." in k}
    upper = {v for k, v in adapters.items() if ".layer.1." in k}
    # lower adapters: warm-up, Euclidean (lower) and consolidation; upper: warm-up, Poincaré (upper), consolidation
    assert lower == {steps[0] + steps[1] + steps[3]} and upper == {steps[0] + steps[2] + steps[3]}
