"""The comparison report: every method x seed on the same splits, one table, a paired bootstrap, plots.

Files written by :func:`write_report` (the ``report`` step):
    comparison.csv      long form: method, seed, task, kind, metric, value. Per-entry rows (a task at a probe
                        budget, ``task.n256``, or a zero-shot pair) carry every metric that fits; rows with task
                        "average" carry the scopes (kind = scope name: ID, OOD, KI, overall, OOD_unseen.n256,
                        zero_shot, primary, ...; metric "main"); rows with task "cost" carry trainable_parameters
                        and seconds_per_step.
    comparison.md       the endpoints table (rows = methods, columns = scopes + size and speed), then per-entry
                        tables (ID; OOD and KI at each budget; zero-shot), cells "mean ± sd" over seeds (sample
                        sd, n-1); then the paired bootstrap of every method against ``lora_mtl`` and against the
                        best baseline (highest mean primary endpoint), per scope (per entry in bootstrap.csv).
    kinds.png           grouped bars by kind, one bar per method (error bars = sd over seeds).
    deltas.png          per-task difference of seed means against ``cfg.eval.baseline_for_deltas``.
    bootstrap.csv       the bootstrap table in long form; results.json: everything returned, as JSON.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cdco_core.config import Config
from cdco_core.evaluation.bootstrap import PairedTask, bootstrap_replicates, summarize
from cdco_core.evaluation.metrics import METRIC_FUNCS
from cdco_core.evaluation.scoring import ENTRY_KINDS, FULL, KINDS, scopes
from cdco_core.io import write_json, write_text

log = logging.getLogger(__name__)

AVERAGE_TASK = "average"
FLOOR_ROW = "majority class (floor)"
COST_TASK = "cost"
COST_COLUMNS = {"trainable_parameters": "trainable params", "seconds_per_step": "s/step"}
REFERENCE = "cdco"  # the method the bootstrap tests when no baseline is in the comparison
PRIMARY_COMPARATOR = "lora_mtl"
# columns of the endpoints table, in this order where present (the primary endpoint and its terms first)
ENDPOINT_ORDER = ("primary", "ID", "OOD_unseen", "KI", "OOD_seen", "zero_shot", "OOD", "overall")


def entries_of(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An evaluation's entries with their kind, budget and OOD protocol (older results: every task at full)."""
    return result.get("entries") or {t: {"task": t, "kind": k, "budget": FULL, "ood_protocol": None}
                                     for t, k in result["kinds"].items()}


def report_scopes(result: dict[str, Any], cfg: Config) -> dict[str, list[list[str]]]:
    """Scope name -> groups of entries, from one evaluation (every evaluation of a comparison has the same)."""
    return scopes(entries_of(result), sorted(cfg.eval.probe_budgets))


# ------------------------------------------------------------------------------------------ table
def long_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """comparison.csv rows from the ``evaluate`` steps' metrics."""
    rows = []
    for r in results:
        for task, ms in r["metrics"].items():
            rows += [(r["method"], r["seed"], task, r["kinds"][task], m, v) for m, v in ms.items()]
        rows += [(r["method"], r["seed"], AVERAGE_TASK, k, "main", v) for k, v in r["averages"].items()
                 if v is not None]
        rows += [(r["method"], r["seed"], COST_TASK, COST_TASK, m, v) for m, v in (r.get("cost") or {}).items()
                 if m in COST_COLUMNS and v is not None]
    return pd.DataFrame(rows, columns=["method", "seed", "task", "kind", "metric", "value"])


def _cell(values: pd.Series) -> str:
    if len(values) == 0:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f} (n=1)"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


Numbers = dict[str, dict[str, dict[str, float]]]  # method -> column -> {"mean", "sd", "n"}


def summary_table(long: pd.DataFrame, methods: list[str], main_metric: dict[str, str],
                  scope_names: list[str] | dict[str, str]) -> tuple[pd.DataFrame, Numbers]:
    """Rows = methods; columns = ``entry (metric)`` for each entry's main metric, then the scopes, then size and
    speed where recorded.

    Args:
        scope_names: the scopes to show, in order (a dict entry -> kind is accepted: its kinds present, then
            "overall", as before scopes existed).

    Returns:
        (table of "mean ± sd" strings, numbers: method -> column -> {"mean", "sd", "n"})
    """
    if isinstance(scope_names, dict):
        scope_names = [k for k in KINDS if k in scope_names.values()] + ["overall"]
    columns = [(f"{t} ({m})", (long.task == t) & (long.metric == m)) for t, m in main_metric.items()]
    columns += [(k, (long.task == AVERAGE_TASK) & (long.kind == k)) for k in scope_names]
    columns += [(label, (long.task == COST_TASK) & (long.metric == m)) for m, label in COST_COLUMNS.items()
                if ((long.task == COST_TASK) & (long.metric == m)).any()]
    cells, numbers = {}, {}
    for method in methods:
        mine = long.method == method
        cells[method], numbers[method] = {}, {}
        for name, sel in columns:
            v = long.loc[mine & sel, "value"]
            cells[method][name] = _cost_cell(name, v) if name in COST_COLUMNS.values() else _cell(v)
            numbers[method][name] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                                     "n": len(v)}
    return pd.DataFrame.from_dict(cells, orient="index").rename_axis("method"), numbers


def _cost_cell(name: str, values: pd.Series) -> str:
    if len(values) == 0:
        return "–"
    if name == COST_COLUMNS["trainable_parameters"]:
        n = values.mean()
        return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"
    return f"{values.mean():.2f}"


# ------------------------------------------------------------------------------------------ floors
def majority_floors(tasks: list[Any]) -> dict[str, dict[str, Any]]:
    """The majority-class floor of each classification task: the score of always predicting the train split's
    most frequent class (ties: the smaller id) on the eval split, with the task's main metric. For an OOD or KI task
    it is the floor of its fresh-head probes (every label budget: the class prior needs no labels to guess).

    Returns:
        {task: {"metric", "value", "class", "kind"}} (regression and multiple choice have no class to repeat: left
        out).
    """
    out: dict[str, dict[str, Any]] = {}
    for t in tasks:
        if (t.spec.type in ("regression", "multiple_choice") or "train" not in t.splits
                or "label" not in t.splits["train"].columns):
            continue
        counts = np.bincount(t.splits["train"]["label"].to_numpy(np.int64), minlength=t.num_labels)
        top = int(np.argmax(counts))
        y = t.splits[t.eval_split]["label"].to_numpy(np.int64)
        metric = t.spec.metric_name
        out[t.name] = {"metric": metric, "value": float(METRIC_FUNCS[metric](y, np.full_like(y, top))),
                       "class": t.label_names[top], "kind": t.spec.kind}
    return out


def _floor_row(columns: list[str], floors: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The table's floor row: the floor under each task's main-metric column (a probe's ``task.nN`` column too),
    "–" elsewhere."""
    row = {}
    for c in columns:
        entry, _, metric = c.partition(" (")
        f = floors.get(re.sub(r"\.n\d+$", "", entry))
        row[c] = f"{f['value']:.3f}" if f and metric == f"{f['metric']})" else "–"
    return row


def task_step_shares(histories: dict[tuple[str, int], list[list[dict[str, Any]]]]) -> dict[str, dict[str, float]]:
    """Share of each method's training steps that drew each task, pooled over its stages and seeds.

    Args:
        histories: (method, seed) -> each stage's step history (``meta.json``'s ``history``, one dict per step
            with ``batch_task``: the task of a one-task batch, ``mixed`` for a batch-level sampler's batch).

    Returns:
        method -> {task (or ``mixed``): share of steps}, tasks sorted by name; a small task the sampler starves
        shows here (issue: a head left at its majority class).
    """
    counts: dict[str, dict[str, int]] = {}
    for (method, _seed), stages in histories.items():
        c = counts.setdefault(method, {})
        for history in stages:
            for step in history:
                task = str(step.get("batch_task", "mixed"))
                c[task] = c.get(task, 0) + 1
    return {m: {t: round(n / max(1, sum(c.values())), 4) for t, n in sorted(c.items())} for m, c in counts.items()}


def _shares_table(shares: dict[str, dict[str, float]], methods: list[str]) -> str:
    tasks = sorted({t for m in methods for t in shares.get(m, {})})
    rows = [{"method": m, **{t: f"{shares[m].get(t, 0.0):.3f}" for t in tasks}} for m in methods if m in shares]
    return _md_table(pd.DataFrame(rows)) if rows else ""


def same_weight_groups(finals: dict[tuple[str, int], str], methods: list[str], seeds: list[int],
                       scores: dict[tuple[str, int], str] | None = None) -> list[list[str]]:
    """Methods whose last training stage wrote byte-identical weights at every seed: one model under several names.

    An ablation that removes a term no stage of the profile uses (``cdco_no_poincare`` under a schedule without a
    Poincaré stage) trains exactly what its parent trains; its scores then repeat the parent's and every difference
    between them is zero. Said in the report so that nobody reads the pair as two results.

    Args:
        finals: (method, seed) -> ``weights_sha256`` of the method's last stage at that seed.
        methods, seeds: the comparison's rows and seeds; a method missing a seed is in no group.
        scores: (method, seed) -> a digest of its predictions; when given, a group must also have predicted the
            same (a method's own evaluation settings, e.g. from ``--tuned``, can score equal weights differently).

    Returns:
        groups of at least two methods, each in ``methods`` order, groups ordered by their first method.
    """
    groups: dict[tuple[tuple[str | None, str], ...], list[str]] = {}
    for m in methods:
        runs = tuple((finals.get((m, s)), (scores or {}).get((m, s), "")) for s in seeds)
        if seeds and all(weights for weights, _ in runs):
            groups.setdefault(runs, []).append(m)
    return [g for g in groups.values() if len(g) > 1]


def predictions_digest(preds: pd.DataFrame) -> str:
    """A digest of one run's predictions, independent of row order (rows sorted by task and example id)."""
    rows = preds.sort_values(["task", "example_id"], kind="stable").reset_index(drop=True)
    return hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()).hexdigest()


def floor_warnings(results: list[dict[str, Any]], floors: dict[str, dict[str, Any]]) -> list[str]:
    """One line per (method, seed, ID task) whose trained head scores at or below the task's majority-class floor."""
    out = []
    trained = {task: floor for task, floor in floors.items() if floor.get("kind", "ID") == "ID"}
    for r in results:
        for task, floor in trained.items():
            value = (r["metrics"].get(task) or {}).get(floor["metric"])
            if value is not None and value <= floor["value"] + 1e-9:
                out.append(f"{r['method']} seed {r['seed']}: {task} {floor['metric']} {value:.3f} is at or below its "
                           f"majority-class floor {floor['value']:.3f} (always {floor['class']!r})")
    return out


# -------------------------------------------------------------------------------------- bootstrap
def _paired_task(preds: dict[tuple[str, int], pd.DataFrame], task: str, metric: str, a: str, b: str,
                 seeds: list[int]) -> PairedTask:
    """Align two methods' per-example predictions of one task on example_id, one row per seed."""
    def rows(method: str, seed: int) -> pd.DataFrame:
        df = preds[(method, seed)]
        return df[df.task == task].sort_values("example_id", kind="stable")

    ref = rows(a, seeds[0])
    ids = ref["example_id"].to_numpy()
    pa, pb = [], []
    for s in seeds:
        for method, store in ((a, pa), (b, pb)):
            r = rows(method, s)
            if not np.array_equal(r["example_id"].to_numpy(), ids):
                raise RuntimeError(f"{method} seed {s} scored other examples of {task!r} than {a}: splits differ")
            store.append(r["pred"].to_numpy())
    y = ref["label"].to_numpy()
    return PairedTask(METRIC_FUNCS[metric], y, np.stack(pa), np.stack(pb))  # (S, N) each


def bootstrap_table(preds: dict[tuple[str, int], pd.DataFrame], reference: str, others: list[str],
                    seeds: list[int], main_metric: dict[str, str], scope_groups: dict[str, Any], samples: int,
                    seed: int) -> pd.DataFrame:
    """``reference`` − each of ``others``, per entry and per scope (formulas in
    :mod:`cdco_core.evaluation.bootstrap`). A scope's replicate is the mean over its groups of each group's mean
    entry delta (the primary endpoint: the mean of its three kinds' replicates).

    Args:
        scope_groups: scope -> groups of entries (:func:`~cdco_core.evaluation.scoring.scopes`); a dict
            entry -> kind is accepted (one group per kind, and "overall").
    """
    tasks = list(main_metric)
    if scope_groups and all(isinstance(v, str) for v in scope_groups.values()):  # entry -> kind
        kinds = scope_groups
        scope_groups = {k: [[t for t in tasks if kinds[t] == k]] for k in KINDS}
        scope_groups["overall"] = [tasks]
    col = {t: j for j, t in enumerate(tasks)}
    rows = []
    for other in others:
        paired = [_paired_task(preds, t, main_metric[t], reference, other, seeds) for t in tasks]
        observed, reps = bootstrap_replicates(paired, samples, seed)  # (T,), (B, T)
        scoped = [(t, main_metric[t], [[t]]) for t in tasks]
        scoped += [(name, "main", groups) for name, groups in scope_groups.items()]
        for scope, metric, groups in scoped:
            groups = [[col[t] for t in g if t in col] for g in groups]
            groups = [g for g in groups if g]
            if not groups:
                continue
            n = sum(len(paired[j].y_true) for g in groups for j in g)
            obs = float(np.mean([observed[g].mean() for g in groups]))
            rep = np.mean([reps[:, g].mean(axis=1) for g in groups], axis=0)
            res = summarize(obs, rep, n)
            rows.append({"reference": reference, "baseline": other, "scope": scope, "metric": metric,
                         **res.as_dict()})
    return pd.DataFrame(rows)


def comparators(methods: list[str], numbers: Numbers) -> list[str]:
    """The methods every other is tested against: ``lora_mtl`` and the best baseline (highest mean primary
    endpoint over seeds, or overall where there is no primary) when they are in the comparison; else the
    reference method (``cdco``, or the first)."""
    from cdco_core.methods.baselines.method import BASELINES

    out = [PRIMARY_COMPARATOR] if PRIMARY_COMPARATOR in methods else []
    baselines = [m for m in methods if m in BASELINES]
    if baselines:
        score = "primary" if "primary" in numbers[baselines[0]] else "overall"
        best = max(baselines, key=lambda m: numbers[m][score]["mean"])
        if best not in out:
            out.append(best)
    return out or [REFERENCE if REFERENCE in methods else methods[0]]


# ---------------------------------------------------------------------------------------- markdown
def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _bootstrap_md(boot: pd.DataFrame, scope_names: list[str]) -> str:
    if boot.empty:
        return "_No bootstrap: the comparison has a single method._"
    boot = boot[boot.scope.isin(scope_names)]
    view = pd.DataFrame({
        "method": boot.reference, "vs": boot.baseline, "scope": boot.scope,
        "Δ (method − vs)": boot.delta.map("{:+.3f}".format),
        "95% CI": [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(boot.ci_low, boot.ci_high, strict=True)],
        "p": boot.p_value.map(lambda p: "n/a" if np.isnan(p) else f"{p:.3f}"),
        "examples": boot.examples,
    })
    return _md_table(view)


def _sections(table: pd.DataFrame, entries: dict[str, dict[str, Any]], main_metric: dict[str, str],
              scope_names: list[str]) -> list[tuple[str, list[str]]]:
    """(title, columns) of comparison.md's tables: endpoints with size and speed, then entries by kind."""
    cost = [c for c in COST_COLUMNS.values() if c in table.columns]
    first = [c for c in ENDPOINT_ORDER if c in scope_names]
    budgets = [c for c in scope_names if c not in first]
    out = [("Endpoints (docs/methods.md)", first + cost)]
    if budgets:
        out.append(("Scopes at each probe budget", budgets))
    titles = {"ID": "ID tasks (trained heads)", "OOD": "OOD tasks (fresh-head probe; .nN = N labels)",
              "KI": "KI tasks (fresh-head probe; .nN = N labels)", "ZS": "Zero-shot transfer (accuracy)"}
    for kind in ENTRY_KINDS:
        cols = [f"{e} ({main_metric[e]})" for e, m in entries.items() if m["kind"] == kind]
        if cols:
            out.append((titles[kind], cols))
    return out


def write_markdown(path: Path, cfg: Config, table: pd.DataFrame, boot: pd.DataFrame, seeds: list[int],
                   protocol: dict[str, str], comparators_: list[str], plots: list[str], wall_s: float,
                   sections: list[tuple[str, list[str]]] | None = None,
                   scope_names: list[str] | None = None, warnings: list[str] | None = None,
                   step_shares: str = "", same_weights: list[list[str]] | None = None) -> Path:
    """Write comparison.md: how it was measured, the tables, the bootstrap table, protocol notes, plots, wall time."""
    sections = sections or [("Results", list(table.columns))]
    if scope_names is None:
        scope_names = sorted(set(boot.scope)) if not boot.empty else []
    budgets = ", ".join(str(b) for b in sorted(cfg.eval.probe_budgets))
    lines = [
        f"# Comparison: profile `{cfg.profile}`",
        "",
        f"Seeds {seeds}; every method on the same splits and seeds. Cells: main metric, mean ± sd over seeds "
        "(sample sd). Scopes average entries: ID/OOD/KI = mean of the kind's main metrics (OOD/KI at the full "
        "probe split), overall = mean over all those tasks, `.nN` = the probe with N labels, primary = (ID + "
        "OOD_unseen + KI) / 3 at the smallest budget (docs/methods.md, \"Endpoints\").",
        "ID tasks: the method's trained heads on the eval split. OOD/KI tasks: a fresh linear head on frozen "
        f"features (task_ids=None), {cfg.eval.head_epochs} epochs, lr {cfg.eval.head_lr}, batch "
        f"{cfg.eval.head_batch_size}, seeded, on the full capped train split"
        + (f" and on stratified samples of {budgets} rows" if budgets else "")
        + " (docs/methods.md, \"Evaluation protocol\"). trainable params: the largest stage's; s/step: measured "
        "seconds per training step on this machine (a run note, noisy under load).",
        "",
    ]
    for title, cols in sections:
        cols = [c for c in cols if c in table.columns]
        if cols:
            lines += [f"## {title}", "", _md_table(table[cols].reset_index()), ""]
    if FLOOR_ROW in table.index:
        lines += [f"Row *{FLOOR_ROW}*: always predicting the train split's most frequent class, scored on the eval "
                  "split; under a probe's columns, the floor its fresh head must clear at any label budget (the "
                  "frozen probe, `frozen`, is the other floor every method should clear).", ""]
    if warnings:
        lines += ["## Warnings: trained heads at the majority-class floor", "", *[f"- {w}" for w in warnings], ""]
    if same_weights:
        lines += ["## One model under several names", "",
                  "These methods' last stages wrote the same weights (sha256 of `weights.safetensors`) and their "
                  "evaluations the same predictions at every seed: each group is one trained model, so the "
                  "differences between their scores are zero and say nothing about what tells the methods apart (an "
                  "ablation in a group removes nothing on this profile; only the measured s/step differs).", "",
                  *[f"- {', '.join(f'`{m}`' for m in g)}" for g in same_weights], ""]
    if step_shares:
        lines += ["## Training steps per task", "", "Share of each method's training steps (all stages and seeds) "
                  "whose batch came from each task; `mixed` = a batch-level sampler's batch of several tasks.", "",
                  step_shares, ""]
    lines += [
        f"## Paired bootstrap: every method against {' and '.join(comparators_) or '–'}",
        "",
        f"{cfg.eval.bootstrap_samples} resamples of examples (paired across methods and seeds); two-sided p-value "
        "(shift method); percentile 95% CI of the difference. Per scope here; per entry in bootstrap.csv.",
        "",
        _bootstrap_md(boot, scope_names),
        "",
        "## Protocol per entry",
        "",
        *[f"- {t}: {p}" for t, p in protocol.items()],
        "",
        "## Plots",
        "",
        *[f"![{Path(p).stem}]({Path(p).name})" for p in plots],
        "",
        f"Wall time: {wall_s:.1f} s (training from the cache where unchanged).",
        "",
    ]
    return write_text("\n".join(lines), path)


# ----------------------------------------------------------------------------------------- report
def _protocol_notes(results: list[dict[str, Any]], order: list[str]) -> dict[str, str]:
    """Per task: the protocol when every method used the same one, else "method: protocol" for each."""
    notes = {}
    for t in order:
        used = {r["method"]: r["protocol"][t] for r in results}
        same = set(used.values())
        notes[t] = same.pop() if len(same) == 1 else ", ".join(f"{m}: {p}" for m, p in used.items())
    return notes


def write_report(cfg: Config, results: list[dict[str, Any]], out: Path, methods: list[str], seeds: list[int],
                 t0: float, floors: dict[str, dict[str, Any]] | None = None,
                 step_shares: dict[str, dict[str, float]] | None = None,
                 final_weights: dict[tuple[str, int], str] | None = None) -> dict[str, Any]:
    """The comparison files in ``out`` from the evaluations of every method x seed.

    Args:
        cfg: the validated config (profile, bootstrap settings, evaluation budget for the text).
        results: the ``evaluate`` steps' metrics (``metrics.json``) with ``predictions`` = its Parquet path.
        out: the folder to write (see the module docstring).
        methods, seeds: the table's rows and the seeds, in order.
        t0: ``time.perf_counter()`` when the comparison started (for the wall time in comparison.md).
        floors: :func:`majority_floors` of the tasks: a floor row in the table, and a warning for every trained
            head at or below its floor.
        step_shares: :func:`task_step_shares` of the methods' training histories (a section of comparison.md).
        final_weights: (method, seed) -> the last stage's ``weights_sha256``, for :func:`same_weight_groups`.

    Returns:
        {"csv", "md", "plots": [...] (file names in ``out``), "table": [{method, column: "mean ± sd"}], "numbers",
         "bootstrap", "comparators", "floors", "warnings", "same_weights", "step_shares", "methods", "seeds",
         "wall_s"}
    """
    from cdco_core.evaluation.plots import plot_kind_bars, plot_task_deltas

    first = results[0]
    entries = entries_of(first)
    order = sorted(entries, key=lambda t: ENTRY_KINDS.index(entries[t]["kind"]))  # by kind, then as evaluated
    entries = {t: entries[t] for t in order}
    main_metric = {t: first["main_metric"][t] for t in order}
    groups = report_scopes(first, cfg)
    scope_names = list(groups)
    protocol = _protocol_notes(results, order)

    long = long_frame(results)
    table, numbers = summary_table(long, methods, main_metric, scope_names)
    floors = floors or {}
    warnings = floor_warnings(results, floors)
    for w in warnings:
        log.warning("%s", w)
    if floors:
        table.loc[FLOOR_ROW] = _floor_row(list(table.columns), floors)
    preds = {(r["method"], r["seed"]): pd.read_parquet(r["predictions"]) for r in results}
    same = same_weight_groups(final_weights or {}, methods, seeds,
                              scores={run: predictions_digest(p) for run, p in preds.items()})
    for g in same:
        log.warning("one trained model under several names (same weights and predictions at every seed): %s",
                    ", ".join(g))
    against = comparators(methods, numbers)
    pairs: list[tuple[str, str]] = []
    for c in against:
        pairs += [(m, c) for m in methods if m != c and (c, m) not in pairs]  # a mirrored pair says nothing new
    frames = [bootstrap_table(preds, m, [c], seeds, main_metric, groups, cfg.eval.bootstrap_samples, cfg.seed)
              for m, c in pairs]
    boot = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    csv_path = out / "comparison.csv"
    write_text(long.to_csv(index=False), csv_path)
    write_text(boot.to_csv(index=False), out / "bootstrap.csv")
    kinds = {t: m["kind"] for t, m in entries.items()}
    plots = _write_plots(out, cfg, numbers, methods, main_metric, kinds, plot_kind_bars, plot_task_deltas)
    wall = time.perf_counter() - t0
    md_path = write_markdown(out / "comparison.md", cfg, table, boot, seeds, protocol, against, plots, wall,
                             _sections(table, entries, main_metric, scope_names), scope_names, warnings,
                             _shares_table(step_shares or {}, methods), same)
    result = {"csv": csv_path.name, "md": md_path.name, "plots": [Path(p).name for p in plots],
              "table": table.reset_index().to_dict(orient="records"), "numbers": numbers,
              "bootstrap": boot.to_dict(orient="records"), "comparators": against, "floors": floors,
              "warnings": warnings, "same_weights": same, "step_shares": step_shares or {}, "methods": methods,
              "seeds": seeds, "wall_s": round(wall, 2)}
    write_json(result, out / "results.json")
    return result


def _write_plots(out: Path, cfg: Config, numbers, methods, main_metric, kinds, kind_bars, task_deltas) -> list[str]:
    scopes = [k for k in KINDS if k in kinds.values()] + ["overall"]
    scopes += [k for k in ("primary",) if k in numbers[methods[0]]]
    means = {m: {k: numbers[m][k]["mean"] for k in scopes} for m in methods}
    sds = {m: {k: numbers[m][k]["sd"] for k in scopes} for m in methods}
    from cdco_core.evaluation.plots import method_colors

    colors = method_colors(methods)
    plots = [str(kind_bars(means, sds, scopes, out / "kinds.png", colors=colors))]
    base = cfg.eval.baseline_for_deltas
    if base in methods and len(methods) > 1:
        cols = {t: f"{t} ({m})" for t, m in main_metric.items()}
        deltas = {m: {t: numbers[m][c]["mean"] - numbers[base][c]["mean"] for t, c in cols.items()}
                  for m in methods if m != base}
        plots.append(str(task_deltas(deltas, list(cols), base, out / "deltas.png", colors=colors)))
    return plots
