"""Each training seed draws its own ODMS sample (issue 13): the seeds' spread includes the ODMS variance."""

from __future__ import annotations

import pytest

from cdco_core.errors import ConfigError
from cdco_core.plan import build_plan
from cdco_core.profile import load_profile
from cdco_core.steps import get_step


def test_each_training_seed_gets_its_own_manifold_and_negatives(smoke_cfg):
    plan = build_plan(smoke_cfg, ["cdco", "lora_mtl"], [0, 1])
    assert {n.id for n in plan.of_step("manifold")} == {"manifold[seed0]", "manifold[seed1]"}
    for seed in (0, 1):
        stage = plan.nodes[f"train[cdco/seed{seed}/1-euclidean]"]
        assert f"negatives[seed{seed}]" in stage.inputs
        assert f"negatives[seed{1 - seed}]" not in stage.inputs
    sections = {s: (get_step("manifold").section(smoke_cfg, plan.nodes[f"manifold[seed{s}]"]),
                    get_step("negatives").section(smoke_cfg, plan.nodes[f"negatives[seed{s}]"])) for s in (0, 1)}
    assert sections[0][0] != sections[1][0] and sections[0][1] != sections[1][1]  # distinct draws, distinct keys
    assert sections[0][0]["umap_seed"] == smoke_cfg.manifold.seed and sections[0][1]["seed"] == smoke_cfg.seed
    # the ID anchors' embeddings do not depend on the seed: one node serves both
    assert len([n for n in plan.of_step("embed") if n.params["dataset"] == "rotten_tomatoes"]) == 1
    assert not any(n.step in ("manifold", "negatives", "embed") for n in plan.nodes.values()
                   if n.method == "lora_mtl")  # a method without ODMS negatives adds none


def test_a_capped_pool_is_sampled_per_seed(smoke_cfg):
    cfg = smoke_cfg.model_copy(update={"embed": smoke_cfg.embed.model_copy(update={"pool_max_rows": 10})})
    plan = build_plan(cfg, ["cdco"], [0, 2])
    pools = [n for n in plan.of_step("embed") if n.params["role"] == "pool"]
    assert sorted(n.id for n in pools) == ["embed[imdb/seed0]", "embed[imdb/seed2]"]
    assert get_step("embed").section(cfg, pools[0]) != get_step("embed").section(cfg, pools[1])


def test_train_seed_is_refused_with_its_path():
    # it used to be accepted, entered the cache key and was never read: the seeds are eval.seeds / --seeds
    with pytest.raises(ConfigError, match=r"train\.seed"):
        load_profile("smoke", ["train.seed=3"])
