"""Step 8: register the trained adapters as versions of ``cdco-<profile>`` in the MLflow model registry.

What is registered: the last stage of the primary method (the config's first method, first seed), and, when a run
compares several methods, the last stage of the best one (highest mean ``overall`` score over seeds; its best seed)
under the alias ``champion``. The stage's run logged it as a LoggedModel in the pyfunc format (:mod:`tasks.train`
calls :func:`package` for these stages), so a version points at that run and that LoggedModel, and its metrics
(training and evaluation, linked to their datasets) are the model's own.

A version carries the weights' sha256, the method and seed, the training and evaluation numbers as tags, a
signature and an input example. Alias ``latest_run`` names the primary version of the most recent pipeline run
(``latest`` itself is reserved by MLflow: ``models:/cdco-<profile>/latest`` is the newest version).

Idempotent: a version whose weights have the same sha256 is reused, so an unchanged re-run adds no version; the
``register_model`` run is written every time and names the versions either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cdco_core.cache import Record
from cdco_core.io import file_lock
from cdco_core.paths import cdco_home

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
LATEST_ALIAS = "latest_run"
CHAMPION_ALIAS = "champion"


def registered_name(profile: str) -> str:
    return f"cdco-{profile}"


def champion(plan: Any, records: dict[str, Record]) -> tuple[str, int] | None:
    """(method, seed) of the best model of a comparison (several methods), else None.

    The method with the highest mean ``overall`` over its seeds, then its seed with the highest ``overall``.
    """
    if len(plan.methods) < 2:
        return None
    scores: dict[str, dict[int, float]] = {}
    for n in plan.of_step("evaluate"):
        overall = (records[n.id].outputs.get("averages") or {}).get("overall")
        if isinstance(overall, int | float):
            scores.setdefault(n.method, {})[n.params["seed"]] = float(overall)
    if not scores:
        return None
    method = max(plan.methods, key=lambda m: (sum(scores[m].values()) / len(scores[m])) if scores.get(m)
                 else float("-inf"))
    seed = max(scores[method], key=lambda s: scores[method][s])
    return method, seed


def registered_stages(cfg: Any, plan: Any, records: dict[str, Record]) -> dict[str, list[str]]:
    """{train node id: its roles ("primary", "champion")} of the stages to register; empty when registration is
    off."""
    if not cfg.orchestration.register_model:
        return {}
    roles = {plan.last_stage(plan.methods[0], plan.seeds[0]).id: ["primary"]}
    best = champion(plan, records)
    if best is not None:
        roles.setdefault(plan.last_stage(*best).id, []).append("champion")
    return roles


def id_task_records(plan: Any, records: dict[str, Record], node_id: str) -> list[Record]:
    """The ID tasks a training node reads (the heads a registered model carries), in task-id order."""
    ids = {f"prepare[{s.name}]" for s in plan.specs if s.kind == "ID"}
    return [records[i] for i in plan.nodes[node_id].inputs if i in ids]


def package(plan: Any, records: dict[str, Record], node_id: str) -> Any:
    """``tmp -> mlflow.pyfunc.log_model`` arguments for the stage ``node_id`` (see :mod:`tasks.train`)."""
    node = plan.nodes[node_id]
    final = records[node_id]
    return lambda tmp: pyfunc_args(plan.config_for(node), node.method, node.params["seed"],
                                   final.path("weights.safetensors"), id_task_records(plan, records, node_id), tmp)


def pyfunc_args(cfg: Any, method: str, seed: int, weights: Path, tasks: list[Record], tmp: Path) -> dict[str, Any]:
    """``mlflow.pyfunc.log_model`` arguments (besides name and code) for ``weights`` of ``method``/``seed``."""
    from cdco_core import __version__
    from cdco_core.io import sha256_file

    sha = sha256_file(weights)
    return {"artifacts": model_artifacts(cfg, method, seed, weights, tasks, tmp),
            "pip_requirements": [f"cdco=={__version__}"],
            "model_config": {"cdco.weights_sha256": sha},  # checked by the model's load_context
            "metadata": {"cdco.method": method, "cdco.seed": seed, "cdco.weights_sha256": sha},
            "signature": signature(), "input_example": input_example(tasks)}


def signature() -> Any:
    """Input: ``task``, ``text_a``, optional ``text_b``; output: ``task``, ``prediction``, ``logits``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    inputs = Schema([ColSpec(DataType.string, "task"), ColSpec(DataType.string, "text_a"),
                     ColSpec(DataType.string, "text_b", required=False)])
    outputs = Schema([ColSpec(DataType.string, "task"), ColSpec(DataType.double, "prediction"),
                      ColSpec(Array(DataType.double), "logits")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(tasks: list[Record], rows_per_task: int = 2) -> Any:
    """A few real training rows per task (``text_b`` only when a task has pairs)."""
    import pandas as pd

    parts = []
    for r in tasks:
        df = pd.read_parquet(Path(r.dir) / "train.parquet").head(rows_per_task)
        part = pd.DataFrame({"task": r.label, "text_a": df["text_a"].astype(str).str.slice(0, 200)})
        if "text_b" in df and df["text_b"].notna().any():
            part["text_b"] = df["text_b"].fillna("").astype(str).str.slice(0, 200)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def model_artifacts(cfg: Any, method: str, seed: int, weights: Path, id_tasks: list[Record],
                    tmp: Path) -> dict[str, str]:
    """Files the pyfunc model needs: clean base, weights, resolved config, training tasks' heads."""
    from cdco_core.config import config_to_yaml
    from cdco_core.methods import get_method
    from cdco_core.models.encoder import clean_base_path

    heads = {"method": method, "seed": seed,
             "tasks": [{"spec": r.outputs["spec"], "label_names": r.outputs["label_names"],
                        "train_rows": r.outputs["splits"]["train"]["rows"]} for r in id_tasks]}
    (tmp / "heads.json").write_text(json.dumps(heads, indent=2), encoding="utf-8")
    (tmp / "config.yaml").write_text(config_to_yaml(cfg), encoding="utf-8")
    base = clean_base_path(get_method(method, cfg).configure(cfg).model, tmp)
    return {"base": str(base), "weights": str(weights), "config": str(tmp / "config.yaml"),
            "heads": str(tmp / "heads.json")}


def register_models(lin: Any, cfg: Any, roles: dict[str, list[str]]) -> dict[str, Any] | None:
    """Nested run ``register_model``: find or create a version per stage in ``roles``, set the aliases.

    Returns the primary's {"name", "version", "weights_sha256", "reused", "aliases", "champion"}; None when
    registration is off.
    """
    if not roles:
        return None
    import mlflow
    from mlflow.entities import LoggedModelInput

    from tasks import lineage, tracking

    name = registered_name(cfg.profile)
    out: dict[str, Any] = {}
    rows = []
    with tracking.step_run(lin.parent_run_id, "register_model", tags={**lineage.SOURCE_TAGS,
                                                                     "cdco.step": "register"}):
        for node_id, node_roles in roles.items():
            model_id = lin.models[node_id]
            rec = lin.records[node_id]
            sha = rec.outputs["weights_sha256"]
            node = lin.node(node_id)
            mlflow.log_input(model=LoggedModelInput(model_id))
            evals = [n for n in lin.plan.of_step("evaluate") if n.inputs and n.inputs[0] == node_id]
            numbers = version_numbers(rec, lin.records[evals[0].id] if evals else None)
            tags = {"cdco.method": node.method, "cdco.seed": str(node.params["seed"]), "cdco.node": node_id,
                    "cdco.stage_run_id": lin.runs.get(node_id, ""), "cdco.logged_model_id": model_id,
                    **{f"cdco.metric.{k}": f"{v:.6g}" for k, v in numbers.items()}}
            aliases = [alias for role, alias in (("primary", LATEST_ALIAS), ("champion", CHAMPION_ALIAS))
                       if role in node_roles]
            version, reused = find_or_register(name, sha, f"models:/{model_id}", tags, description=(
                f"{node.method}, seed {node.params['seed']}: the last training stage `{node_id}`; weights "
                f"sha256 `{sha}`; overall {numbers.get('eval.avg.overall', float('nan')):.4f}."), aliases=aliases)
            entry = {"name": name, "version": version, "weights_sha256": sha, "reused": reused, "aliases": aliases,
                     "method": node.method, "seed": node.params["seed"], "model_id": model_id}
            for role in node_roles:
                out[role] = entry
            mlflow.set_tag(f"cdco.registered.{'_'.join(node_roles)}", f"{name}/{version}")
            tracking.log_flat_metrics(numbers, prefix=node.method)
            rows.append(f"| {', '.join(node_roles)} | [{name} v{version}](#/models/{name}/versions/{version}) | "
                        f"{' '.join('@' + a for a in aliases)} | {lin.run_link(node_id)} | `{sha[:12]}` | "
                        f"{'reused' if reused else 'new'} |")
        primary = out["primary"]
        mlflow.log_params({"registered_model": name, "version": primary["version"],
                           "weights_sha256": primary["weights_sha256"], "method": primary["method"],
                           "champion": f"{out['champion']['method']} v{out['champion']['version']}"
                           if "champion" in out else "-"})
        mlflow.set_tag("cdco.registered_model", f"{name}/{primary['version']}")
        mlflow.set_tag("mlflow.note.content", "\n".join([
            "**register_model**", "", "| role | version | aliases | stage run | weights sha256 | |",
            "|---|---|---|---|---|---|", *rows]))
    return {**primary, **({"champion": {k: out["champion"][k] for k in ("method", "seed", "version")}}
                          if "champion" in out else {})}


def find_or_register(name: str, sha: str, source: str, tags: dict[str, str], description: str,
                     aliases: list[str] | tuple[str, ...] = ()) -> tuple[str, bool]:
    """The version of ``name`` holding weights ``sha``, registered from ``source`` if none does yet; ``aliases``
    then point at it.

    Find, register and the aliases happen under one lock, so two runs finishing at once do not both register the
    same weights, nor both insert one alias (MLflow's SQL store looks an alias up, then inserts it: the second
    insert of two at once violates its unique key). Per machine: a team store shared by several machines would
    need the database's own locking.

    Returns:
        (version, reused)
    """
    import mlflow

    with file_lock(cdco_home() / "locks" / f"register-{name}"):
        client = mlflow.MlflowClient()
        version, reused = find_version(name, sha), True
        if version is None:
            version = str(mlflow.register_model(source, name, tags={"cdco.weights_sha256": sha, **tags}).version)
            client.update_model_version(name, version, description=description)
            reused = False
        for alias in aliases:
            client.set_registered_model_alias(name, alias, version)
        return version, reused


def version_numbers(stage: Record, evaluation: Record | None) -> dict[str, float]:
    """The numbers a version carries: training (last stage) and evaluation averages, flat."""
    from tasks.tracking import flatten

    train = stage.outputs.get("train") or {}
    nums = {f"train.{k}": v for k, v in train.items() if k in ("last_loss", "mean_loss_last_20pct", "steps")}
    if evaluation is not None:
        nums |= flatten(evaluation.outputs.get("averages") or {}, "eval.avg")
    return {k: float(v) for k, v in nums.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def find_version(name: str, sha: str) -> str | None:
    """The version of ``name`` whose weights digest is ``sha``, if one was registered."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:  # no such registered model yet
        return None
    for v in versions:
        if v.tags.get("cdco.weights_sha256") == sha:
            return str(v.version)
    return None
