"""Step 8: log the primary method's trained adapters as an MLflow model and register it as ``cdco-<profile>``.

Idempotent: a version whose weights have the same sha256 is reused, so an unchanged re-run adds no version.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from cdco_core.cache import Record
from cdco_core.io import file_lock
from cdco_core.paths import cdco_home

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def registered_name(profile: str) -> str:
    return f"cdco-{profile}"


def register_model(cfg: Any, parent_run_id: str, method: str, seed: int, final: Record,
                   id_tasks: list[Record]) -> dict[str, Any] | None:
    """Register the trained ``method``/``seed`` (its last stage ``final``); returns name/version, or None when
    registration is off. A version with the same weights sha256 is reused."""
    if not cfg.orchestration.register_model:
        return None
    weights = final.path("weights.safetensors")
    sha = final.outputs["weights_sha256"]
    name = registered_name(cfg.profile)
    # find-or-register under one lock: two runs finishing at once must not both register the same weights
    # (per machine; a team store shared by several machines would need the database's own locking)
    with file_lock(cdco_home() / "locks" / f"register-{name}"):
        existing = find_version(name, sha)
        if existing is not None:
            return {"name": name, "version": existing, "weights_sha256": sha, "reused": True}
        with tempfile.TemporaryDirectory() as tmp:
            artifacts = model_artifacts(cfg, method, seed, weights, id_tasks, Path(tmp))
            version = log_and_register(parent_run_id, name, artifacts, sha, {"method": method, "seed": seed})
    return {"name": name, "version": version, "weights_sha256": sha, "reused": False}


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


def log_and_register(parent_run_id: str, name: str, artifacts: dict[str, str], sha: str,
                     trained: dict[str, Any]) -> str:
    """Nested run ``register_model``: ``pyfunc.log_model`` (models from code) + a registered version."""
    import mlflow

    from cdco_core import __version__
    from tasks import tracking

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
