"""One training stage: the loop every method shares.

Per step::

    batch        = source.next_batch(model)                       # sampler picks the task (or the rows)
    batch.negs   = bank.lookup(batch rows)                        # (B, K, H) if the stage has contrastive terms
    terms        = method.loss_terms(model, batch, stage, ctx)    # {"task": ..., "euclidean": ..., ...}
    L            = Σ_k stage.losses[k] · terms[k]
    AdamW step on the stage's parameters only (its adapter groups, + heads and projections if train_heads),
    gradient norm clipped to train.grad_clip (the norm before clipping is recorded; every
    train.term_grad_norms_every steps, each weighted term's own norm too),
    lr = stage.lr · warm-up/decay factor (the task heads at train.head_lr, default eval.head_lr, times the same
    factor)

The bank is re-encoded at steps 0, R, 2R, ... of the stage (R = train.negative_refresh_every). A checkpoint is
written every ``train.checkpoint_every`` steps; a stage started again resumes from its latest checkpoint and,
on CPU with the same seed, ends bit-identical to a run that was never interrupted.

Under a distributed launcher (``torchrun``, ``accelerate launch --multi_gpu``) the stage trains with DDP: every
rank draws the full batch and trains on its share, rank 0 encodes the bank and writes the checkpoints (see
:mod:`cdco_core.training.distributed`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cdco_core.config import head_lr
from cdco_core.errors import ConfigError
from cdco_core.methods.base import LOSS_KEYS, StepContext
from cdco_core.training import distributed
from cdco_core.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from cdco_core.training.selection import DevSelection, Scorer

CONTRASTIVE = ("euclidean", "poincare")
StepCallback = Callable[[dict[str, Any]], None]


class WarmupLinear:
    """lr factor: ``(s+1)/w`` for the first w steps, then linear decay ``(S - s)/(S - w)`` to the last step.

    A class (not a lambda) so that ``LambdaLR.state_dict`` can save it.
    """

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps

    def __call__(self, s: int) -> float:
        if s < self.warmup:
            return (s + 1) / self.warmup
        return max(0.0, (self.steps - s) / max(1, self.steps - self.warmup))


def uses_contrastive(stage: Any) -> bool:
    return any(stage.losses.get(k, 0.0) > 0 for k in CONTRASTIVE)


def weighted_loss(terms: dict[str, torch.Tensor], stage: Any) -> torch.Tensor:
    """``Σ_k w_k term_k`` over the stage's positive weights.

    Raises:
        ConfigError: a weighted term the method did not compute.
    """
    missing = [k for k, w in stage.losses.items() if w > 0 and k not in terms]
    if missing:
        raise ConfigError(f"stage {stage.name!r} weights loss(es) {missing} that this method does not compute; "
                          f"it computes: {sorted(terms)}")
    unknown = sorted(set(terms) - set(LOSS_KEYS))
    if unknown:
        raise ValueError(f"loss_terms returned unknown keys {unknown}; allowed: {LOSS_KEYS}")
    return sum(w * terms[k] for k, w in stage.losses.items() if w > 0)


ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")


def optimizer_state(optimizer: torch.optim.Optimizer, model: Any) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter state by parameter name (``<key>/<name>``), for the next stage to carry."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for p, st in optimizer.state.items():
        for k in ADAM_KEYS:
            if k in st:
                out[f"{k}/{names[id(p)]}"] = torch.as_tensor(st[k]).detach().clone().contiguous()
    return out


def carry_state(optimizer: torch.optim.Optimizer, model: Any, carried: dict[str, torch.Tensor]) -> int:
    """Start each of the optimizer's parameters that the previous stage also trained from its saved AdamW state
    (:func:`optimizer_state`); the others start from zero. Returns how many parameters carried their state."""
    params = {id(p) for g in optimizer.param_groups for p in g["params"]}
    n = 0
    for name, p in model.named_parameters():
        if id(p) not in params or f"exp_avg/{name}" not in carried:
            continue
        optimizer.state[p] = {k: carried[f"{k}/{name}"].clone() for k in ADAM_KEYS if f"{k}/{name}" in carried}
        n += 1
    return n


def term_grad_norms(terms: dict[str, torch.Tensor], stage: Any,
                    params: list[torch.nn.Parameter]) -> dict[str, float]:
    """``{"grad_norm.<term>": ‖∇ w_k term_k‖₂}`` over ``params`` for each weighted term on its own (the graph is
    kept for the step's own backward). Shows which term sets the update direction under the global clip."""
    out = {}
    for k, w in stage.losses.items():
        if w <= 0 or k not in terms or not terms[k].requires_grad:
            continue
        grads = torch.autograd.grad(w * terms[k], params, retain_graph=True, allow_unused=True)
        out[f"grad_norm.{k}"] = float(torch.sqrt(sum((g.detach() ** 2).sum() for g in grads if g is not None)))
    return out


@dataclass
class StageInputs:
    """What :func:`run_stage` needs besides the model."""

    cfg: Any
    method: Any
    stage: Any
    stage_index: int
    global_offset: int  # steps of the earlier stages
    task_types: dict[str, str]
    work_dir: Path  # checkpoints of this stage
    dev_scorer: Scorer | None = None  # the ID dev splits' score (train.dev_select); None: no dev checks
    carried: dict[str, torch.Tensor] | None = None  # the previous stage's optimizer state (train.carry_optimizer)


def head_groups(groups: list[dict[str, Any]], model: Any, lr: float) -> list[dict[str, Any]]:
    """``groups`` with the task heads' parameters moved to one group of their own at ``lr``.

    Every method trains its heads at the heads' rate whatever its own groups (the warm-up/decay factor applies to
    it as to the others); a group left empty is dropped.
    """
    heads = {id(p) for p in model.heads.parameters()} if hasattr(model, "heads") else set()
    out, head_params = [], []
    for g in groups:
        head_params += [p for p in g["params"] if id(p) in heads]
        rest = [p for p in g["params"] if id(p) not in heads]
        if rest:
            out.append({**g, "params": rest})
    return out + ([{"params": head_params, "lr": lr}] if head_params else [])


def run_stage(model: Any, source: Any, bank: Any, inp: StageInputs,
              on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train ``model`` for one stage, resuming from the latest checkpoint in ``inp.work_dir``.

    Returns:
        {"history": [{"step", "loss", <term>: value, "lr", "coverage"?}], "trainable_parameters" (tensors),
         "trainable_numel" (scalars), "resumed_from", "seconds", "dev_select" (the dev checks' record, or None)}

    Raises:
        ConfigError: the stage's groups select no parameter, or it weights a term the method lacks.
        FloatingPointError: the loss became NaN or infinite.
    """
    cfg, stage = inp.cfg, inp.stage
    distributed.check_batch(cfg.train.batch_size, distributed.setup())
    names = model.set_trainable(list(stage.groups), stage.train_heads)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"train.stages.{inp.stage_index} ({stage.name}): groups {stage.groups} select no "
                          "parameter to train (and train_heads is false)")
    groups = head_groups(inp.method.param_groups(model, params, stage), model, head_lr(cfg))  # heads: own rate
    optimizer = torch.optim.AdamW(groups, lr=stage.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupLinear(stage.warmup_steps, stage.steps))
    use_bank = bank is not None and uses_contrastive(stage) and cfg.train.n_hard_negatives > 0
    ds = cfg.train.dev_select
    select = (DevSelection(inp.dev_scorer, ds.every, stage.steps, ds.patience, ds.keep_best)
              if ds.every > 0 and inp.dev_scorer is not None else None)
    history: list[dict[str, Any]] = []
    start, resumed = 0, None
    if inp.carried:  # a checkpoint below replaces it: it holds the carried state as it evolved
        carry_state(optimizer, model, inp.carried)
    ckpt = latest_checkpoint(inp.work_dir)
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer, scheduler, source, bank if use_bank else None)
        start, history, resumed = int(state["step"]), list(state["history"]), int(state["step"])
        if select is not None:
            select.load_state(state["dev_select"], state["extra_tensors"])
    t0 = time.perf_counter()
    model.train()
    # geoopt's maths is TorchScript. Optimised execution swaps in JIT-derived backward graphs only after a few
    # profiled calls, so a process resumed from a checkpoint (cold JIT) would take slightly different gradients
    # than one that ran from the start (warm JIT). Unoptimised execution is the same on every call.
    with torch.jit.optimized_execution(False):
        history = _loop(model, source, bank if use_bank else None, inp, optimizer, scheduler, params, start,
                        history, on_step, select)
    seconds = round(time.perf_counter() - t0, 3)
    return {"history": history, "trainable_parameters": len(names),
            "trainable_numel": sum(p.numel() for p in params), "resumed_from": resumed, "seconds": seconds,
            "dev_select": select.finish(model, len(history)) if select is not None else None,
            # train.carry_optimizer: this stage's AdamW state over the one it carried in (a parameter this stage
            # did not train keeps an earlier stage's state for the stages after it)
            "optimizer_state": ({**(inp.carried or {}), **optimizer_state(optimizer, model)}
                                if cfg.train.carry_optimizer else None)}


def _loop(model: Any, source: Any, bank: Any, inp: StageInputs, optimizer: torch.optim.Optimizer, scheduler: Any,
          params: list[torch.nn.Parameter], start: int, history: list[dict[str, Any]],
          on_step: StepCallback | None, select: DevSelection | None = None) -> list[dict[str, Any]]:
    """Steps ``start .. stage.steps - 1``, fewer when the dev selection stops the stage early (see the module
    docstring); returns the full loss history."""
    cfg, stage = inp.cfg, inp.stage
    use_bank = bank is not None
    refresh_every = cfg.train.negative_refresh_every
    ctx = StepContext(cfg=cfg, stage_index=inp.stage_index, step=start, global_step=inp.global_offset + start,
                      task_types=inp.task_types)
    d = distributed.current()
    ddp_step = distributed.wrap(model, inp.method, stage, ctx) if d.active else None
    for step in range(start, stage.steps):
        if use_bank and step % refresh_every == 0:
            plan = source.plan(min(refresh_every, stage.steps - step))
            distributed.refresh_bank(bank, model, [i for b in plan for i in b] if plan is not None else None, d)
        batch = source.next_batch(model)
        record: dict[str, Any] = {"step": step, "batch_task": batch.tasks[0] if len(set(batch.tasks)) == 1 else "mixed"}
        if use_bank:
            batch.negatives, record["coverage"] = bank.lookup(batch.example_ids, inp.global_offset + step)
        ctx.step, ctx.global_step = step, inp.global_offset + step
        if ddp_step is not None:  # this rank's rows; DDP averages the gradients over the ranks in backward()
            terms = ddp_step(distributed.shard(batch, d))
        else:
            terms = inp.method.loss_terms(model, batch, stage, ctx)
        loss = weighted_loss(terms, stage)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"stage {stage.name!r} step {step}: loss is {loss.item()} ({terms})")
        every = cfg.train.term_grad_norms_every
        if every and step % every == 0 and ddp_step is None:  # DDP's reducer expects one backward per step
            record.update(term_grad_norms(terms, stage, params))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip))  # before clipping
        optimizer.step()
        values = distributed.mean_values({"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}, d)
        record.update({"loss": values["loss"], "lr": scheduler.get_last_lr()[0],
                       **{k: values[k] for k in terms}})
        scheduler.step()
        history.append(record)
        done = step + 1
        stop = False
        if select is not None and select.due(done):  # every rank scores the same weights: the same decision
            stop = select.check(model, done)
            record["dev_score"] = select.curve[-1]["score"]
        if done % cfg.train.checkpoint_every == 0 and done < stage.steps and not stop:
            if d.main:  # the ranks' states are equal; one writer, the others wait until it is complete
                sel_state, sel_tensors = select.state() if select is not None else (None, None)
                save_checkpoint(inp.work_dir, done, model, optimizer, scheduler, source, bank,
                                {"history": history, "dev_select": sel_state}, sel_tensors)
            distributed.barrier()
        if on_step is not None:
            on_step({"stage": stage.name, "stage_index": inp.stage_index, "step": done,
                     "global_step": inp.global_offset + done, "loss": record["loss"]})
        if stop:
            break
    return history


@torch.no_grad()
def predict_split(model: Any, tokenizer: Any, task: Any, task_index: int, split: str, max_length: int,
                  batch_size: int = 64, max_rows: int | None = None) -> tuple[Any, Any, float]:
    """The trained head of ``task`` on its ``split``: (labels, predictions, mean task loss), in eval mode (the
    model's mode is restored). Predictions are class (or option) indices, or the score for regression."""
    import numpy as np

    from cdco_core.losses import task_loss
    from cdco_core.training.batches import collate, task_examples

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    examples = task_examples(task, task_index, split)[:max_rows]
    labels_out, preds_out, loss_sum = [], [], 0.0
    try:
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start:start + batch_size], tokenizer, max_length).to(device)
            rows, logits = model(batch)[task.name]
            labels = batch.labels[rows]
            loss_sum += float(task_loss(task.spec.type, logits, labels, choice_mask=batch.choice_mask)) * len(rows)
            if task.spec.type == "regression":
                pred = logits.squeeze(-1)
            else:
                if batch.choice_mask is not None:
                    logits = logits.masked_fill(~batch.choice_mask, torch.finfo(logits.dtype).min)
                pred = logits.argmax(-1)
            labels_out.append(labels.float().cpu().numpy())
            preds_out.append(pred.float().cpu().numpy())
    finally:
        model.train(was_training)
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.float32))  # noqa: E731
    return cat(labels_out), cat(preds_out), loss_sum / max(1, len(examples))


def stage_check_split(splits: Any, eval_split: str) -> str:
    """The split a stage's own end-of-stage check reads: ``dev`` where the task has one, else its eval split."""
    return "dev" if "dev" in splits else eval_split


def evaluate_id(model: Any, tokenizer: Any, tasks: list[Any], max_length: int, batch_size: int = 64,
                max_rows: int | None = None) -> dict[str, dict[str, float]]:
    """Quick held-out check of the training tasks: mean task loss and accuracy (or MSE for regression), on each
    task's dev split where it has one (``data.dev_fraction``), else its eval split (:func:`stage_check_split`).

    The full evaluation protocol (metrics per type, OOD/KI heads, seeds) is ``cdco_core.evaluation``; this is the
    trainer's own record of how a stage ended.
    """
    out: dict[str, dict[str, float]] = {}
    for ti, task in enumerate(tasks):
        split = stage_check_split(task.splits, task.eval_split)
        y, pred, loss = predict_split(model, tokenizer, task, ti, split, max_length, batch_size, max_rows)
        n = max(1, len(y))
        metric = ({"mse": float(((pred - y) ** 2).sum()) / n} if task.spec.type == "regression"
                  else {"accuracy": float((pred == y).sum()) / n})
        out[task.name] = {"loss": loss, **metric, "rows": len(y)}
    return out


def dev_scorer(tokenizer: Any, tasks: list[Any], max_length: int, batch_size: int) -> Scorer:
    """``model -> (score, {task: main metric})`` on the ID tasks' dev splits (:mod:`.selection`'s score)."""
    from cdco_core.evaluation.metrics import score_task
    from cdco_core.training.selection import mean_main_metric

    def score(model: Any) -> tuple[float, dict[str, float]]:
        per_task = {}
        for ti, task in enumerate(tasks):
            y, pred, _ = predict_split(model, tokenizer, task, ti, "dev", max_length, batch_size)
            per_task[task.name] = float(score_task(task.spec, y, pred)[task.spec.metric_name])
        return mean_main_metric(per_task), per_task

    return score
