"""MLflow lineage of a ``train`` node: inputs (ID tasks, previous stage, negatives), settings, metrics, and the
stage's adapters as an MLflow LoggedModel carrying the weights' sha256.

The LoggedModel of a stage is uploaded once per content (its cache key): a cached or repeated stage links the
model an earlier run logged. A stage that will be registered (:mod:`tasks.register`) is logged as the loadable
pyfunc package (base encoder, weights, config, heads, signature and input example); any other stage as its
weights and ``meta.json`` only.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.lineage import Lineage

MODEL_TYPE = "cdco-adapters"


def model_name(meta: dict[str, Any]) -> str:
    """The LoggedModel's name: ``<method>-seed<s>-<i>-<stage>``."""
    return f"{meta['method']}-seed{meta['seed']}-{meta.get('index', 0)}-{meta['stage']['name']}"


def find_model(experiment_id: str, key: str, pyfunc: bool) -> Any:
    """A READY LoggedModel of this experiment for the stage output ``key`` (a pyfunc package when asked)."""
    import mlflow

    found = mlflow.search_logged_models(experiment_ids=[experiment_id], filter_string=f"tags.`cdco.key` = '{key}'",
                                        output_format="list")
    for m in found:
        if str(m.status) not in ("READY", "LoggedModelStatus.READY"):
            continue
        if pyfunc and m.tags.get("cdco.package") != "pyfunc":
            continue
        return m
    return None


def _contexts(rec: Any, split: str | None) -> str:
    if rec.step == "prepare":
        if rec.outputs.get("kind") != "ID":
            return "input"  # OOD texts: the negatives' text, no head
        return {"train": "training", "dev": "dev"}.get(split or "", "evaluation")
    return "training"  # the previous stage, the negatives


def _upstream_splits(rec: Any) -> list[str]:
    """The splits a stage read: an ID task's train split, its eval split and its dev split where it has one (the
    stage's own check and ``train.dev_select`` score it). Logged here, through ``lineage.log_dataset``, so the
    metrics linked to the dev split below find it among the run's inputs: otherwise ``mlflow.log_metrics`` logs it
    itself, without the retry that two runs logging the same dataset at once need."""
    from tasks import lineage

    if rec.outputs.get("kind") != "ID":
        return ["train"]
    splits = rec.outputs.get("splits") or {}
    return ["train", lineage.eval_split(rec)] + (["dev"] if "dev" in splits else [])


def log_stage(lin: Lineage, node_id: str, package: Callable[[Path], dict[str, Any]] | None = None) -> str:
    """Nested run named by the node (``train[<method>/seed<s>/<i>-<stage>]``); returns its LoggedModel's id.

    ``package(tmp)``: the ``mlflow.pyfunc.log_model`` arguments (artifacts, signature, input example) of a stage
    that is to be registered; files it writes go under ``tmp``.
    """
    import mlflow
    from mlflow.entities import LoggedModelOutput

    from cdco_core.training.trainer import stage_check_split
    from tasks import lineage, tracking

    record = lin.records[node_id]
    meta = json.loads(record.path("meta.json").read_text(encoding="utf-8"))
    stage, sha = meta["stage"], meta["weights_sha256"]
    with lineage.step_run(lin, [node_id], node_id, {"cdco.weights_sha256": sha}) as run_id:
        params = {"method": meta["method"], "seed": meta["seed"], "stage": stage["name"], "stage_index":
                  meta.get("index", 0), "steps": stage["steps"], "lr": stage["lr"],
                  "groups": ",".join(stage["groups"]), "space": stage["space"],
                  **{f"loss_weight.{k}": v for k, v in stage["losses"].items()}}
        mlflow.log_params(params)
        inputs = lineage.log_upstream(
            lin, node_id, contexts=_contexts,
            splits=_upstream_splits)

        model = find_model(lin.experiment_id, record.key, pyfunc=package is not None)
        if model is not None:  # logged before (a cached or repeated stage): link it, upload nothing
            model_id = model.model_id
            mlflow.log_outputs([LoggedModelOutput(model_id, step=0)])
            mlflow.set_tag(lineage.ARTIFACTS_RUN, model.source_run_id or "")
        else:
            tags = {"cdco.key": record.key, "cdco.weights_sha256": sha, "cdco.method": meta["method"],
                    "cdco.seed": str(meta["seed"]), "cdco.stage": stage["name"], "cdco.node": node_id,
                    "cdco.package": "pyfunc" if package else "weights"}
            model_id = _log_model(model_name(meta), record, tags, {k: str(v) for k, v in params.items()}, package)
            mlflow.set_tag(lineage.UPLOADED, "uploaded")
        lin.models[node_id] = model_id
        mlflow.set_tag("cdco.logged_model_id", model_id)

        # ID metrics on each task's dev split (else its eval split), linked to the model and that split's dataset
        for task, values in (meta.get("metrics") or {}).items():
            rec = next((lin.records[i] for i in lin.node(node_id).inputs if lin.records[i].label == task
                        and lin.records[i].step == "prepare"), None)
            split = stage_check_split(rec.outputs["splits"], lineage.eval_split(rec)) if rec is not None else None
            ds = lineage.task_split_dataset(rec, split)[0] if rec is not None else None
            lineage.log_linked_metrics({f"id.{task}.{k}": v for k, v in values.items()}, model_id, ds)
        lineage.log_linked_metrics({f"train.{k}": v for k, v in (meta.get("train") or {}).items()}, model_id)
        select = meta.get("dev_select")
        if select:  # train.dev_select: the dev curve per check, and which weights the stage kept
            for check in select["curve"]:
                tracking.log_flat_metrics({"score": check["score"], **check["per_task"]}, prefix="dev",
                                          step=int(check["step"]))
            mlflow.set_tags({"cdco.dev_select.kept": select["kept"], "cdco.dev_select.best_step":
                             str(select["best_step"]), "cdco.dev_select.stopped_early": str(select["stopped_early"])})
        for i, row in enumerate(meta.get("history", [])):
            tracking.log_flat_metrics({k: v for k, v in row.items() if k != "step"},
                                      prefix="step", step=int(row.get("step", i)))
        held = model.source_run_id if model is not None else run_id
        where = f"LoggedModel [{model_name(meta)}]({lineage.model_url(lin.experiment_id, model_id)})"
        if held != run_id:
            where += f", logged by [run {held[:8]}]({lineage.run_url(lin.experiment_id, held)})"
        out = lineage.output_row(lin, node_id, "weights.safetensors", sha, where)
        lineage.describe(f"{node_id}: stage {stage['name']} of {meta['method']}, seed {meta['seed']}", inputs, [out],
                         digest=record.digest)
    return model_id


def _log_model(name: str, record: Any, tags: dict[str, str], params: dict[str, str],
               package: Callable[[Path], dict[str, Any]] | None) -> str:
    """A new LoggedModel of the active run: the pyfunc package, or the stage's weights and meta.json."""
    import mlflow
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    if package is not None:
        from tasks.register import PYFUNC_CODE

        with tempfile.TemporaryDirectory() as tmp:
            info = mlflow.pyfunc.log_model(name=name, python_model=str(PYFUNC_CODE), model_type=MODEL_TYPE,
                                           tags=tags, params=params, **package(Path(tmp)))
        return info.model_id
    model = mlflow.initialize_logged_model(name=name, tags=tags, params=params, model_type=MODEL_TYPE)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for f in ("weights.safetensors", "meta.json"):
                shutil.copyfile(record.path(f), Path(tmp) / f)
            mlflow.MlflowClient().log_model_artifacts(model.model_id, tmp)
    except Exception:
        mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    mlflow.log_outputs([LoggedModelOutput(model.model_id, step=0)])
    return model.model_id
