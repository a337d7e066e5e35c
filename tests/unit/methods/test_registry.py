"""Method registry: names, clear errors, what each baseline/ablation changes."""

from __future__ import annotations

import pytest

from cdco_core.errors import InputError
from cdco_core.methods import get_method, list_methods

CONTRACT = {"cdco", "lora_mtl", "bottleneck_mtl", "lora_single", "frozen", "full_ft", "ca_mtl", "ego_plm",
            "cdco_no_poincare", "cdco_no_euclidean", "cdco_random_negatives", "cdco_strict"}
OURS = sorted(CONTRACT - {"ca_mtl", "ego_plm"})


def test_every_contract_name_is_registered():
    assert CONTRACT <= set(list_methods())


def test_unknown_method_lists_the_names():
    with pytest.raises(InputError, match=r"unknown method 'cdc0'; available: .*cdco, cdco_flat, cdco_no_euclidean"):
        get_method("cdc0")


@pytest.mark.parametrize("name", OURS)
def test_methods_build_with_their_registry_name(name):
    m = get_method(name)
    assert m.name == name and m.description


def test_ablations_change_one_thing(smoke_cfg):
    base = get_method("cdco")
    steps = [s.steps for s in base.stages(smoke_cfg)]
    no_p = get_method("cdco_no_poincare").stages(smoke_cfg)
    assert [s.steps for s in no_p] == steps and [s.groups for s in no_p] == [s.groups for s in smoke_cfg.train.stages]
    assert all("poincare" not in s.losses for s in no_p)
    assert no_p[2].losses == {"task": 1.0} and no_p[3].space == "euclidean"
    no_e = get_method("cdco_no_euclidean").stages(smoke_cfg)
    assert all("euclidean" not in s.losses for s in no_e) and no_e[2].losses["poincare"] == 0.5

    rnd = get_method("cdco_random_negatives").configure(smoke_cfg)
    assert rnd.negatives.mode == "random" and smoke_cfg.negatives.mode == "manifold"
    changed = rnd.model_dump(mode="json")
    changed["negatives"]["mode"] = "manifold"
    assert changed == smoke_cfg.model_dump(mode="json")  # negatives.mode and nothing else

    strict = get_method("cdco_strict")
    assert strict.configure(smoke_cfg).negatives.strict_exclude == ["imdb"]  # every configured OOD task
    assert not strict.uses_negatives  # the pool is empty: in-batch negatives only


def test_baselines_take_cdco_step_budget(smoke_cfg):
    total = sum(s.steps for s in smoke_cfg.train.stages)
    for name in ("lora_mtl", "bottleneck_mtl", "lora_single", "frozen", "full_ft"):
        (stage,) = get_method(name).stages(smoke_cfg)
        assert stage.steps == total and stage.losses == {"task": 1.0} and stage.groups == ["all"]
        # a linear probe learns at the evaluation's head rate; adapters at the schedule's first-stage rate
        want = smoke_cfg.eval.head_lr if name == "frozen" else smoke_cfg.train.stages[0].lr
        assert stage.lr == want
    assert smoke_cfg.eval.head_lr != smoke_cfg.train.stages[0].lr  # else the line above proves nothing


def test_frozen_and_full_ft_train_what_they_say(smoke_cfg):
    import torch

    from cdco_core.data import load_tasks

    torch.set_num_threads(1)
    tasks = [t for t in load_tasks(smoke_cfg.data) if t.spec.kind == "ID"]
    frozen, _ = get_method("frozen").build_model(smoke_cfg, tasks)
    names = frozen.set_trainable(["all"], train_heads=True)
    assert names and all(n.startswith(("heads.", "euclidean_proj.", "poincare_proj.")) for n in names)

    full = get_method("full_ft")
    model, _ = full.build_model(smoke_cfg, tasks)
    names = model.set_trainable(["all"], train_heads=True)
    assert "encoder.embeddings.word_embeddings.weight" in names
    assert "encoder.encoder.layer.1.attention.self.query.weight" in names
    params = [p for p in model.parameters() if p.requires_grad]
    groups = full.param_groups(model, params, get_method("full_ft").stages(smoke_cfg)[0])
    assert [g["lr"] for g in groups] == pytest.approx([5e-3 * 0.05, 5e-3])
    assert sum(len(g["params"]) for g in groups) == len(params)
