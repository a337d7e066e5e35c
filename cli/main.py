"""The ``cdco`` command. Thin: parse arguments, call one function, print.

Heavy imports (torch, transformers, prefect, mlflow) happen inside the commands, so ``cdco --help`` is fast.
Bad input of any kind (:class:`cdco_core.errors.InputError`) prints one message and exits with code 2.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cdco_core.errors import InputError

app = typer.Typer(help="cdco: cross-domain contrastive optimisation of adapters, as a Prefect + MLflow pipeline.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect and validate task data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
cache_app = typer.Typer(help="Manage CDCO_HOME's caches.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

Profile = Annotated[str, typer.Option("--profile", "-p", help="conf/<NAME>.yaml, or a path to a YAML file")]
Sets = Annotated[list[str] | None, typer.Option("--set", "-s", help="override: key.sub=value (repeatable)")]
AsJson = Annotated[bool, typer.Option("--json", help="print the full result as JSON instead of the summary")]


def _user_errors(fn):
    """Turn InputError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _load(profile: str, sets: list[str] | None):
    """The profile, validated once for this process (every command passes the object on from here)."""
    from cdco_core.profile import load_profile

    return load_profile(profile, sets or [])


def _methods(value: str | None) -> list[str] | None:
    from cdco_core.methods import expand_methods

    return expand_methods([x.strip() for x in value.split(",") if x.strip()]) if value else None


def _writable_home() -> None:
    """A read-only or full CDCO_HOME is one line and exit 2 here, not an OSError deep inside a step."""
    from cdco_core.io import check_home_writable
    from cdco_core.paths import cdco_home

    check_home_writable(cdco_home())


@app.command()
@_user_errors
def run(profile: Profile = "demo", set_: Sets = None,
        methods: Annotated[str | None,
                           typer.Option(help="comma-separated methods, or all; default from config")] = None,
        as_json: AsJson = False):
    """Run the whole pipeline (Prefect flow 'cdco', local mode: no server needed)."""
    import time

    t0 = time.perf_counter()
    overrides = list(set_ or [])
    if methods:
        overrides.append(f"eval.methods=[{methods}]")
    cfg = _load(profile, overrides)  # validated before any work, once
    _writable_home()
    from cli.progress import Bars
    from flows.full_pipeline import run_pipeline
    from tasks.progress import reporting

    # a bar per training stage that the flow's tasks compute in this process
    with Bars() as bars, reporting(bars.on_step if bars.enabled else None):
        result = run_pipeline(cfg, profile=profile, overrides=overrides)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        from cli.summary import run_summary

        typer.echo("\n" + run_summary(result, time.perf_counter() - t0))


@app.command()
@_user_errors
def step(name: Annotated[str, typer.Argument(help="prepare | embed | manifold | negatives | train | evaluate")],
         profile: Profile = "smoke", set_: Sets = None):
    """Run one pipeline step for the config's first method and seed (and what it reads, from cache when
    unchanged), without Prefect. Prints the step's records."""
    cfg = _load(profile, set_)
    _writable_home()
    from cdco_core.plan import build_plan
    from cdco_core.runner import STEP_NAMES, run_plan

    if name not in STEP_NAMES:
        raise InputError(f"unknown step {name!r}; available: {', '.join(STEP_NAMES)}")
    plan = build_plan(cfg, cfg.eval.methods[:1], [cfg.seed])
    targets = [n.id for n in plan.of_step(name)]
    if not targets:
        raise InputError(f"method {cfg.eval.methods[0]!r} has no {name!r} step in this profile "
                         "(it uses no ODMS negatives)")
    records = run_plan(plan, targets)
    typer.echo(json.dumps({t: records[t].as_dict() for t in targets}, indent=2, default=str))


@app.command()
@_user_errors
def compare(profile: Profile = "demo", set_: Sets = None,
            methods: Annotated[str | None, typer.Option(help="comma-separated registry names, or all")] = None,
            seeds: Annotated[str | None, typer.Option(help="comma-separated seeds, e.g. 0,1,2")] = None,
            out: Annotated[Path | None, typer.Option(help="output folder (default under CDCO_HOME)")] = None,
            jobs: Annotated[int, typer.Option(min=1, help="method x seed runs in parallel processes")] = 1,
            tuned: Annotated[Path | None, typer.Option(help="best settings from `cdco tune` (YAML method -> "
                                                       "key=value list), each applied to its method")] = None,
            track: Annotated[bool, typer.Option(help="log the comparison to MLflow (a parent run, a child run per "
                                                "method x seed, the report's files)")] = True,
            as_json: AsJson = False):
    """Train and evaluate several methods on the same splits and seeds; write comparison.csv/.md and plots."""
    import time

    t0 = time.perf_counter()
    cfg = _load(profile, set_)
    _writable_home()
    from cdco_core.runner import comparison_plan, run_comparison
    from cli.progress import Bars

    s = [int(x) for x in seeds.split(",")] if seeds else None
    settings = None
    if tuned is not None:
        from cdco_core.methods import METHODS
        from cdco_core.tuning import read_tuned

        settings = read_tuned(tuned, METHODS.names())  # an unknown method in the file: one line, exit 2
    plan = comparison_plan(cfg, _methods(methods), s, settings)  # unknown method, bad seeds: before any work
    if track:
        from tasks import tracking

        tracking.check_tracking()  # an unreachable store fails now, not after the training
        tracking.fail_orphaned_runs(cfg.orchestration.experiment)
    records = {}
    with Bars(plan, nodes=True, logs=True) as bars:
        def done(node, record) -> None:
            records[node.id] = record
            bars.on_done(node, record)

        result = run_comparison(cfg, out_dir=out, jobs=jobs, plan=plan, on_done=done,
                                on_step=bars.on_step if bars.enabled else None)
    if track:
        from tasks.compare import log_comparison

        result |= log_comparison(cfg, plan, records, result,
                                 {"jobs": jobs, "tuned": str(tuned) if tuned is not None else None})
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        from cli.summary import compare_summary

        typer.echo("\n" + compare_summary(result, time.perf_counter() - t0))


@app.command()
@_user_errors
def tune(profile: Profile = "smoke", set_: Sets = None,
         method: Annotated[str, typer.Option(help="the method to tune (a registry name)")] = "lora_mtl",
         trials: Annotated[int, typer.Option(min=1, help="complete trials the study ends with; give every "
                                             "method of a table the same number")] = 8,
         seed: Annotated[int, typer.Option(min=0, help="the sampler's seed and the trials' training seed")] = 0,
         steps_fraction: Annotated[float, typer.Option(help="each trial trains every stage for this fraction "
                                                       "of its steps")] = 0.25,
         storage: Annotated[str | None, typer.Option(help="Optuna storage URL (default $CDCO_OPTUNA_STORAGE, else "
                                                     "sqlite under CDCO_HOME/tuning)")] = None,
         out: Annotated[Path | None, typer.Option(help="YAML the best settings are merged into (default "
                                                  "CDCO_HOME/tuning/<profile>.yaml)")] = None,
         track: Annotated[bool, typer.Option(help="log the study and each trial to MLflow")] = True):
    """Tune one method's settings on the dev splits (a seeded, resumable Optuna study; docs/methods.md, "Tuning").
    The best trial's settings go to a YAML file that `cdco compare --tuned FILE` applies."""
    cfg = _load(profile, set_)
    _writable_home()
    from cdco_core import tuning
    from cdco_core.methods import METHODS
    from cdco_core.paths import cdco_home

    METHODS.entry(method)  # an unknown method: one line listing the registered ones
    tuning.check_search_space(cfg, method)
    tuning.shortened(cfg, steps_fraction)  # a bad fraction fails here, before the study is created
    target = out or cdco_home() / "tuning" / f"{cfg.profile}.yaml"
    runs = _TuningRuns(cfg, method, trials, seed, steps_fraction) if track else None

    def score(overrides: list[str]) -> float:
        value, outputs = tuning.dev_score(cfg, method, overrides, seed=seed, steps_fraction=steps_fraction)
        if runs is not None:
            runs.trial(overrides, value, outputs)
        typer.echo(f"trial {' '.join(overrides)} -> dev primary {value:.4f}", err=True)
        return value

    try:
        study = tuning.run_study(cfg, method, score, trials, seed=seed, storage=storage)
    finally:
        if runs is not None:
            runs.close()
    best = tuning.best_overrides(study)
    path = tuning.write_best(target, {method: best})
    typer.echo(json.dumps({"study": tuning.study_name(cfg.profile, method), "trials": trials,
                           "best_value": study.best_value, "best": best, "tuned_file": str(path)}, indent=2))


class _TuningRuns:
    """One MLflow parent run per `cdco tune` call, one child run per trial it scores (params = the overrides)."""

    def __init__(self, cfg, method: str, trials: int, seed: int, steps_fraction: float) -> None:
        from tasks import tracking

        self._tracking = tracking
        self._ctx = tracking.pipeline_run(cfg.orchestration.experiment, f"tune {cfg.profile}/{method}",
                                          {"cdco.kind": "tune", "cdco.profile": cfg.profile, "cdco.method": method,
                                           "cdco.trials": str(trials), "cdco.seed": str(seed),
                                           "cdco.steps_fraction": str(steps_fraction)})
        self.parent = self._ctx.__enter__()
        self.n = 0

    def trial(self, overrides: list[str], value: float, outputs: dict) -> None:
        import mlflow

        self.n += 1
        with self._tracking.step_run(self.parent, f"trial {self.n}", tags={"cdco.kind": "tune-trial"}):
            mlflow.log_params(dict(o.split("=", 1) for o in overrides))
            mlflow.log_metric("dev_primary", value)
            self._tracking.log_flat_metrics(outputs.get("averages") or {}, prefix="dev")

    def close(self) -> None:
        self._ctx.__exit__(*sys.exc_info())


@app.command()
@_user_errors
def bench(name: Annotated[str, typer.Argument(help="embed | negatives | manifold | train | pipeline")],
          quick: Annotated[bool, typer.Option(help="smaller inputs, for a fast look")] = False):
    """Run a benchmark; prints one JSON object (ours vs a peer measured in the same run)."""
    from bench import run_bench

    typer.echo(json.dumps(run_bench(name, quick=quick), indent=2))


@data_app.command("check")
@_user_errors
def data_check(tasks: Annotated[Path | None, typer.Option("--tasks", help="a task spec YAML file")] = None,
               profile: Annotated[str | None, typer.Option("--profile", "-p")] = None, set_: Sets = None):
    """Load and validate every task; print rows, label counts and digest per task and split."""
    from cdco_core.data import load_task, read_task_file
    from cdco_core.data.checks import check_task_set, check_task_specs
    from cdco_core.data.spec import DataConfig

    if tasks is None and profile is None:
        raise typer.BadParameter("give --tasks FILE.yaml or --profile NAME")
    if tasks is not None:
        data_cfg = DataConfig()
        specs = read_task_file(tasks)
    else:
        cfg = _load(profile, set_)
        data_cfg = cfg.data
        from cdco_core.data import task_specs

        specs = task_specs(data_cfg)
    check_task_specs(specs)
    _writable_home()  # loading writes the canonical tables under CDCO_HOME/cache/tasks
    loaded = [load_task(spec, data_cfg) for spec in specs]
    check_task_set(loaded)  # the same checks `cdco run` applies before any work
    if tasks is None:
        from cdco_core.evaluation.protocols import check_protocols

        check_protocols(cfg, loaded)  # roles, zero-shot entries, probe budgets: the profile's own
    for task in loaded:
        spec = task.spec
        typer.echo(
            f"{task.name}  kind={spec.kind}  type={spec.type}  metric={spec.metric_name}  digest={task.digest[:16]}"
        )
        for split, df in task.splits.items():
            if spec.type == "regression":
                counts = f"label mean={df['label'].mean():.3f} sd={df['label'].std():.3f}"
            elif task.label_names:
                vc = df["label"].value_counts().sort_index()
                counts = ", ".join(f"{task.label_names[i]}={n}" for i, n in vc.items())
            else:
                counts = f"choices={df['choices'].map(len).max()}"
            made = f"  (made from {task.split_record[split]['from']})" if split in task.split_record else ""
            typer.echo(f"  {split:<11} rows={len(df):<7} {counts}  digest={task.digests[split][:16]}{made}")
        for split, reasons in task.dropped.items():
            detail = ", ".join(f"{k}={v}" for k, v in reasons.items())
            typer.echo(f"  {split:<11} dropped {sum(reasons.values())} invalid row(s): {detail}"
                       "  (on_invalid_rows: drop)")


@cache_app.command("prune")
@_user_errors
def cache_prune(
    older_than: Annotated[float, typer.Option("--older-than", min=0,
                                              help="hours without a write before a leftover is removed")] = 24,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would go, remove nothing")] = False,
):
    """Remove stale `*.partial` folders and `.tmp-*` leftovers under CDCO_HOME; list them and the bytes freed."""
    from cdco_core.paths import cdco_home
    from cdco_core.prune import find_leftovers, remove_leftovers

    found = find_leftovers(cdco_home(), older_than)
    for item in found:
        typer.echo(f"{item.bytes:>12}  {item.age_hours:7.1f} h  {item.path}")
    freed = sum(i.bytes for i in found) if dry_run else remove_leftovers(found)
    typer.echo(f"{'would free' if dry_run else 'freed'} {freed} bytes ({len(found)} items) under {cdco_home()}")


@app.command()
def version():
    """Print the version."""
    from cdco_core import __version__

    typer.echo(__version__)


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
