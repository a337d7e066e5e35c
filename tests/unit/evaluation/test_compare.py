"""The comparison table, bootstrap table, markdown and plots, from hand-made evaluation results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cdco_core.errors import InputError
from cdco_core.evaluation import compare as C
from cdco_core.evaluation.plots import plot_kind_bars, plot_task_deltas

MAIN = {"a": "accuracy", "b": "pearson"}
KINDS = {"a": "ID", "b": "OOD"}


def _result(method: str, seed: int, acc: float, r: float) -> dict:
    return {"method": method, "seed": seed, "kinds": KINDS, "main_metric": MAIN,
            "metrics": {"a": {"accuracy": acc, "macro_f1": acc - 0.1}, "b": {"pearson": r, "spearman": r}},
            "averages": {"ID": acc, "OOD": r, "KI": None, "overall": (acc + r) / 2}}


RESULTS = [_result("cdco", 0, 0.8, 0.5), _result("cdco", 1, 0.9, 0.7),
           _result("lora_mtl", 0, 0.6, 0.5), _result("lora_mtl", 1, 0.7, 0.5)]


def test_long_frame_has_every_metric_and_the_averages():
    long = C.long_frame(RESULTS)
    assert list(long.columns) == ["method", "seed", "task", "kind", "metric", "value"]
    # per run: 2 + 2 task metrics, 3 non-empty averages (KI is None and left out)
    assert len(long) == 4 * 7
    avg = long[(long.task == "average") & (long.method == "cdco") & (long.seed == 1)]
    assert dict(zip(avg.kind, avg.value, strict=True)) == pytest.approx({"ID": 0.9, "OOD": 0.7, "overall": 0.8})


def test_summary_table_mean_and_sample_sd():
    table, numbers = C.summary_table(C.long_frame(RESULTS), ["cdco", "lora_mtl"], MAIN, KINDS)
    assert list(table.columns) == ["a (accuracy)", "b (pearson)", "ID", "OOD", "overall"]
    # cdco accuracy 0.8, 0.9: mean 0.85, sample sd sqrt(0.005) = 0.0707
    assert table.loc["cdco", "a (accuracy)"] == "0.850 ± 0.071"
    assert table.loc["lora_mtl", "b (pearson)"] == "0.500 ± 0.000"
    assert numbers["cdco"]["overall"]["mean"] == pytest.approx((0.65 + 0.8) / 2)
    assert numbers["cdco"]["overall"]["n"] == 2
    assert not table.isin(["–"]).any().any()


def _preds(rng, n=40):
    y = rng.integers(0, 2, n)
    yr = rng.normal(size=n)
    out = {}
    for method, noise in (("cdco", 0.1), ("lora_mtl", 0.4)):
        for seed in (0, 1):
            flip = rng.random(n) < noise
            out[(method, seed)] = pd.DataFrame({
                "task": ["a"] * n + ["b"] * n,
                "example_id": [f"a:{i}" for i in range(n)] + [f"b:{i}" for i in range(n)],
                "label": np.r_[y, yr], "pred": np.r_[np.where(flip, 1 - y, y), yr + noise * 3 * rng.normal(size=n)],
            }).sample(frac=1.0, random_state=seed)  # row order must not matter: rows are aligned on example_id
    return out


def test_bootstrap_table_scopes_and_identical_methods():
    preds = _preds(np.random.default_rng(0))
    boot = C.bootstrap_table(preds, "cdco", ["lora_mtl"], [0, 1], MAIN, KINDS, samples=200, seed=0)
    assert list(boot.scope) == ["a", "b", "ID", "OOD", "overall"]
    row = boot.set_index("scope").loc["overall"]
    per_task = boot.set_index("scope").loc[["a", "b"], "delta"].mean()
    assert row.delta == pytest.approx(per_task) and row.delta > 0
    assert row.ci_low <= row.delta <= row.ci_high
    # a method against an exact copy of itself: 0 difference, p = 1
    preds[("twin", 0)], preds[("twin", 1)] = preds[("cdco", 0)].copy(), preds[("cdco", 1)].copy()
    same = C.bootstrap_table(preds, "cdco", ["twin"], [0, 1], MAIN, KINDS, samples=50, seed=0)
    assert (same.delta == 0).all() and (same.p_value == 1.0).all()


def test_markdown_and_plots_are_written(tmp_path, smoke_cfg):
    long = C.long_frame(RESULTS)
    table, numbers = C.summary_table(long, ["cdco", "lora_mtl"], MAIN, KINDS)
    boot = C.bootstrap_table(_preds(np.random.default_rng(1)), "cdco", ["lora_mtl"], [0, 1], MAIN, KINDS, 20, 0)
    plots = C._write_plots(tmp_path, smoke_cfg, numbers, ["cdco", "lora_mtl"], MAIN, KINDS,
                           plot_kind_bars, plot_task_deltas)
    assert [p.split("/")[-1] for p in plots] == ["kinds.png", "deltas.png"]
    for p in plots:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    md = C.write_markdown(tmp_path / "comparison.md", smoke_cfg, table, boot, [0, 1],
                          {"a": "trained_head", "b": "fresh_head"}, ["lora_mtl"], plots, 1.0).read_text()
    assert "| cdco | 0.850 ± 0.071 |" in md
    assert "| cdco | lora_mtl | overall |" in md  # method, the comparator, the scope
    assert "![deltas](deltas.png)" in md


def test_seed_input_is_checked(smoke_cfg):
    from cdco_core.plan import build_plan

    assert build_plan(smoke_cfg, ["frozen"], None).seeds == smoke_cfg.eval.seeds
    with pytest.raises(InputError, match=r"seeds must be distinct non-negative integers.*\[0, 0\]"):
        build_plan(smoke_cfg, ["frozen"], [0, 0])
    with pytest.raises(InputError, match="got \\[\\]"):
        build_plan(smoke_cfg, ["frozen"], [])


def test_single_method_single_seed(tmp_path, smoke_cfg):
    one = [_result("cdco", 0, 0.8, 0.5)]
    table, numbers = C.summary_table(C.long_frame(one), ["cdco"], MAIN, KINDS)
    assert table.loc["cdco", "a (accuracy)"] == "0.800 (n=1)" and numbers["cdco"]["ID"]["sd"] == 0.0
    boot = C.bootstrap_table({}, "cdco", [], [0], MAIN, KINDS, samples=10, seed=0)
    assert boot.empty
    plots = C._write_plots(tmp_path, smoke_cfg, numbers, ["cdco"], MAIN, KINDS, plot_kind_bars, plot_task_deltas)
    assert [p.split("/")[-1] for p in plots] == ["kinds.png"]  # no baseline to draw deltas against
    md = C.write_markdown(tmp_path / "c.md", smoke_cfg, table, boot, [0], {}, [], plots, 0.5).read_text()
    assert "_No bootstrap: the comparison has a single method._" in md


def test_plot_colours_and_range():
    from cdco_core.evaluation.plots import method_colors, value_range
    from cdco_core.methods import METHODS

    names = METHODS.names()
    colours = method_colors(names)
    assert len(names) > 10 and len(set(colours.values())) == len(names)  # tab10 would repeat colours
    assert method_colors(names[:3]) == {m: method_colors(names[:3])[m] for m in names[:3]}
    assert method_colors(["a", "b"])["b"] != method_colors(["a", "b"])["a"]
    lo, hi = value_range({"a": {"ID": 0.8, "OOD": 0.7}, "b": {"ID": 0.9, "OOD": float("nan")}},
                         {"a": {"ID": 0.01, "OOD": 0.02}, "b": {"ID": 0.0}}, margin=0.05)
    assert (lo, hi) == pytest.approx((0.7 - 0.02 - 0.05, 0.9 + 0.05))
    assert value_range({"a": {"ID": float("nan")}}, {}) is None


def test_majority_floor_and_a_warning_for_a_head_at_it(smoke_cfg):
    from cdco_core.data import load_tasks
    from cdco_core.evaluation.metrics import METRIC_FUNCS

    tasks = load_tasks(smoke_cfg.data)
    floors = C.majority_floors(tasks)
    # classification tasks of every kind (a probe's floor too); multiple choice has no class to repeat
    assert set(floors) == {"rotten_tomatoes", "sms_spam", "imdb", "country_region"}
    assert {t: f["kind"] for t, f in floors.items() if f["kind"] != "ID"} == {"imdb": "OOD", "country_region": "KI"}
    spam = next(t for t in tasks if t.name == "sms_spam")
    y = spam.splits[spam.eval_split]["label"].to_numpy()
    top = int(np.bincount(spam.splits["train"]["label"].to_numpy()).argmax())
    assert floors["sms_spam"]["class"] == spam.label_names[top] == "ham"
    assert floors["sms_spam"]["value"] == pytest.approx(METRIC_FUNCS["macro_f1"](y, np.full_like(y, top)))
    at_floor = {"method": "cdco", "seed": 2, "metrics": {"sms_spam": {"macro_f1": floors["sms_spam"]["value"]},
                                                          "rotten_tomatoes": {"accuracy": 0.99}}}
    above = {"method": "lora_mtl", "seed": 0, "metrics": {"sms_spam": {"macro_f1": 0.9},
                                                           "rotten_tomatoes": {"accuracy": 0.99}}}
    warnings = C.floor_warnings([at_floor, above], floors)
    assert len(warnings) == 1 and warnings[0].startswith("cdco seed 2: sms_spam macro_f1")
    assert "majority-class floor" in warnings[0] and "'ham'" in warnings[0]
    probe_at_floor = {"method": "frozen", "seed": 0, "metrics": {"imdb": {"accuracy": 0.0}}}
    assert C.floor_warnings([probe_at_floor], floors) == []  # warnings are for trained heads, not probes


def test_floor_row_sits_under_each_tasks_main_metric_and_every_probe_budget(smoke_cfg):
    from cdco_core.data import load_tasks

    floors = C.majority_floors(load_tasks(smoke_cfg.data))
    cols = ["imdb (accuracy)", "imdb.n256 (accuracy)", "imdb (macro_f1)", "sms_spam (macro_f1)",
            "sms_spam (accuracy)", "country_capital (accuracy)"]
    row = C._floor_row(cols, floors)
    assert row["imdb (accuracy)"] == row["imdb.n256 (accuracy)"] == f"{floors['imdb']['value']:.3f}"
    assert row["sms_spam (macro_f1)"] == f"{floors['sms_spam']['value']:.3f}"
    assert row["imdb (macro_f1)"] == row["sms_spam (accuracy)"] == row["country_capital (accuracy)"] == "–"


def test_task_step_shares_pool_stages_and_seeds_and_keep_mixed_batches():
    histories = {("cdco", 0): [[{"batch_task": "sst2"}, {"batch_task": "rte"}], [{"batch_task": "sst2"}]],
                 ("cdco", 1): [[{"batch_task": "sst2"}, {"batch_task": "sst2"}, {"batch_task": "rte"}]],
                 ("ca_mtl", 0): [[{"batch_task": "mixed"}, {"batch_task": "sst2"}]]}
    shares = C.task_step_shares(histories)
    assert shares["cdco"] == {"rte": pytest.approx(2 / 6, abs=1e-4), "sst2": pytest.approx(4 / 6, abs=1e-4)}
    assert shares["ca_mtl"] == {"mixed": 0.5, "sst2": 0.5}
    md = C._shares_table(shares, ["cdco", "ca_mtl"])
    assert "| cdco | 0.000 | 0.333 | 0.667 |" in md.replace("  ", " ")


def test_same_weight_groups_need_every_seed_and_keep_method_order():
    finals = {("cdco", 0): "a", ("cdco", 1): "b", ("cdco_no_poincare", 0): "a", ("cdco_no_poincare", 1): "b",
              ("cdco_no_euclidean", 0): "a", ("cdco_no_euclidean", 1): "c",  # same first seed only: not one model
              ("frozen", 0): "f"}  # a seed missing: in no group
    methods = ["cdco_no_poincare", "cdco", "cdco_no_euclidean", "frozen"]
    assert C.same_weight_groups(finals, methods, [0, 1]) == [["cdco_no_poincare", "cdco"]]
    assert C.same_weight_groups(finals, methods, [0]) == [["cdco_no_poincare", "cdco", "cdco_no_euclidean"]]
    assert C.same_weight_groups(finals, ["cdco", "frozen"], [0, 1]) == []
    # equal weights scored differently (a method's own evaluation settings): not one model
    scores = {(m, s): "p" for m in methods for s in (0, 1)} | {("cdco_no_poincare", 1): "q"}
    assert C.same_weight_groups(finals, methods, [0, 1], scores) == []
    assert C.same_weight_groups(finals, methods, [0], scores) == [["cdco_no_poincare", "cdco", "cdco_no_euclidean"]]


def test_predictions_digest_ignores_row_order_and_sees_one_changed_prediction():
    preds = _preds(np.random.default_rng(3))[("cdco", 0)]
    same = preds.sample(frac=1.0, random_state=7)
    assert C.predictions_digest(same) == C.predictions_digest(preds)
    changed = preds.copy()
    changed.iloc[5, changed.columns.get_loc("pred")] += 1
    assert C.predictions_digest(changed) != C.predictions_digest(preds)


def test_report_names_one_model_under_two_names(tmp_path, smoke_cfg):
    preds = _preds(np.random.default_rng(0))
    preds[("twin", 0)], preds[("twin", 1)] = preds[("cdco", 0)], preds[("cdco", 1)]
    results = []
    for r in RESULTS + [{**x, "method": "twin"} for x in RESULTS if x["method"] == "cdco"]:
        path = tmp_path / f"{r['method']}-{r['seed']}.parquet"
        preds[(r["method"], r["seed"])].to_parquet(path)
        results.append({**r, "protocol": {"a": "trained_head", "b": "fresh_head"}, "predictions": str(path)})
    methods = ["cdco", "lora_mtl", "twin"]
    finals = {("cdco", 0): "w0", ("cdco", 1): "w1", ("twin", 0): "w0", ("twin", 1): "w1",
              ("lora_mtl", 0): "v0", ("lora_mtl", 1): "v1"}
    res = C.write_report(smoke_cfg, results, tmp_path, methods, [0, 1], 0.0, final_weights=finals)
    assert res["same_weights"] == [["cdco", "twin"]]
    md = (tmp_path / "comparison.md").read_text()
    assert "## One model under several names" in md and "- `cdco`, `twin`" in md
    res = C.write_report(smoke_cfg, results, tmp_path, methods, [0, 1], 0.0)  # no weights known: no claim
    assert res["same_weights"] == [] and "One model" not in (tmp_path / "comparison.md").read_text()
    other = preds[("lora_mtl", 1)]  # the twin's second seed predicts something else: its weights do not decide
    other.to_parquet(results[-1]["predictions"])
    res = C.write_report(smoke_cfg, results, tmp_path, methods, [0, 1], 0.0, final_weights=finals)
    assert res["same_weights"] == []
