"""A training stage that several registrations train identically is one node of the plan
(:mod:`cdco_core.methods.sharing`).

Two parts: the plan's sharing rule (which stages are one node, on the default demo schedule), and the guard that
makes a declaration safe: every stage the plan shares, trained again under each registration's own name, comes
out with the same bytes. A CDCO variant that starts to act through anything but ``configure``, ``stages`` or
``uses_negatives`` fails the guard.
"""

from __future__ import annotations

from cdco_core.methods import sharing
from cdco_core.plan import build_plan
from cdco_core.profile import load_profile
from cdco_core.runner import run_plan

CDCO = ["cdco", "cdco_no_poincare", "cdco_no_euclidean", "cdco_random_negatives", "cdco_strict"]


def test_the_demo_plan_trains_each_shared_stage_once():
    cfg = load_profile("demo")  # the default schedule: warm-up, Euclidean, upper, consolidate (no Poincaré term)
    plan = build_plan(cfg, [*CDCO, "cdco_r", "cdco_task_only", "lora_mtl"], [0, 1], report=True)
    chain = plan.chains
    for seed in (0, 1):
        # no stage uses the Poincaré term: the ablation that removes it is cdco, stage for stage
        assert chain[("cdco_no_poincare", seed)] == chain[("cdco", seed)]
        assert plan.last_stage("cdco_no_poincare", seed).id == f"train[cdco/seed{seed}/3-consolidate]"
        # every variant starts with cdco's task-only warm-up; after it, each trains its own stages
        for m in ("cdco_no_euclidean", "cdco_random_negatives", "cdco_strict"):
            assert chain[(m, seed)][0] == chain[("cdco", seed)][0] == f"train[cdco/seed{seed}/0-warmup]"
            assert not set(chain[(m, seed)][1:]) & set(chain[("cdco", seed)])
        # other settings (cdco_r, cdco_task_only) or another method (no identity): nothing shared
        for m in ("cdco_r", "cdco_task_only", "lora_mtl"):
            assert all(i.startswith(f"train[{m}/") for i in chain[(m, seed)])
    assert chain[("cdco", 0)][0] != chain[("cdco", 1)][0]  # a seed is never shared
    trains = plan.of_step("train")
    assert len(trains) == len({n for c in chain.values() for n in c})  # every node is in a chain, once
    assert len(trains) == 2 * (4 + 3 * 3 + 4 + 4 + 1)  # 8 registrations' 44 stages a seed, 22 nodes
    # each evaluation still scores its own method, reading its chain's last stage
    assert plan.nodes["evaluate[cdco_no_poincare/seed0]"].inputs[0] == "train[cdco/seed0/3-consolidate]"
    runs = {(m, s): ids for m, s, ids in plan.nodes["report"].params["runs"]}
    assert runs == chain


def test_two_evaluations_of_one_model_run_one_after_the_other():
    from cdco_core.runner import reads_a_running_model

    plan = build_plan(load_profile("demo"), ["cdco", "cdco_no_poincare", "cdco_no_euclidean"], [0, 1])
    twin, other = plan.nodes["evaluate[cdco_no_poincare/seed0]"], plan.nodes["evaluate[cdco_no_euclidean/seed0]"]
    assert reads_a_running_model(plan, twin, ["evaluate[cdco/seed0]"])  # the same last stage: wait, then read
    assert not reads_a_running_model(plan, twin, ["evaluate[cdco/seed1]", "train[cdco/seed1/1-euclidean]"])
    assert not reads_a_running_model(plan, other, ["evaluate[cdco/seed0]"])
    assert not reads_a_running_model(plan, plan.nodes["train[cdco/seed1/0-warmup]"], ["evaluate[cdco/seed0]"])


def test_a_setting_of_its_own_keeps_a_variant_apart():
    cfg = load_profile("demo", ["method_settings.cdco_no_poincare.centre=false"])
    plan = build_plan(cfg, ["cdco", "cdco_no_poincare"], [0])
    assert all(i.startswith("train[cdco_no_poincare/") for i in plan.chains[("cdco_no_poincare", 0)])


def test_every_shared_stage_trains_the_same_bytes_under_each_name(cdco_home, monkeypatch):
    # the smoke model, a task-only warm-up then a Euclidean stage, and no hard negatives (in-batch only: no ODMS
    # work): cdco_no_poincare, cdco_random_negatives and cdco_strict then share both of cdco's stages,
    # cdco_no_euclidean the warm-up only
    stages = ("[{name: warmup, groups: [all], losses: {task: 1.0}, steps: 2, lr: 5.0e-3}, {name: euclidean, "
              "groups: [lower], losses: {task: 1.0, euclidean: 0.5}, space: euclidean, steps: 2, lr: 5.0e-3}]")
    cfg = load_profile("smoke", [f"train.stages={stages}", "train.n_hard_negatives=0", "data.max_rows.train=32",
                                 "data.max_rows.validation=16"])
    shared = build_plan(cfg, CDCO, [0])
    assert len(shared.of_step("train")) == 3
    done = run_plan(shared, targets=[n.id for n in shared.of_step("train")])
    weights = {i: r.outputs["weights_sha256"] for i, r in done.items() if i.startswith("train[")}

    monkeypatch.setattr(sharing, "stage_family", lambda name: None)  # each name trains its own stages
    apart = build_plan(cfg, CDCO, [0])
    assert len(apart.of_step("train")) == 2 * len(CDCO)
    again = run_plan(apart, targets=[n.id for n in apart.of_step("train")])
    for (method, seed), ids in apart.chains.items():
        assert [n.startswith(f"train[{method}/") for n in ids] == [True, True]
        for own, common in zip(ids, shared.chains[(method, seed)], strict=True):
            assert again[own].cached is False or method == "cdco"
            assert again[own].outputs["weights_sha256"] == weights[common], (method, own, common)
    assert weights["train[cdco/seed0/1-euclidean]"] != weights["train[cdco_no_euclidean/seed0/1-euclidean]"]


def test_registrations_without_a_declaration_never_share():
    from cdco_core.methods import METHODS

    others = [m for m in METHODS.names() if sharing.stage_family(m) is None]
    assert {"lora_mtl", "lora_single", "ca_mtl", "ego_plm", "frozen", "full_ft", "cdco_r", "cdco_task_only"} \
        <= set(others)
    plan = build_plan(load_profile("smoke"), others, [0])
    for (method, _), ids in plan.chains.items():
        assert all(i.startswith(f"train[{method}/") for i in ids), (method, ids)
