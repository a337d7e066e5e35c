"""The Prefect flow ``cdco`` (deployment ``full-pipeline``): it only orders the step tasks and passes results on.

    prepare_data -> embed_dataset (one per dataset) -> fit_manifold -> build_negative_index
        -> mac_stage (one per stage, in order, per method and seed) -> evaluate (per method and seed)
        -> report -> register_model

Tasks pass paths and digests, never tables or models; each is cached by the digests it reads
(:mod:`tasks._cache`). MLflow gets one parent run per pipeline run and one nested run per step, written
here in the flow's thread after each task returns (cached or not).
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks import embed, evaluate, manifold, negatives, prepare, register, report, train
from tasks._cache import output_digest, with_storage


class PipelineParams(BaseModel):
    """The flow's parameters, validated before any work: a known profile and ``key.sub=value`` overrides."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field("demo", min_length=1)
    overrides: list[str] = Field(default_factory=list)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str) -> str:
        from cdco_core.config import resolve_profile_path

        resolve_profile_path(v)  # ConfigError (a ValueError) lists the available profiles
        return v

    @field_validator("overrides")
    @classmethod
    def _key_value(cls, v: list[str]) -> list[str]:
        from cdco_core.config import parse_override

        for item in v:
            parse_override(item)
        return v


def _run(task: Any, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], bool]:
    """Call a task in the flow's process; (result, whether it came from the cache)."""
    state = task(*args, return_state=True, **kwargs)
    return state.result(), state.name == "Cached"


def _fan_out(task: Any, calls: list[dict[str, Any]], parallel: bool) -> list[tuple[dict[str, Any], bool]]:
    """Run independent calls: submitted to the task runner (Dask workers) when ``parallel``, else in order."""
    if not parallel:
        return [_run(task, **kw) for kw in calls]
    futures = [task.submit(**kw) for kw in calls]
    for f in futures:
        f.wait()
    return [(f.state.result(), f.state.name == "Cached") for f in futures]


@flow(name="cdco-steps", log_prints=True)
def pipeline_steps(cfg: dict[str, Any], parent_run_id: str, storage: str) -> dict[str, Any]:
    """The steps, in order, on the task runner the config chose (see :func:`cdco`)."""
    t = {name: with_storage(task, storage) for name, task in {
        "embed": embed.embed_dataset, "manifold": manifold.fit_manifold, "negatives": negatives.build_negatives,
        "train": train.train_stage, "evaluate": evaluate.evaluate, "report": report.report}.items()}
    parallel = cfg["orchestration"]["task_runner"] == "dask"
    steps: dict[str, Any] = {}

    prepared, _ = _run(prepare.prepare_data, cfg)
    prepare.log_prepare(parent_run_id, prepared)
    data = prepare.data_digests(prepared)
    steps["prepare_data"] = {"cached": False, "digest": output_digest(prepared)}

    emb_digests = _embed_all(t["embed"], cfg, parent_run_id, prepared, data, steps, parallel)
    man, cached = _run(t["manifold"], cfg, upstream={"embeddings": emb_digests})
    manifold.log_manifold(parent_run_id, man, cached)
    steps["fit_manifold"] = {"cached": cached, "digest": output_digest(man)}

    neg, cached = _run(t["negatives"], cfg, upstream={"manifold": steps["fit_manifold"]["digest"]})
    negatives.log_negatives(parent_run_id, neg, cached)
    steps["build_negative_index"] = {"cached": cached, "digest": output_digest(neg)}

    # contrastive stages read the negatives table and the OOD texts behind it (the negative bank)
    negs = {"table": steps["build_negative_index"]["digest"], "ood": prepare.data_digests(prepared, ("OOD",))}
    trained = _train_all(t["train"], cfg, parent_run_id, prepare.data_digests(prepared, ("ID",)), negs, steps)
    evals = _evaluate_all(t["evaluate"], cfg, parent_run_id, data, trained, steps, parallel)

    rep, cached = _run(t["report"], cfg, upstream={"evaluations": {k: v["digest"] for k, v in evals.items()}})
    report.log_report(parent_run_id, rep, cached)
    steps["report"] = {"cached": cached, "digest": output_digest(rep)}
    primary = trained[f"{cfg['eval']['methods'][0]}/{cfg['eval']['seeds'][0]}"]
    registered = register.register_model(cfg, parent_run_id, primary)
    return {"steps": steps, "evaluations": {k: v["averages"] for k, v in evals.items()},
            "report": {k: rep[k] for k in ("csv", "md", "plots") if k in rep}, "registered": registered}


def _embed_all(embed_task: Any, cfg: dict[str, Any], parent_run_id: str, prepared: dict[str, Any],
               data: dict[str, str], steps: dict[str, Any], parallel: bool) -> dict[str, str]:
    """One task per ID/OOD dataset, keyed by that dataset's digest alone; returns {dataset: shards digest}."""
    names = embed.embedded_datasets(cfg, prepared)
    calls = [{"cfg": cfg, "dataset": n, "upstream": {"data": data[n]}} for n in names]
    embedded = _fan_out(embed_task, calls, parallel)
    embed.log_embed(parent_run_id, embedded)
    digests = {}
    for n, (res, cached) in zip(names, embedded, strict=True):
        digests[n] = output_digest(res)
        steps[f"embed/{n}"] = {"cached": cached, "digest": digests[n]}
    return digests


def _train_all(stage_task: Any, cfg: dict[str, Any], parent_run_id: str, id_data: dict[str, str],
               negatives: dict[str, Any], steps: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every method's stages in order, per seed; each stage's key chains the previous stage's digest."""
    trained: dict[str, dict[str, Any]] = {}
    for method in cfg["eval"]["methods"]:
        stages, overrides, reads_negatives = train.method_stages(cfg, method)
        for seed in cfg["eval"]["seeds"]:
            previous, last = None, {}
            for i, stage in enumerate(stages):
                upstream = {"data": id_data, "previous": previous, "overrides": overrides,
                            "negatives": negatives if reads_negatives[i] else None}
                res, cached = _run(stage_task, cfg, method, seed, i, stage, upstream=upstream)
                train.log_stage(parent_run_id, method, seed, i, stage, res, cached)
                previous = output_digest(res)
                steps[f"mac_stage/{method}/{seed}/{i}-{stage['name']}"] = {"cached": cached, "digest": previous}
                last = res
            trained[f"{method}/{seed}"] = {"method": method, "seed": seed, "digest": previous, "result": last}
    return trained


def _evaluate_all(eval_task: Any, cfg: dict[str, Any], parent_run_id: str, data: dict[str, str],
                  trained: dict[str, dict[str, Any]], steps: dict[str, Any], parallel: bool) -> dict[str, Any]:
    keys = list(trained)
    calls = [{"cfg": cfg, "method": trained[k]["method"], "seed": trained[k]["seed"],
              "upstream": {"trained": trained[k]["digest"], "data": data}} for k in keys]
    out = {}
    for k, (res, cached) in zip(keys, _fan_out(eval_task, calls, parallel), strict=True):
        evaluate.log_evaluate(parent_run_id, res, cached)
        steps[f"evaluate/{k}"] = {"cached": cached, "digest": output_digest(res)}
        out[k] = {"digest": steps[f"evaluate/{k}"]["digest"], "averages": res.get("averages")}
    return out


def task_runner(cfg: Any) -> Any:
    """Prefect's thread pool, or prefect-dask's DaskTaskRunner (an existing scheduler, or a local cluster)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    o = cfg.orchestration
    if o.task_runner != "dask":
        return ThreadPoolTaskRunner(max_workers=1)  # steps already use every core through torch
    from prefect_dask import DaskTaskRunner

    if o.dask_address:
        return DaskTaskRunner(address=o.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": o.dask_workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


@flow(name="cdco", log_prints=True, validate_parameters=True)
def cdco(profile: str = "demo", overrides: list[str] | None = None) -> dict[str, Any]:
    """The whole pipeline for one profile; parameters are validated by :class:`PipelineParams`.

    Fails before any work when the config is invalid or the MLflow tracking store cannot be reached.
    """
    from cdco_core import tracking
    from cdco_core.config import cdco_home, config_to_yaml, load_config

    params = PipelineParams(profile=profile, overrides=list(overrides or []))
    cfg = load_config(params.profile, params.overrides)
    flow_run_id = _flow_run_id()
    tags = {"prefect.flow_run_id": flow_run_id or "", "cdco.profile": cfg.profile,
            "cdco.overrides": " ".join(params.overrides)[:4000]}
    with tracking.pipeline_run(cfg.orchestration.experiment, f"cdco-{cfg.profile}", tags) as run_id:
        _tag_prefect_run(flow_run_id, run_id)
        _log_config(cfg, params, config_to_yaml(cfg))
        storage = str(cdco_home() / "cache" / "prefect")
        steps = pipeline_steps.with_options(task_runner=task_runner(cfg))
        result = steps(cfg.model_dump(mode="json"), run_id, storage)
    return {"profile": cfg.profile, "mlflow_run_id": run_id, "flow_run_id": flow_run_id, **result}


def _log_config(cfg: Any, params: PipelineParams, resolved_yaml: str) -> None:
    import mlflow

    mlflow.log_text(resolved_yaml, "config/resolved.yaml")
    mlflow.log_params({"profile": cfg.profile, "overrides": " ".join(params.overrides)[:500] or "-",
                       "methods": ",".join(cfg.eval.methods), "seeds": ",".join(map(str, cfg.eval.seeds)),
                       "model.source": cfg.model.source, "task_runner": cfg.orchestration.task_runner})


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


def _tag_prefect_run(flow_run_id: str | None, mlflow_run_id: str) -> None:
    """Tag the Prefect flow run with the MLflow run id (tag ``mlflow:<id>`` and label ``mlflow.run_id``)."""
    if not flow_run_id:
        return
    from prefect import get_client
    from prefect.runtime import flow_run

    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run_id, tags=[*flow_run.tags, f"mlflow:{mlflow_run_id}"])
        client.update_flow_run_labels(flow_run_id, {"mlflow.run_id": mlflow_run_id})


def run_pipeline(profile: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the flow in this process (``cdco run``): against ``$PREFECT_API_URL`` if set, else Prefect's local
    mode (a temporary server on a SQLite database under ``CDCO_HOME/prefect``). No server is needed.

    Raises:
        InputError: bad profile or override, unreachable tracking store: before any work.
    """
    from cdco_core import tracking
    from cdco_core.config import load_config

    load_config(profile, list(overrides or []))
    tracking.check_tracking()
    with local_prefect_settings():
        return cdco(profile=profile, overrides=list(overrides or []))


def local_prefect_settings() -> Any:
    """Settings for a local run: PREFECT_HOME under CDCO_HOME unless the user set one; no telemetry."""
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

    from cdco_core.config import cdco_home

    updates: dict[Any, Any] = {PREFECT_SERVER_ANALYTICS_ENABLED: False}
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        # The temporary server's default 20 s start budget is too short on a busy 2-core machine.
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 180
    if "PREFECT_HOME" not in os.environ:
        updates[PREFECT_HOME] = str(cdco_home() / "prefect")
    return temporary_settings(updates=updates)
