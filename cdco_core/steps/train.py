"""Step ``train``: one stage of one method and seed, starting from the previous stage's weights.

Inputs: the ID tasks' records (the training mixture, in task-spec order = task ids), the previous stage's record
(its ``weights.safetensors``), and for a contrastive stage of a method using ODMS negatives the negatives' record
and the OOD tasks' records (the bank's texts). Writes ``weights.safetensors`` (the trainable tensors: adapters or
encoder, heads, projections) and ``meta.json`` (metrics, loss history, the weights' sha256). While the stage runs,
its checkpoints live in the step's scratch folder, so running it again after a kill resumes there.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from cdco_core.errors import InputError
from cdco_core.steps.base import Step, StepCall, model_section

if TYPE_CHECKING:
    from cdco_core.cache import Record
    from cdco_core.config import Config, StageConfig
    from cdco_core.methods.base import Method
    from cdco_core.plan import Node


def method_of(cfg: Config, name: str) -> Method:
    from cdco_core.methods import get_method

    return get_method(name, cfg)


def method_module(name: str) -> str:
    """The package that registered method ``name`` (its code is part of the method's steps' code digest)."""
    from cdco_core.methods import METHODS

    factory = METHODS.entry(name).factory
    return getattr(factory, "func", factory).__module__


def stages_of(cfg: Config, node: Node) -> list[StageConfig]:
    return method_of(cfg, node.method).stages(cfg)


def section(cfg: Config, node: Node) -> dict[str, Any]:
    """Everything a stage reads: the method and its settings, model, adapters, the shared training settings,
    its own stage (and where it sits in the schedule), the seed, and the ID-metric batch size."""
    method = method_of(cfg, node.method)
    stages = method.stages(cfg)
    i = node.params["stage"]
    train = cfg.train.model_dump(mode="json")
    train.pop("stages")
    return {"method": node.method, "settings": method.settings.model_dump(mode="json") if method.settings else None,
            "model": model_section(cfg), "adapters": cfg.adapters.model_dump(mode="json"), "train": train,
            "stage": stages[i].model_dump(mode="json"), "index": i, "offset": sum(s.steps for s in stages[:i]),
            "seed": node.params["seed"], "eval_batch_size": cfg.eval.batch_size}


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


def build_model(cfg: Config, method: Method, seed: int, tasks: list[Any]) -> tuple[Any, Any]:
    """(model on :func:`train_device`, tokenizer) of ``method`` for the ID ``tasks``, heads seeded by ``seed``."""
    import torch

    torch.manual_seed(seed)
    model, tokenizer = method.build_model(cfg, tasks)
    return model.to(train_device()), tokenizer


OPTIMIZER_FILE = "optimizer.safetensors"  # train.carry_optimizer: AdamW state by parameter name


def load_optimizer_state(record: Record) -> dict[str, Any]:
    """The AdamW state a finished stage saved for the next one (train.carry_optimizer); verified like its weights.

    Raises:
        InputError: the previous stage saved none (it was trained with carry_optimizer off).
    """
    from safetensors.torch import load_file

    path = record.path(OPTIMIZER_FILE)
    if not path.exists():
        raise InputError(f"train.carry_optimizer: the previous stage {record.label} saved no optimizer state")
    return load_file(str(path))


def load_weights(model: Any, record: Record) -> None:
    """Load a published stage's trainable tensors into ``model``."""
    from safetensors.torch import load_file

    model.load_trainable_state_dict(load_file(str(record.path("weights.safetensors"))))


def id_tasks(call_inputs: dict[str, Record], node: Node, kind: str = "ID") -> list[Any]:
    """The tasks of ``kind`` among a node's input records, in input (task-spec) order."""
    from cdco_core.data import open_task

    return [open_task(r) for i, r in call_inputs.items() if i.startswith("prepare[") and r.outputs["kind"] == kind]


def compute(call: StepCall) -> dict[str, Any]:
    from safetensors.torch import save_file

    from cdco_core.io import sha256_file, write_json
    from cdco_core.samplers import get_sampler, sampler_from_config
    from cdco_core.training.batches import BatchSource, task_examples
    from cdco_core.training.trainer import StageInputs, dev_scorer, evaluate_id, run_stage, uses_contrastive

    cfg, node = call.cfg, call.node
    seed, i = node.params["seed"], node.params["stage"]
    method = method_of(cfg, node.method)
    stages = method.stages(cfg)
    stage = stages[i]
    tasks = id_tasks(call.inputs, node, "ID")
    for t in tasks:
        if "train" not in t.splits or len(t.splits["train"]) == 0:
            raise InputError(f"ID task {t.name!r} has no train rows")
    model, tokenizer = build_model(cfg, method, seed, tasks)
    previous = [r for k, r in call.inputs.items() if k.startswith("train[")]
    carried = None
    if previous:
        load_weights(model, previous[0])
        if cfg.train.carry_optimizer:
            carried = load_optimizer_state(previous[0])
    _seed_everything(seed, i)
    sampler = get_sampler(method.sampler) if method.sampler else sampler_from_config(cfg.train)
    examples = [task_examples(t, ti) for ti, t in enumerate(tasks)]
    source = BatchSource(examples, sampler, cfg.train.batch_size, tokenizer, cfg.model.max_length,
                         seed=seed * 1000 + i, device=train_device(),
                         length_bucket_batches=cfg.train.length_bucket_batches)
    negatives = [r for k, r in call.inputs.items() if k.startswith("negatives")]
    bank = None
    if negatives and uses_contrastive(stage):
        from cdco_core.training.negatives import load_bank

        bank = load_bank(cfg, str(negatives[0].path("negatives.parquet")), id_tasks(call.inputs, node, "OOD"),
                         tokenizer, seed=seed * 1000 + i)
    scorer = (dev_scorer(tokenizer, tasks, cfg.model.max_length, cfg.eval.batch_size)
              if cfg.train.dev_select.every > 0 else None)
    inp = StageInputs(cfg=cfg, method=method, stage=stage, stage_index=i,
                      global_offset=sum(s.steps for s in stages[:i]),
                      task_types={t.name: t.spec.type for t in tasks}, work_dir=call.scratch, dev_scorer=scorer,
                      carried=carried)
    result = run_stage(model, source, bank, inp, call.on_step)
    metrics = evaluate_id(model, tokenizer, tasks, cfg.model.max_length, cfg.eval.batch_size)
    hist = result["history"]
    ran = len(hist)  # the stage's steps: fewer than planned when the dev selection stopped it early
    tail = hist[-max(1, len(hist) // 5):]
    save_file(model.trainable_state_dict(), str(call.out / "weights.safetensors"))
    if result["optimizer_state"] is not None:  # train.carry_optimizer: the next stage starts from these moments
        save_file(result["optimizer_state"], str(call.out / OPTIMIZER_FILE))
    before = _cost_so_far(previous[0] if previous else None)
    summary = {"steps": ran, "steps_planned": stage.steps, "first_loss": hist[0]["loss"], "last_loss": hist[-1]["loss"],
               "mean_loss_last_20pct": sum(r["loss"] for r in tail) / len(tail),
               "trainable_parameters": result["trainable_parameters"], "trainable_numel": result["trainable_numel"],
               # the method so far (this stage and every one before it): what the comparison table reports
               "steps_total": before["steps_total"] + ran,
               "trainable_numel_max": max(before["trainable_numel_max"], result["trainable_numel"])}
    timed = ran - (result["resumed_from"] or 0)  # steps this process ran (a resumed stage ran fewer)
    timings = {"resumed_from": result["resumed_from"], "seconds": result["seconds"],  # how it ran, not what
               "seconds_total": before["seconds_total"] + result["seconds"],
               "timed_steps_total": before["timed_steps_total"] + timed}
    write_json(timings, call.out / "timings.json")
    meta = {"method": node.method, "seed": seed, "stage": stage.model_dump(mode="json"), "index": i,
            "metrics": metrics, "train": summary, "history": hist,
            "negatives": negatives[0].digest if bank is not None else None,
            "weights_sha256": sha256_file(call.out / "weights.safetensors"),
            # e.g. CA-MTL's uncertainty sampler: rows drawn/kept and the share of data used for updates
            "sampler_report": sampler.report() if hasattr(sampler, "report") else None,
            # train.dev_select: the dev curve, the best check, whether the stage stopped early and which weights
            # it kept (None when off)
            "dev_select": result["dev_select"]}
    write_json(meta, call.out / "meta.json")
    return {"method": node.method, "seed": seed, "stage": stage.name, "index": i, "metrics": metrics,
            "train": {**summary, **timings}, "weights_sha256": meta["weights_sha256"]}


def _cost_so_far(previous: Record | None) -> dict[str, float]:
    """Steps, largest trainable size, and measured seconds over timed steps of the stages before this one (read from
    the previous stage's verified meta.json and timings.json; zeros for the first stage)."""
    import json

    if previous is None:
        return {"steps_total": 0, "trainable_numel_max": 0, "seconds_total": 0.0, "timed_steps_total": 0}
    train = json.loads(previous.path("meta.json").read_text(encoding="utf-8"))["train"]
    timings = json.loads(previous.path("timings.json").read_text(encoding="utf-8"))
    return {"steps_total": train["steps_total"], "trainable_numel_max": train["trainable_numel_max"],
            "seconds_total": timings["seconds_total"], "timed_steps_total": timings["timed_steps_total"]}


def method_cost(final: Record) -> dict[str, Any]:
    """A trained method's size and measured speed, from its last stage: trainable scalars (the largest stage's),
    total steps, and seconds per step over the steps this machine timed (a resumed stage counts the steps it ran)."""
    import json

    train = json.loads(final.path("meta.json").read_text(encoding="utf-8"))["train"]
    timings = json.loads(final.path("timings.json").read_text(encoding="utf-8"))
    timed = timings["timed_steps_total"]
    return {"trainable_parameters": train["trainable_numel_max"], "steps": train["steps_total"],
            "seconds_per_step": timings["seconds_total"] / timed if timed else None}


def load_trained(cfg: Config, method_name: str, seed: int, final: Record, tasks: list[Any]) -> tuple[Any, Any]:
    """The model of a finished method (eval mode, nothing trainable) and its tokenizer.

    ``model.encode(..., task_ids=None)`` gives the representation OOD/KI evaluation uses (for single-task LoRA:
    the largest ID task's adapters).
    """
    model, tokenizer = build_model(cfg, method_of(cfg, method_name), seed, tasks)
    load_weights(model, final)
    model.set_trainable([], train_heads=False)
    model.eval()
    return model, tokenizer


STEP = Step("train", section, compute,
            label=lambda node: f"{node.method}-seed{node.params['seed']}-{node.params['stage']}",
            modules=lambda cfg, node: ("cdco_core.steps.train", method_module(node.method)), collective=True)
