"""The comparison report: every method x seed on the same splits, one table, a paired bootstrap, plots.

Files written by :func:`write_report` (the ``report`` step):
    comparison.csv      long form: method, seed, task, kind, metric, value. Per-task rows carry every metric
                        that fits the task; rows with task "average" carry the kind averages (kind ID, OOD,
                        KI or overall; metric "main" = the mean of the per-task main metrics).
    comparison.md       rows = methods, columns = each task's main metric and the ID/OOD/KI/overall averages,
                        cells "mean ± sd" over seeds (sample sd, n-1); then the bootstrap table
                        (reference method minus each other method, per task, per kind and overall).
    kinds.png           grouped bars by kind, one bar per method (error bars = sd over seeds).
    deltas.png          per-task difference of seed means against ``cfg.eval.baseline_for_deltas``.
    bootstrap.csv       the bootstrap table in long form; results.json: everything returned, as JSON.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cdco_core.config import Config
from cdco_core.evaluation.bootstrap import PairedTask, bootstrap_replicates, summarize
from cdco_core.evaluation.metrics import METRIC_FUNCS
from cdco_core.evaluation.scoring import KINDS
from cdco_core.io import write_json, write_text

AVERAGE_TASK = "average"
SCOPES = (*KINDS, "overall")
REFERENCE = "cdco"  # the method the bootstrap tests against every other, when it is in the comparison


# ------------------------------------------------------------------------------------------ table
def long_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """comparison.csv rows from the ``evaluate`` steps' metrics."""
    rows = []
    for r in results:
        for task, ms in r["metrics"].items():
            rows += [(r["method"], r["seed"], task, r["kinds"][task], m, v) for m, v in ms.items()]
        rows += [(r["method"], r["seed"], AVERAGE_TASK, k, "main", v) for k, v in r["averages"].items()
                 if v is not None]
    return pd.DataFrame(rows, columns=["method", "seed", "task", "kind", "metric", "value"])


def _cell(values: pd.Series) -> str:
    if len(values) == 0:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f} (n=1)"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def summary_table(long: pd.DataFrame, methods: list[str], main_metric: dict[str, str],
                  kinds: dict[str, str]) -> tuple[pd.DataFrame, dict[str, dict[str, dict[str, float]]]]:
    """Rows = methods; columns = ``task (metric)`` for each task's main metric, then the kind averages.

    Returns:
        (table of "mean ± sd" strings, numbers: method -> column -> {"mean", "sd", "n"})
    """
    scopes = [k for k in KINDS if k in kinds.values()] + ["overall"]
    columns = [(f"{t} ({m})", (long.task == t) & (long.metric == m)) for t, m in main_metric.items()]
    columns += [(k, (long.task == AVERAGE_TASK) & (long.kind == k)) for k in scopes]
    cells, numbers = {}, {}
    for method in methods:
        mine = long.method == method
        cells[method], numbers[method] = {}, {}
        for name, sel in columns:
            v = long.loc[mine & sel, "value"]
            cells[method][name] = _cell(v)
            numbers[method][name] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                                     "n": len(v)}
    return pd.DataFrame.from_dict(cells, orient="index").rename_axis("method"), numbers


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
                    seeds: list[int], main_metric: dict[str, str], kinds: dict[str, str], samples: int,
                    seed: int) -> pd.DataFrame:
    """reference - other, per task, per kind and overall (formulas in :mod:`cdco_core.evaluation.bootstrap`)."""
    tasks = list(main_metric)
    rows = []
    for other in others:
        paired = [_paired_task(preds, t, main_metric[t], reference, other, seeds) for t in tasks]
        observed, reps = bootstrap_replicates(paired, samples, seed)  # (T,), (B, T)
        scopes = [(t, main_metric[t], [j]) for j, t in enumerate(tasks)]
        scopes += [(k, "main", [j for j, t in enumerate(tasks) if kinds[t] == k]) for k in KINDS]
        scopes += [("overall", "main", list(range(len(tasks))))]
        for scope, metric, cols in scopes:
            if not cols:
                continue
            n = sum(len(paired[j].y_true) for j in cols)
            res = summarize(float(observed[cols].mean()), reps[:, cols].mean(axis=1), n)
            rows.append({"reference": reference, "baseline": other, "scope": scope, "metric": metric,
                         **res.as_dict()})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------- markdown
def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _bootstrap_md(boot: pd.DataFrame) -> str:
    if boot.empty:
        return "_No bootstrap: the comparison has a single method._"
    view = pd.DataFrame({
        "baseline": boot.baseline, "scope": boot.scope, "metric": boot.metric,
        "Δ (ref − baseline)": boot.delta.map("{:+.3f}".format),
        "95% CI": [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(boot.ci_low, boot.ci_high, strict=True)],
        "p": boot.p_value.map(lambda p: "n/a" if np.isnan(p) else f"{p:.3f}"),
        "examples": boot.examples,
    })
    return _md_table(view)


def write_markdown(path: Path, cfg: Config, table: pd.DataFrame, boot: pd.DataFrame, seeds: list[int],
                   protocol: dict[str, str], reference: str | None, plots: list[str], wall_s: float) -> Path:
    """Write comparison.md: how it was measured, the table, the bootstrap table, protocol notes, plots, wall time."""
    lines = [
        f"# Comparison: profile `{cfg.profile}`",
        "",
        f"Seeds {seeds}; every method on the same splits and seeds. Cells: main metric per task, mean ± sd over "
        "seeds (sample sd); ID/OOD/KI = mean of the kind's per-task main metrics; overall = mean over all tasks.",
        "ID tasks: the method's trained heads on the eval split. OOD/KI tasks: a fresh linear head on frozen "
        f"features (task_ids=None), {cfg.eval.head_epochs} epochs, lr {cfg.eval.head_lr}, batch "
        f"{cfg.eval.head_batch_size}, seeded (docs/methods.md, \"Evaluation protocol\").",
        "",
        _md_table(table.reset_index()),
        "",
        f"## Paired bootstrap: {reference or '–'} against each baseline",
        "",
        f"{cfg.eval.bootstrap_samples} resamples of examples (paired across methods and seeds); two-sided p-value "
        "(shift method); percentile 95% CI of the difference.",
        "",
        _bootstrap_md(boot),
        "",
        "## Protocol per task",
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
                 t0: float) -> dict[str, Any]:
    """The comparison files in ``out`` from the evaluations of every method x seed.

    Args:
        cfg: the validated config (profile, bootstrap settings, evaluation budget for the text).
        results: the ``evaluate`` steps' metrics (``metrics.json``) with ``predictions`` = its Parquet path.
        out: the folder to write (see the module docstring).
        methods, seeds: the table's rows and the seeds, in order.
        t0: ``time.perf_counter()`` when the comparison started (for the wall time in comparison.md).

    Returns:
        {"csv", "md", "plots": [...] (file names in ``out``), "table": [{method, column: "mean ± sd"}], "numbers",
         "bootstrap", "methods", "seeds", "wall_s"}
    """
    from cdco_core.evaluation.plots import plot_kind_bars, plot_task_deltas

    first = results[0]
    order = sorted(first["kinds"], key=lambda t: KINDS.index(first["kinds"][t]))  # by kind, then as configured
    main_metric = {t: first["main_metric"][t] for t in order}
    kinds = {t: first["kinds"][t] for t in order}
    protocol = _protocol_notes(results, order)

    long = long_frame(results)
    table, numbers = summary_table(long, methods, main_metric, kinds)
    preds = {(r["method"], r["seed"]): pd.read_parquet(r["predictions"]) for r in results}
    reference = REFERENCE if REFERENCE in methods else methods[0]
    boot = bootstrap_table(preds, reference, [m for m in methods if m != reference], seeds, main_metric, kinds,
                           cfg.eval.bootstrap_samples, cfg.seed)

    csv_path = out / "comparison.csv"
    write_text(long.to_csv(index=False), csv_path)
    write_text(boot.to_csv(index=False), out / "bootstrap.csv")
    plots = _write_plots(out, cfg, numbers, methods, main_metric, kinds, plot_kind_bars, plot_task_deltas)
    wall = time.perf_counter() - t0
    md_path = write_markdown(out / "comparison.md", cfg, table, boot, seeds, protocol, reference, plots, wall)
    result = {"csv": csv_path.name, "md": md_path.name, "plots": [Path(p).name for p in plots],
              "table": table.reset_index().to_dict(orient="records"), "numbers": numbers,
              "bootstrap": boot.to_dict(orient="records"), "methods": methods, "seeds": seeds,
              "wall_s": round(wall, 2)}
    write_json(result, out / "results.json")
    return result


def _write_plots(out: Path, cfg: Config, numbers, methods, main_metric, kinds, kind_bars, task_deltas) -> list[str]:
    scopes = [k for k in KINDS if k in kinds.values()] + ["overall"]
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
