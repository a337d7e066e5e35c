"""``run_comparison``: every method x seed on the same splits, one table, a paired bootstrap, plots.

Outputs in ``out_dir`` (default ``CDCO_HOME/compare/<profile>/``):
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

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cdco_core.config import Config, cdco_home
from cdco_core.errors import InputError
from cdco_core.evaluation.bootstrap import PairedTask, bootstrap_replicates, summarize
from cdco_core.evaluation.metrics import METRIC_FUNCS
from cdco_core.evaluation.pipeline import KINDS, load_checked_tasks, method_config
from cdco_core.io import write_json, write_text

AVERAGE_TASK = "average"
SCOPES = (*KINDS, "overall")
REFERENCE = "cdco"  # the method the bootstrap tests against every other, when it is in the comparison


# ----------------------------------------------------------------------------------------- inputs
def resolve_methods(cfg: Config, methods: list[str] | None) -> list[str]:
    """``methods`` or ``cfg.eval.methods``, each checked against the registry (InputError lists the names).

    ``["all"]`` stands for every registered method, in registry order (CDCO, baselines, CA-MTL, EGO-PLM, ablations).
    """
    from cdco_core.methods import expand_methods, get_method

    names = expand_methods(methods if methods is not None else cfg.eval.methods)
    if not names:
        raise InputError("no methods to compare; give --methods a,b or set eval.methods")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"method(s) {dup} given more than once")
    for n in names:
        get_method(n)
    return names


def resolve_seeds(cfg: Config, seeds: list[int] | None) -> list[int]:
    """``seeds`` or ``cfg.eval.seeds``: at least one, non-negative, no repeats."""
    s = list(seeds if seeds is not None else cfg.eval.seeds)
    if not s or any((not isinstance(x, int)) or x < 0 for x in s) or len(set(s)) != len(s):
        raise InputError(f"seeds must be distinct non-negative integers, at least one; got {s}")
    return s


# ------------------------------------------------------------------------------------------ table
def long_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """comparison.csv rows from evaluate_step results."""
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


# -------------------------------------------------------------------------------------------- run
def _validate_all(cfg: Config, methods: list[str], tasks: list[str] | None) -> list[str]:
    """Check every method's config and tasks before any training starts.

    Returns:
        The task names in table order: by kind (ID, OOD, KI), then as configured.
    """
    from cdco_core.methods import get_method

    order: list[str] = []
    for m in methods:
        checked = load_checked_tasks(method_config(cfg, get_method(m)), tasks)
        order = [t.name for t in sorted(checked, key=lambda t: KINDS.index(t.spec.kind))]
    return order


def _protocol_notes(results: list[dict[str, Any]], order: list[str]) -> dict[str, str]:
    """Per task: the protocol when every method used the same one, else "method: protocol" for each."""
    notes = {}
    for t in order:
        used = {r["method"]: r["protocol"][t] for r in results}
        same = set(used.values())
        notes[t] = same.pop() if len(same) == 1 else ", ".join(f"{m}: {p}" for m, p in used.items())
    return notes


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _prepare_upstream(cfg: Config, methods: list[str], seed: int) -> None:
    """Build (or verify) every method's ODMS negatives here, once, before workers start: two workers needing the
    same embeddings, manifold or index would otherwise both compute them."""
    from cdco_core.methods import get_method
    from cdco_core.training.pipeline import plan_training

    for m in methods:
        plan_training(method_config(cfg, get_method(m)), m, seed)


def evaluate_all(cfg: Config, methods: list[str], seeds: list[int], tasks: list[str] | None = None,
                 jobs: int = 1, threads_per_job: int | None = None) -> list[dict[str, Any]]:
    """``evaluate_step`` for every method x seed, in order; in ``jobs`` spawned processes when ``jobs > 1``.

    Each worker runs ``threads_per_job`` torch threads (default: the CPU count divided by ``jobs``, at least 1).
    The rationale: a single process leaves cores idle in its serial parts (tokenising, head fits, Parquet); two
    one-thread workers do not (not benchmarked against one two-thread process). Results are the same as in order,
    given the same thread count: each method x seed is seeded on its own and its outputs are written atomically.
    """
    from cdco_core.evaluation.pipeline import evaluate_step

    pairs = [(m, s) for m in methods for s in seeds]
    if jobs < 1:
        raise InputError(f"jobs must be at least 1; got {jobs}")
    if jobs == 1 or len(pairs) == 1:
        return [evaluate_step(cfg, m, s, tasks) for m, s in pairs]
    _prepare_upstream(cfg, methods, seeds[0])
    threads = threads_per_job or max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    with ProcessPoolExecutor(min(jobs, len(pairs)), mp_context=ctx, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(evaluate_step, cfg, m, s, tasks) for m, s in pairs]
        return [f.result() for f in futures]


def run_comparison(cfg: Config, methods: list[str] | None = None, seeds: list[int] | None = None,
                   out_dir: str | Path | None = None, tasks: list[str] | None = None, jobs: int = 1,
                   threads_per_job: int | None = None) -> dict[str, Any]:
    """Train (cached) and evaluate every method x seed; write the table, bootstrap and plots.

    Args:
        cfg: validated config (its profile names the default output folder).
        methods: registry names; default ``cfg.eval.methods``.
        seeds: default ``cfg.eval.seeds``.
        out_dir: default ``CDCO_HOME/compare/<profile>/``.
        tasks: restrict evaluation to these task names (default: all configured).
        jobs, threads_per_job: parallel worker processes and torch threads in each (:func:`evaluate_all`).

    Returns:
        {"csv", "md", "plots": [...], "table": [{method, column: "mean ± sd"}], "numbers", "bootstrap",
         "out_dir", "wall_s"}

    Raises:
        InputError: unknown method or task, a metric that does not fit, a missing split: before any training.
    """
    from cdco_core.evaluation.plots import plot_kind_bars, plot_task_deltas

    t0 = time.perf_counter()
    methods = resolve_methods(cfg, methods)
    seeds = resolve_seeds(cfg, seeds)
    order = _validate_all(cfg, methods, tasks)
    out = Path(out_dir) if out_dir is not None else cdco_home() / "compare" / cfg.profile
    out.mkdir(parents=True, exist_ok=True)

    results = evaluate_all(cfg, methods, seeds, tasks, jobs, threads_per_job)
    main_metric = {t: results[0]["main_metric"][t] for t in order}
    kinds = {t: results[0]["kinds"][t] for t in order}
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
    result = {"csv": str(csv_path), "md": str(md_path), "plots": plots, "out_dir": str(out),
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
