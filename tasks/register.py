"""Step 8: log the primary method's trained adapters as an MLflow model and register it as ``cdco-<profile>``.

Idempotent: a version whose weights have the same sha256 is reused, so an unchanged re-run adds no version.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def registered_name(profile: str) -> str:
    return f"cdco-{profile}"


@task(name="register_model", cache_policy=NO_CACHE, persist_result=False)
def register_model(cfg: dict[str, Any], parent_run_id: str, trained: dict[str, Any]) -> dict[str, Any] | None:
    """``trained`` = the primary method's {method, seed, result: last stage summary}. Returns name/version."""
    from cdco_core.config import Config

    conf = Config.model_validate(cfg)
    if not conf.orchestration.register_model or not trained.get("result"):
        return None  # disabled, or a method without training stages: nothing to register
    weights = Path(trained["result"]["path"]) / "weights.safetensors"
    sha = trained["result"]["weights_sha256"]
    name = registered_name(conf.profile)
    existing = find_version(name, sha)
    if existing is not None:
        return {"name": name, "version": existing, "weights_sha256": sha, "reused": True}
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = model_artifacts(conf, trained["method"], trained["seed"], weights, Path(tmp))
        version = log_and_register(parent_run_id, name, artifacts, sha, trained)
    return {"name": name, "version": version, "weights_sha256": sha, "reused": False}


def model_artifacts(cfg: Any, method: str, seed: int, weights: Path, tmp: Path) -> dict[str, str]:
    """Files the pyfunc model needs: clean base, weights, resolved config, training tasks' heads."""
    from cdco_core.config import config_to_yaml
    from cdco_core.models.encoder import clean_base_path
    from cdco_core.training.pipeline import plan_training

    plan = plan_training(cfg, method, seed)
    heads = {"method": method, "seed": seed,
             "tasks": [{"spec": t.spec.model_dump(mode="json"), "label_names": t.label_names,
                        "train_rows": len(t.splits["train"])} for t in plan.tasks]}
    (tmp / "heads.json").write_text(json.dumps(heads, indent=2), encoding="utf-8")
    (tmp / "config.yaml").write_text(config_to_yaml(cfg), encoding="utf-8")
    base = clean_base_path(plan.cfg.model, tmp)
    return {"base": str(base), "weights": str(weights), "config": str(tmp / "config.yaml"),
            "heads": str(tmp / "heads.json")}


def log_and_register(parent_run_id: str, name: str, artifacts: dict[str, str], sha: str,
                     trained: dict[str, Any]) -> str:
    """Nested run ``register_model``: ``pyfunc.log_model`` (models from code) + a registered version."""
    import mlflow

    from cdco_core import __version__, tracking

    with tracking.step_run(parent_run_id, "register_model"):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE), artifacts=artifacts,
            pip_requirements=[f"cdco=={__version__}"], registered_model_name=name,
            model_config={"cdco.weights_sha256": sha},  # checked by the model's load_context
            metadata={"cdco.method": trained["method"], "cdco.seed": trained["seed"], "cdco.weights_sha256": sha},
        )
        version = str(info.registered_model_version)
        client = mlflow.MlflowClient()
        client.set_model_version_tag(name, version, "cdco.weights_sha256", sha)
        client.set_model_version_tag(name, version, "cdco.method", trained["method"])
        mlflow.set_tag("cdco.registered_model", f"{name}/{version}")
    return version


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
