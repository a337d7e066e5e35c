"""Training as cached steps: one content-addressed output per stage, chained.

Stage ``i`` of method ``m`` with seed ``s`` lives in ``CDCO_HOME/runs/<m>/<key_i[:16]>/`` where::

    key_i = H(key_{i-1}, stage_i config, ID tasks' data digests, negatives digest (contrastive stages; with the
              OOD tasks' digests, whose train texts the bank encodes), seed, method name and config overrides,
              model identity, adapters and train sections (minus stages), max_length, TRAINER_VERSION)

so changing a later stage re-trains only from there, and a finished stage is never recomputed. The folder holds
``weights.safetensors`` (adapters/encoder, heads, projections) and ``meta.json`` (the key's inputs, metrics, loss
history, the weights' sha256, checked on every cache hit). While a stage trains, its checkpoints live in
``<key[:16]>.partial/``; running the stage again resumes there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdco_core.config import Config, cdco_home
from cdco_core.errors import ConfigError
from cdco_core.io import atomic_dir, sha256_file, sha256_json

TRAINER_VERSION = "1"  # bump when training changes what a stage produces: every cached stage is retrained


@dataclass
class TrainPlan:
    """Everything fixed before any training: the method's config, tasks, stages and their keys."""

    cfg: Config
    method: Any
    seed: int
    tasks: list[Any]  # ID tasks, in task-id order
    ood_tasks: list[Any]
    stages: list[Any]
    negatives: dict[str, Any] | None
    keys: list[str] = field(default_factory=list)

    def stage_dir(self, i: int) -> Path:
        return cdco_home() / "runs" / self.method.name / self.keys[i][:16]

    def work_dir(self, i: int) -> Path:
        return cdco_home() / "runs" / self.method.name / f"{self.keys[i][:16]}.partial"


def validate_stages(stages: list[Any], groups: set[str], where: str = "train.stages") -> None:
    """Refuse unknown groups, empty stages and negative weights with a message naming the stage.

    Raises:
        ConfigError: the first problem found.
    """
    from cdco_core.config import StageConfig

    if not stages:
        raise ConfigError(f"{where}: the schedule has no stage")
    for i, st in enumerate(stages):
        label = f"{where}.{i} ({getattr(st, 'name', '?')})"
        if not isinstance(st, StageConfig):
            raise ConfigError(f"{label}: not a StageConfig")
        unknown = [g for g in st.groups if g not in groups]
        if unknown:
            raise ConfigError(f"{label}.groups: unknown adapter group(s) {unknown}; "
                              f"defined: {', '.join(sorted(groups))}")
        if not st.groups:
            raise ConfigError(f"{label}.groups: empty; name at least one group (or 'all')")
        if st.steps < 1:
            raise ConfigError(f"{label}.steps: must be >= 1, got {st.steps}")
        bad = {k: w for k, w in st.losses.items() if w < 0}
        if bad:
            raise ConfigError(f"{label}.losses: weights must be >= 0, got {bad}")
        if not any(w > 0 for w in st.losses.values()):
            raise ConfigError(f"{label}.losses: needs at least one loss with a positive weight")


def _group_names(cfg: Config) -> set[str]:
    return {"lower", "upper", "all", *cfg.adapters.groups}


def plan_training(cfg: Config, method: str, seed: int) -> TrainPlan:
    """Resolve the method, its config, tasks, stages, negatives (when needed) and every stage key."""
    from cdco_core.data import load_tasks
    from cdco_core.methods import get_method
    from cdco_core.models.encoder import model_identity
    from cdco_core.training.trainer import uses_contrastive

    m = get_method(method)
    mcfg = m.configure(cfg)
    all_tasks = load_tasks(mcfg.data)
    tasks = [t for t in all_tasks if t.spec.kind == "ID"]
    if not tasks:
        raise ConfigError("training needs at least one task of kind ID in data.tasks_file / data.tasks")
    for t in tasks:
        if "train" not in t.splits or len(t.splits["train"]) == 0:
            raise ConfigError(f"ID task {t.name!r} has no train rows")
    ood = [t for t in all_tasks if t.spec.kind == "OOD"]
    stages = m.stages(mcfg)
    validate_stages(stages, _group_names(mcfg))
    contrastive = [uses_contrastive(s) for s in stages]
    negatives = None
    if m.uses_negatives and any(contrastive) and mcfg.train.n_hard_negatives > 0:
        from cdco_core.odms.pipeline import negatives_step

        negatives = negatives_step(mcfg)
    plan = TrainPlan(mcfg, m, seed, tasks, ood, stages, negatives)
    train_section = mcfg.train.model_dump(mode="json")
    train_section.pop("stages")
    base = {"data": {t.name: t.digest for t in tasks}, "seed": seed, "method": m.name,
            "overrides": list(m.config_overrides), "model": model_identity(mcfg.model).as_dict(),
            "max_length": mcfg.model.max_length, "adapters": mcfg.adapters.model_dump(mode="json"),
            "train": train_section, "version": TRAINER_VERSION}
    prev = None
    for st, con in zip(stages, contrastive, strict=True):
        neg = None
        if con and negatives is not None:
            neg = {"digest": negatives["digest"], "ood": {t.name: t.digest for t in ood}}
        prev = sha256_json({**base, "prev": prev, "stage": st.model_dump(mode="json"), "negatives": neg})
        plan.keys.append(prev)
    return plan


def _read_done(plan: TrainPlan, i: int) -> dict[str, Any] | None:
    """The finished stage's meta if its folder exists and its weights match the recorded sha256."""
    import json

    d = plan.stage_dir(i)
    meta_path, weights = d / "meta.json", d / "weights.safetensors"
    if not (meta_path.exists() and weights.exists()):
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("key") != plan.keys[i] or sha256_file(weights) != meta.get("weights_sha256"):
        return None
    return meta


def _seed_everything(seed: int, i: int) -> None:
    import numpy as np
    import torch

    s = seed * 1000 + i  # each stage reproducible on its own, whatever ran before it in this process
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def train_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (exact resume is promised on CPU only)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_for_plan(plan: TrainPlan) -> tuple[Any, Any]:
    """(model on :func:`train_device`, tokenizer) of the plan's method, heads and projections seeded."""
    import torch

    torch.manual_seed(plan.seed)
    model, tokenizer = plan.method.build_model(plan.cfg, plan.tasks)
    return model.to(train_device()), tokenizer


def _load_stage_weights(model: Any, plan: TrainPlan, i: int) -> None:
    from safetensors.torch import load_file

    model.load_trainable_state_dict(load_file(str(plan.stage_dir(i) / "weights.safetensors")))


def _drop_checkpoints(plan: TrainPlan, i: int) -> None:
    """Delete stage ``i``'s resume checkpoints: once the stage is published nothing reads them."""
    import shutil

    shutil.rmtree(plan.work_dir(i), ignore_errors=True)


def _run_stage(plan: TrainPlan, i: int, on_step: Any) -> dict[str, Any]:
    from safetensors.torch import save_file

    from cdco_core.io import write_json
    from cdco_core.samplers import get_sampler, sampler_from_config
    from cdco_core.training.batches import BatchSource, task_examples
    from cdco_core.training.trainer import StageInputs, evaluate_id, run_stage, uses_contrastive

    cfg, stage = plan.cfg, plan.stages[i]
    model, tokenizer = build_for_plan(plan)
    if i > 0:
        _load_stage_weights(model, plan, i - 1)
    _seed_everything(plan.seed, i)
    sampler = get_sampler(plan.method.sampler) if plan.method.sampler else sampler_from_config(cfg.train)
    examples = [task_examples(t, ti) for ti, t in enumerate(plan.tasks)]
    source = BatchSource(examples, sampler, cfg.train.batch_size, tokenizer, cfg.model.max_length,
                         seed=plan.seed * 1000 + i, device=train_device())
    bank = None
    if plan.negatives is not None and uses_contrastive(stage):
        from cdco_core.training.negatives import load_bank

        bank = load_bank(cfg, plan.negatives["path"], plan.ood_tasks, tokenizer, seed=plan.seed * 1000 + i)
    inp = StageInputs(cfg=cfg, method=plan.method, stage=stage, stage_index=i,
                      global_offset=sum(s.steps for s in plan.stages[:i]),
                      task_types={t.name: t.spec.type for t in plan.tasks}, work_dir=plan.work_dir(i))
    result = run_stage(model, source, bank, inp, on_step)
    metrics = evaluate_id(model, tokenizer, plan.tasks, cfg.model.max_length, cfg.eval.batch_size)
    hist = result["history"]
    tail = hist[-max(1, len(hist) // 5):]
    meta = {"key": plan.keys[i], "prev": plan.keys[i - 1] if i else None, "method": plan.method.name,
            "seed": plan.seed, "stage": stage.model_dump(mode="json"), "index": i, "metrics": metrics,
            "train": {"steps": stage.steps, "first_loss": hist[0]["loss"], "last_loss": hist[-1]["loss"],
                      "mean_loss_last_20pct": sum(r["loss"] for r in tail) / len(tail),
                      "trainable_parameters": result["trainable_parameters"],
                      "resumed_from": result["resumed_from"], "seconds": result["seconds"]},
            "negatives": plan.negatives["digest"] if bank is not None else None, "history": hist,
            # e.g. CA-MTL's uncertainty sampler: rows drawn/kept and the share of data used for updates
            "sampler_report": sampler.report() if hasattr(sampler, "report") else None}
    with atomic_dir(plan.stage_dir(i)) as tmp:
        save_file(model.trainable_state_dict(), str(tmp / "weights.safetensors"))
        meta["weights_sha256"] = sha256_file(tmp / "weights.safetensors")
        write_json(meta, tmp / "meta.json")
    _drop_checkpoints(plan, i)
    return meta


def _summary(plan: TrainPlan, i: int, meta: dict[str, Any], cached: bool) -> dict[str, Any]:
    return {"stage": plan.stages[i].name, "index": i, "key": plan.keys[i], "path": str(plan.stage_dir(i)),
            "weights_sha256": meta["weights_sha256"], "metrics": meta["metrics"], "train": meta["train"],
            "cached": cached}


def _ensure_stage(plan: TrainPlan, i: int, on_step: Any) -> dict[str, Any]:
    meta = _read_done(plan, i)
    if meta is not None:
        _drop_checkpoints(plan, i)  # left behind when killed between publishing the stage and deleting them
        return _summary(plan, i, meta, cached=True)
    if i > 0:
        _ensure_stage(plan, i - 1, on_step)
    return _summary(plan, i, _run_stage(plan, i, on_step), cached=False)


def train_stage(cfg: Config, method: str, seed: int, stage_index: int, on_step: Any = None) -> dict[str, Any]:
    """Run (or reuse) stage ``stage_index`` of ``method``, running or reusing the stages before it.

    Returns:
        {"stage", "index", "key", "path", "weights_sha256", "metrics": {task: {...}}, "train": {...}, "cached"}

    Raises:
        InputError: unknown method, bad schedule, stage index out of range.
    """
    plan = plan_training(cfg, method, seed)
    if not 0 <= stage_index < len(plan.stages):
        raise ConfigError(f"stage index {stage_index} out of range: method {method!r} has {len(plan.stages)} stages")
    return _ensure_stage(plan, stage_index, on_step)


def train_all_stages(cfg: Config, method: str, seed: int, on_step: Any = None) -> dict[str, Any]:
    """Run (or reuse) every stage of ``method``.

    Args:
        on_step: optional callback receiving {"stage", "stage_index", "step", "global_step", "loss"} after each
            step (progress, logging).

    Returns:
        {"method", "seed", "stages": [per-stage summaries], "checkpoint": final stage folder, "digest": final key,
         "metrics": the last stage's ID metrics, "negatives": the ODMS step result or None}
    """
    plan = plan_training(cfg, method, seed)
    stages = [_ensure_stage(plan, i, on_step) for i in range(len(plan.stages))]
    return {"method": plan.method.name, "seed": seed, "stages": stages, "checkpoint": stages[-1]["path"],
            "digest": plan.keys[-1], "metrics": stages[-1]["metrics"], "negatives": plan.negatives}


def load_trained(cfg: Config, method: str, seed: int) -> tuple[Any, Any]:
    """The trained model (eval mode) and tokenizer for evaluation; trains first if nothing is cached.

    ``model.encode(..., task_ids=None)`` gives the representation OOD/KI evaluation uses (for single-task LoRA:
    the largest ID task's adapters).
    """
    plan = plan_training(cfg, method, seed)
    for i in range(len(plan.stages)):
        _ensure_stage(plan, i, None)
    model, tokenizer = build_for_plan(plan)
    _load_stage_weights(model, plan, len(plan.stages) - 1)
    model.set_trainable([], train_heads=False)
    model.eval()
    return model, tokenizer
