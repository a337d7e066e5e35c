"""The comparison harness end to end on the smoke profile: real training (cached), real evaluation.

Two methods that need no ODMS negatives (lora_mtl, frozen), one step per stage and a third of the smoke rows keep
this within the test budget (the manifold fit alone costs about a minute on 2 shared cores); the evaluation
protocol is the smoke profile's. ``cdco compare --profile smoke --methods cdco,lora_mtl --seeds 0,1`` runs the
same code with CDCO.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from cdco_core.errors import InputError
from cdco_core.plan import build_plan
from cdco_core.profile import load_profile
from cdco_core.runner import run_comparison, run_plan

METHODS = ["lora_mtl", "frozen"]
SEEDS = [0, 1]


@pytest.fixture
def short_smoke_cfg():
    """The smoke profile with one training step per stage and a third of its rows (evaluation settings unchanged)."""
    return load_profile("smoke", [f"train.stages.{i}.steps=1" for i in range(4)]
                       + ["data.max_rows.train=32", "data.max_rows.validation=16"])


def test_smoke_comparison_fills_every_cell_and_repeats_exactly(short_smoke_cfg, tmp_path, cdco_home):
    res = run_comparison(short_smoke_cfg, methods=METHODS, seeds=SEEDS, out_dir=tmp_path / "cmp")
    tasks = ["rotten_tomatoes", "sms_spam", "imdb", "country_region", "country_capital"]
    table = pd.DataFrame(res["table"]).set_index("method")
    assert list(table.index) == [*METHODS, "majority class (floor)"]
    floor = table.loc["majority class (floor)"]
    assert floor["rotten_tomatoes (accuracy)"] != "–" and floor["imdb (accuracy)"] != "–"  # the probe has one too
    assert floor["country_capital (accuracy)"] == "–"  # multiple choice: no class to repeat
    assert float(floor["sms_spam (macro_f1)"]) < 0.5  # always "ham": macro-F1 below one half
    table = table.drop(index="majority class (floor)")
    assert list(table.columns) == [
        "rotten_tomatoes (accuracy)", "sms_spam (macro_f1)", "imdb (accuracy)", "country_region (accuracy)",
        "country_capital (accuracy)", "ID", "OOD", "KI", "overall", "primary", "trainable params", "s/step"]
    scores = table.drop(columns=["trainable params", "s/step"])
    assert scores.map(lambda c: " ± " in c).all().all()  # every cell "mean ± sd" over the 2 seeds
    assert table["trainable params"].str.match(r"^\d+\.\d+[kM]$").all()

    long = pd.read_csv(res["csv"])
    assert list(long.columns) == ["method", "seed", "task", "kind", "metric", "value"]
    per_task = long[~long.task.isin(["average", "cost"])]
    assert set(per_task.task) == set(tasks)
    assert len(per_task) == len(METHODS) * len(SEEDS) * (3 + 3 + 3 + 3 + 1)  # every metric that fits
    scores_long = long[long.task != "cost"]
    assert scores_long.value.between(-1, 1).all() and long.value.notna().all()
    cost = long[long.task == "cost"].pivot_table(index="method", columns="metric", values="value")
    assert (cost.trainable_parameters["lora_mtl"] > cost.trainable_parameters["frozen"] > 0)  # adapters + heads
    assert (cost.seconds_per_step > 0).all()

    boot = pd.read_csv(tmp_path / "cmp" / "bootstrap.csv")
    assert set(boot.baseline) == {"lora_mtl"} and set(boot.reference) == {"frozen"}  # every method vs lora_mtl
    assert list(boot.scope) == [*tasks, "ID", "OOD", "KI", "overall", "primary"]
    assert boot.p_value.between(0, 1).all()
    md = open(res["md"]).read()
    assert "| lora_mtl |" in md and "| frozen |" in md and "## Paired bootstrap" in md
    assert [p.rsplit("/", 1)[-1] for p in res["plots"]] == ["kinds.png", "deltas.png"]
    # the share of training steps each ID task received, read from every stage's verified record
    shares = res["step_shares"]
    assert set(shares) == set(METHODS)
    for by_task in shares.values():
        assert set(by_task) <= {"rotten_tomatoes", "sms_spam"} and sum(by_task.values()) == pytest.approx(1, abs=1e-3)
    assert "## Training steps per task" in md
    assert res["same_weights"] == [] and "One model" not in md  # adapters + heads vs heads: two models

    # the same seed again, without the evaluation and feature caches (re-encode, refit the heads; the trained
    # weights come from the trainer's cache, whose determinism the trainer tests): the same numbers
    shutil.rmtree(cdco_home / "steps" / "evaluate")
    shutil.rmtree(cdco_home / "cache" / "features")
    plan = build_plan(short_smoke_cfg, ["lora_mtl"], [0])
    done = run_plan(plan, targets=["evaluate[lora_mtl/seed0]"])
    again = done["evaluate[lora_mtl/seed0]"]
    assert again.cached is False and all(r.cached for n, r in done.items() if n.startswith("train["))
    first = long[(long.method == "lora_mtl") & (long.seed == 0) & ~long.task.isin(["average", "cost"])]
    for row in first.itertuples():
        assert again.outputs["metrics"][row.task][row.metric] == pytest.approx(row.value, abs=1e-12)


def test_an_ablation_that_removes_nothing_is_reported_as_the_same_model(tmp_path, cdco_home):
    # a task-only stage, then a Poincaré stage (in-batch negatives only: no ODMS work). cdco_no_euclidean drops a
    # term no stage uses: cdco's stages (the plan trains them once). cdco_no_poincare shares the first stage and
    # trains the second on the task alone: another model, which a report reading the first stage instead of the
    # last would miss. (Trained apart under each name, the bytes are the same: tests/unit/training/
    # test_shared_stages.py.)
    stages = ("[{name: warmup, groups: [all], losses: {task: 1.0}, steps: 1, lr: 5.0e-3}, {name: poincare, "
              "groups: [upper], losses: {task: 1.0, poincare: 0.5}, space: poincare, steps: 1, lr: 5.0e-3}]")
    cfg = load_profile("smoke", [f"train.stages={stages}", "train.n_hard_negatives=0", "data.max_rows.train=32",
                                 "data.max_rows.validation=16"])
    res = run_comparison(cfg, methods=["cdco", "cdco_no_poincare", "cdco_no_euclidean"], seeds=[0],
                         out_dir=tmp_path)
    assert res["same_weights"] == [["cdco", "cdco_no_euclidean"]]
    assert "- `cdco`, `cdco_no_euclidean`" in open(res["md"]).read()


def test_parallel_jobs_give_the_numbers_of_the_serial_run(short_smoke_cfg, tmp_path, cdco_home):
    # two spawned workers (one torch thread each, as this test's process) train and score from an empty cache;
    # then the same in order, from an empty cache again: every metric equal
    seen: list[dict] = []
    par = run_comparison(short_smoke_cfg, methods=METHODS, seeds=[0], out_dir=tmp_path / "par", jobs=2,
                         threads_per_job=1, on_step=seen.append)
    # progress: the workers' steps (training steps, scored tasks), each named by its node; a known total's last
    # unit always comes through the workers' queue
    by_node: dict[str, list[dict]] = {}
    for info in seen:
        by_node.setdefault(info["node"], []).append(info)
    kinds = {n.split("[")[0] for n in by_node}
    assert {"train", "evaluate"} <= kinds  # embedding and manifold reports: tests/unit/odms/test_steps.py
    for node, infos in by_node.items():
        if node.startswith(("embed[", "manifold[", "evaluate[")):
            assert infos[-1]["step"] == infos[-1]["total"], (node, infos[-1])
    assert {i["unit"] for n, infos in by_node.items() if n.startswith("evaluate[") for i in infos} == {"task"}
    assert all(i.get("loss") is not None for n, infos in by_node.items() if n.startswith("train[") for i in infos)
    for d in ("steps", "cache/features"):
        shutil.rmtree(cdco_home / d)
    ser = run_comparison(short_smoke_cfg, methods=METHODS, seeds=[0], out_dir=tmp_path / "ser")
    def scores(table: list[dict]) -> list[dict]:  # s/step is measured: it differs from run to run
        return [{k: v for k, v in row.items() if k != "s/step"} for row in table]

    assert scores(par["table"]) == scores(ser["table"])
    a, b = (pd.read_csv(r["csv"]).query("metric != 'seconds_per_step'").reset_index(drop=True) for r in (par, ser))
    assert len(a) == len(b) > 0
    assert a.drop(columns="value").equals(b.drop(columns="value"))
    assert a.value.to_numpy() == pytest.approx(b.value.to_numpy(), abs=1e-12)
    with pytest.raises(InputError, match="jobs must be at least 1"):
        run_comparison(short_smoke_cfg, methods=METHODS, seeds=[0], out_dir=tmp_path / "bad", jobs=0)


def test_bad_input_fails_before_training(smoke_cfg, tmp_path, cdco_home):
    with pytest.raises(InputError, match=r"unknown method 'lora_xl'; available: .*cdco.*lora_mtl"):
        run_comparison(smoke_cfg, methods=["cdco", "lora_xl"], seeds=[0], out_dir=tmp_path)
    with pytest.raises(InputError, match=r"given more than once"):
        run_comparison(smoke_cfg, methods=["frozen", "frozen"], seeds=[0], out_dir=tmp_path)
    with pytest.raises(InputError, match=r"seeds must be distinct non-negative integers"):
        run_comparison(smoke_cfg, methods=["frozen"], seeds=[0, 0], out_dir=tmp_path)
    assert not (cdco_home / "steps").exists()  # nothing was trained (nor embedded)


def test_all_means_every_registered_method_cdco_first(smoke_cfg):
    from cdco_core.methods import expand_methods, list_methods

    names = expand_methods(["all"])
    assert names[0] == "cdco" and sorted(names) == list_methods() and len(set(names)) == len(names)
    with pytest.raises(InputError, match="unknown method 'all'"):  # "all" alone, not mixed with names
        load_profile("smoke", ["eval.methods=[all,cdco]"])
    with pytest.raises(InputError, match="unknown method 'all'"):
        build_plan(smoke_cfg, ["all", "cdco"], [0])
    # the config takes it too: `cdco run --methods all` and `--set eval.methods=[all]`
    assert load_profile("smoke", ["eval.methods=[all]"]).eval.methods == names


def test_cli_unknown_method_is_one_line_exit_2(tmp_path):
    from cli.main import app

    out = CliRunner().invoke(app, ["compare", "--profile", "smoke", "--methods", "cdco,nope", "--out", str(tmp_path)])
    assert out.exit_code == 2
    assert "error: unknown method 'nope'; available:" in out.output
