"""Step 5: one MAC stage of one method and seed (stages run in order; each resumes from its checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task

from tasks._cache import StepCache, cached_task_options, fingerprint

# A stage's key holds the shared training settings and its own stage config (an argument), not later
# stages': editing stage 3 leaves stages 1-2 cached. Earlier stages enter through ``upstream["previous"]``.
# The negatives enter through their content (``upstream["negatives"]``), so ODMS settings that leave the table
# unchanged leave training cached.
TRAIN_CACHE = StepCache(step="train_stage", sections=("seed", "model", "adapters", "train", "methods"),
                        exclude=("train.stages",),
                        code=("cdco_core/training", "cdco_core/methods", "cdco_core/models", "cdco_core/losses.py",
                              "cdco_core/samplers.py", "tasks/train.py"))


# retries: the trainer checkpoints every ``train.checkpoint_every`` steps, so a retried stage resumes.
@task(name="mac_stage", cache_policy=TRAIN_CACHE, retries=1, retry_delay_seconds=2, **cached_task_options())
def train_stage(cfg: dict[str, Any], method: str, seed: int, stage_index: int, stage: dict[str, Any],
                upstream: dict[str, Any]) -> dict[str, Any]:
    """Train stage ``stage_index`` of ``method``.

    ``upstream`` = {"data": ID digests, "previous": stage i-1's output digest, "overrides": the method's config
    overrides, "negatives": {"table", "ood"} digests for stages that read them, else None}.
    """
    from cdco_core.config import Config
    from cdco_core.training.pipeline import train_stage as step

    return fingerprint(step(Config.model_validate(cfg), method, seed, stage_index))


def method_stages(cfg: dict[str, Any], method: str) -> tuple[list[dict[str, Any]], list[str], list[bool]]:
    """(the method's stages as dicts, its config overrides, per stage: whether it reads the ODMS negatives).

    A stage reads the negatives when the method uses them and the stage weights a contrastive loss; only
    those stages' keys hold the negatives' digest, so a changed OOD pool leaves task-only stages cached.
    """
    from cdco_core.config import Config
    from cdco_core.methods import get_method
    from cdco_core.training.trainer import uses_contrastive

    m = get_method(method)
    stages = m.stages(m.configure(Config.model_validate(cfg)))
    reads_negatives = [bool(m.uses_negatives) and uses_contrastive(s) for s in stages]
    return [s.model_dump(mode="json") for s in stages], list(m.config_overrides), reads_negatives


def log_stage(parent_run_id: str, method: str, seed: int, index: int, stage: dict[str, Any],
              result: dict[str, Any], cached: bool) -> None:
    """Nested run ``mac_stage/<method>/<seed>/<i>-<name>``: stage params, metrics, adapter/head safetensors."""
    import mlflow

    from cdco_core import tracking

    name = f"mac_stage/{method}/seed{seed}/{index}-{stage['name']}"
    with tracking.step_run(parent_run_id, name, tags={"cdco.cached": str(cached).lower()}):
        mlflow.log_params({"method": method, "seed": seed, "stage": stage["name"], "steps": stage["steps"],
                           "lr": stage["lr"], "groups": ",".join(stage["groups"]), "space": stage["space"],
                           **{f"loss_weight.{k}": v for k, v in stage["losses"].items()}})
        tracking.log_flat_metrics(result.get("metrics") or {}, prefix="id")
        tracking.log_flat_metrics(result.get("train") or {}, prefix="train")
        meta = Path(result["path"]) / "meta.json"
        history = json.loads(meta.read_text(encoding="utf-8")).get("history", []) if meta.exists() else []
        for i, row in enumerate(history):
            tracking.log_flat_metrics({k: v for k, v in row.items() if k != "step"},
                                      prefix="step", step=int(row.get("step", i)))
        tracking.log_paths([Path(result["path"]) / "weights.safetensors"], "weights")
