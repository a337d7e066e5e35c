"""Our ``lora_mtl`` training against the ecosystem's: Hugging Face ``Trainer`` + ``peft`` LoRA, same everything else.

Same model (all-MiniLM-L6-v2 with peft LoRA of the same r / alpha / dropout / target modules, mean pooling, one
dropout + linear head per task, the same initial weights: both seed torch with 0 before building), the same task
sequence and rows (ours draws them; the peer gets them as an ordered ``IterableDataset``, so its batches of
``batch_size`` consecutive rows are the ones given), batch size, max length, lr schedule (linear warm-up and decay),
AdamW, gradient clipping, and torch thread count. The peer pre-tokenises (``dataset.map`` style, truncated to
max_length) and pads each batch with ``DataCollatorWithPadding``: the ecosystem's dynamic padding. Ours tokenises
per batch inside the timed loop.

Batches. Ours are length-bucketed (``train.length_bucket_batches``). The peer (B) trains on the batches the same
sampler gives without bucketing: the stream's random order, which is what the Trainer's default (shuffled, not
grouped by length) gives a user. A second peer run (C) trains the Trainer on our bucketed batches, which is what
``group_by_length=True`` could give it, so the gain that is not bucketing shows separately.

Timing: A (ours), B, C, A again (a linear drift of the shared machine's load favours no one); each run's clock
runs from the end of its ``WARMUP``-th step to the end of its last (per-step callbacks), so the data loading of
every timed step is inside it. Throughput counts real (non-padding) tokens. Our two runs must
give the same losses (determinism); the loss curves are compared by the mean of the last 20% of steps.

FLOPs of our step, counted analytically over the padded shapes that actually run,
per sequence of padded length T, per layer, H = hidden size, F = feed-forward width, r = LoRA rank, m = LoRA target
modules per layer:

    forward   2 T (4 H^2 + 2 H F)  [Q, K, V, O, FFN in/out]  +  4 T^2 H  [QK^T, AV]  +  4 m T H r  [LoRA A, B]
    backward  the same again for the input gradients of every linear and of the attention products (the frozen
              base weights need no weight gradient), plus 4 m T H r for the LoRA weight gradients and 2 T^2 H
              more for attention (its two products each have two gradient inputs, neither a weight: 2x forward)

    step = 2 * 2T(4H^2 + 2HF) + 3 * 4T^2H + 3 * 4mTHr   (layer 0's input gradient is not needed; ignored, <1/L)

i.e. ~4 x (frozen linear params) x tokens, not the 6 x of full training. Heads, pooling, layer norms, softmax,
GELU and the optimiser are not counted (element-wise, not matmuls). The machine's limit is a dense fp32 matmul
measured in the same process at the same thread count (the larger of a square 2048 product and one the size of the
model's biggest linear at a typical batch).

Every rate is given per wall second and per CPU second of the process: on the shared, oversubscribed machine a
process's wall clock swings with everyone else's load, while with one torch thread its CPU time is the work done.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

WARMUP = 2  # steps before the clock starts (first-call kernels, allocator)


def _batches(source: Any, n: int) -> list[list[Any]]:
    """The examples of ``source``'s next ``n`` batches, without consuming them."""
    saved = source.state_dict()
    try:
        return [source.next_examples() for _ in range(n)]
    finally:
        source.load_state_dict(saved)


def _token_counts(tok: Any, batches: list[list[Any]], max_length: int) -> tuple[list[int], list[int]]:
    """Per batch: real tokens, and the padded length T (dynamic padding: the batch's longest row)."""
    real, pad = [], []
    for b in batches:
        pairs = any(e.text_b for e in b)
        enc = tok([e.text_a for e in b], [e.text_b for e in b] if pairs else None, truncation=True,
                  max_length=max_length)
        lens = [len(x) for x in enc["input_ids"]]
        real.append(sum(lens))
        pad.append(max(lens))
    return real, pad


def step_flops(batch_rows: int, t: int, cfg: Any, hidden: int, ffn: int, layers: int) -> float:
    """Analytic FLOPs of one forward + backward LoRA step on a (batch_rows, t) batch (module docstring)."""
    h, r, m = hidden, cfg.adapters.r, len(cfg.adapters.target_modules)
    linear = 2 * t * (4 * h * h + 2 * h * ffn)
    attention = 4 * t * t * h
    lora = 4 * m * t * h * r
    return float(batch_rows * layers * (2 * linear + 3 * attention + 3 * lora))


def dense_matmul_flops(seconds: float = 2.0) -> tuple[dict[str, float], dict[str, float]]:
    """FLOP per wall second and per CPU second of fp32 ``torch.mm`` at the current thread count: square 2048, and
    (2048 x 384) @ (384 x 1536)."""
    import torch

    out, cpu = {}, {}
    for name, (n, k, m) in {"square_2048": (2048, 2048, 2048), "linear_2048x384x1536": (2048, 384, 1536)}.items():
        a, b = torch.randn(n, k), torch.randn(k, m)
        torch.mm(a, b)
        reps, (t0, c0) = 0, _now()
        while time.perf_counter() - t0 < seconds:
            torch.mm(a, b)
            reps += 1
        t1, c1 = _now()
        out[name], cpu[name] = 2.0 * n * k * m * reps / (t1 - t0), 2.0 * n * k * m * reps / (c1 - c0)
    return out, cpu


def _ours(cfg: Any, tasks: list[Any], steps: int, work: Path) -> dict[str, Any]:
    import torch

    from cdco_core.config import StageConfig
    from cdco_core.methods import get_method
    from cdco_core.samplers import sampler_from_config
    from cdco_core.training.batches import BatchSource, task_examples
    from cdco_core.training.trainer import StageInputs, run_stage

    method = get_method("lora_mtl")
    ids = [t for t in tasks if t.spec.kind == "ID"]
    torch.manual_seed(0)
    model, tok = method.build_model(cfg, ids)
    source = BatchSource([task_examples(t, i) for i, t in enumerate(ids)], sampler_from_config(cfg.train),
                         cfg.train.batch_size, tok, cfg.model.max_length, seed=0,
                         length_bucket_batches=cfg.train.length_bucket_batches)
    batches = _batches(source, steps)
    stage = StageConfig(name="bench", groups=["all"], losses={"task": 1.0}, steps=steps, lr=1e-3,
                        warmup_steps=max(1, steps // 10), train_heads=True)
    inp = StageInputs(cfg=cfg, method=method, stage=stage, stage_index=0, global_offset=0,
                      task_types={t.name: t.spec.type for t in ids}, work_dir=work)
    stamps: list[tuple[float, float]] = []
    torch.manual_seed(0)
    out = run_stage(model, source, None, inp, on_step=lambda _: stamps.append(_now()))
    return {"batches": batches, "tok": tok, "model": model, "stamps": stamps,
            "losses": [h["loss"] for h in out["history"]]}


class _Ordered:
    """An iterable dataset of pre-tokenised rows in a fixed order (the Trainer does not shuffle iterables)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        import torch

        class _It(torch.utils.data.IterableDataset):
            def __iter__(self_inner):  # noqa: N805 - the inner dataset's own self
                return iter(rows)

        self.dataset = _It()


def _peer(cfg: Any, tasks: list[Any], batches: list[list[Any]], work: Path) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from torch import nn
    from transformers import (
        AutoModel,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from cdco_core.models.encoder import resolve_model_path

    path = str(resolve_model_path(cfg.model.source))
    ids = [t for t in tasks if t.spec.kind == "ID"]
    tok = AutoTokenizer.from_pretrained(path)

    class MultiTaskLora(nn.Module):
        """What a user writes for several classification tasks on one LoRA encoder: mean pooling, a head each."""

        def __init__(self) -> None:
            super().__init__()
            lora = LoraConfig(r=cfg.adapters.r, lora_alpha=cfg.adapters.alpha, lora_dropout=cfg.adapters.dropout,
                              target_modules=list(cfg.adapters.target_modules), bias="none")
            self.encoder = get_peft_model(AutoModel.from_pretrained(path), lora)
            hidden = self.encoder.config.hidden_size
            self.heads = nn.ModuleList([nn.Sequential(nn.Dropout(0.1), nn.Linear(hidden, t.num_labels)) for t in ids])

        def forward(self, input_ids, attention_mask, token_type_ids, task_ids, labels):  # noqa: ANN001, ANN201
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            loss = pooled.new_zeros(())
            for t in torch.unique(task_ids).tolist():
                rows = task_ids == t
                loss = loss + nn.functional.cross_entropy(self.heads[t](pooled[rows]), labels[rows]) * (
                    rows.sum() / len(task_ids))
            return {"loss": loss}

    torch.manual_seed(0)
    model = MultiTaskLora()
    rows = []
    for b in batches:
        for e in b:
            enc = tok(e.text_a, e.text_b or None, truncation=True, max_length=cfg.model.max_length)
            rows.append({**enc, "task_ids": e.task_index, "labels": int(e.label)})
    steps = len(batches)
    stamps: list[tuple[float, float]] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            stamps.append(_now())

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    args = TrainingArguments(
        output_dir=str(work / "peer"), per_device_train_batch_size=cfg.train.batch_size, max_steps=steps,
        learning_rate=1e-3, lr_scheduler_type="linear", warmup_steps=max(1, steps // 10),
        weight_decay=cfg.train.weight_decay, max_grad_norm=cfg.train.grad_clip, optim="adamw_torch",
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, data_seed=0,
        dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=_Ordered(rows).dataset,
                      data_collator=DataCollatorWithPadding(tok), callbacks=[Clock()])
    trainer.train()
    return {"stamps": stamps, "losses": losses, "threads": torch.get_num_threads()}


def _now() -> tuple[float, float]:
    """(wall clock, this process's CPU time): on a shared, oversubscribed machine the wall clock of one process
    swings with everyone else's load; with one torch thread its CPU time is the work it did."""
    return time.perf_counter(), time.process_time()


def _rate(stamps: list[tuple[float, float]], real: list[int]) -> tuple[float, float, float]:
    """(real tokens, wall seconds, CPU seconds) of steps WARMUP+1 .. n (clocks start at the end of step WARMUP)."""
    return (float(sum(real[WARMUP:len(stamps)])), stamps[-1][0] - stamps[WARMUP - 1][0],
            stamps[-1][1] - stamps[WARMUP - 1][1])


def _unbucketed(cfg: Any, tasks: list[Any], tok: Any, steps: int) -> list[list[Any]]:
    """The same sampler, seed and task sequence as ours, rows in stream order: the batches a shuffled dataset gives."""
    from cdco_core.samplers import sampler_from_config
    from cdco_core.training.batches import BatchSource, task_examples

    ids = [t for t in tasks if t.spec.kind == "ID"]
    source = BatchSource([task_examples(t, i) for i, t in enumerate(ids)], sampler_from_config(cfg.train),
                         cfg.train.batch_size, tok, cfg.model.max_length, seed=0, length_bucket_batches=1)
    return _batches(source, steps)


def compare(cfg: Any, tasks: list[Any], steps: int) -> dict[str, Any]:
    """Ours (A), the Trainer on its default batches (B), the Trainer on our length-bucketed batches (C), ours again
    (A): throughput in real tokens/s, loss curves, FLOP/s."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        a1 = _ours(cfg, tasks, steps, work / "a1")
        batches = a1["batches"]
        plain = _unbucketed(cfg, tasks, a1["tok"], steps)
        real, padded_t = _token_counts(a1["tok"], batches, cfg.model.max_length)
        real_plain, padded_plain = _token_counts(a1["tok"], plain, cfg.model.max_length)
        peer = _peer(cfg, tasks, plain, work / "b")
        peer_b = _peer(cfg, tasks, batches, work / "c")
        a2 = _ours(cfg, tasks, steps, work / "a2")
        dense, dense_cpu = dense_matmul_flops()
    enc_cfg = a1["model"].encoder.get_base_model().config
    tok1, s1, c1 = _rate(a1["stamps"], real)
    tok2, s2, c2 = _rate(a2["stamps"], real)
    ptok, ps, pc = _rate(peer["stamps"], real_plain)
    btok, bs, bc = _rate(peer_b["stamps"], real)
    ours_rate, peer_rate = (tok1 + tok2) / (s1 + s2), ptok / ps
    ours_cpu_rate, peer_cpu_rate = (tok1 + tok2) / (c1 + c2), ptok / pc
    flops = [step_flops(len(b), t, cfg, enc_cfg.hidden_size, enc_cfg.intermediate_size, enc_cfg.num_hidden_layers)
             for b, t in zip(batches, padded_t, strict=True)]
    timed_flops = sum(flops[WARMUP:])
    ours_flops_per_s = 2 * timed_flops / (s1 + s2)
    tail = max(1, steps // 5)

    def mean_tail(x: list[float]) -> float:
        return sum(x[-tail:]) / tail

    return {
        "ours_tokens_per_s": ours_rate, "peer_tokens_per_s": peer_rate,
        "ours_seconds_per_step": (s1 + s2) / (2 * (steps - WARMUP)), "peer_seconds_per_step": ps / (steps - WARMUP),
        "ours_run_seconds": [round(s1, 2), round(s2, 2)], "peer_run_seconds": round(ps, 2),
        "ours_tokens_per_cpu_s": ours_cpu_rate, "peer_tokens_per_cpu_s": peer_cpu_rate,
        "ratio_cpu": ours_cpu_rate / peer_cpu_rate, "ratio_cpu_vs_peer_on_our_batches": ours_cpu_rate / (btok / bc),
        "ours_run_cpu_seconds": [round(c1, 2), round(c2, 2)], "peer_run_cpu_seconds": round(pc, 2),
        "peer_on_our_batches_tokens_per_s": btok / bs, "ours_vs_peer_on_our_batches": ours_rate / (btok / bs),
        "real_token_share": sum(real) / sum(len(b) * t for b, t in zip(batches, padded_t, strict=True)),
        "peer_real_token_share": sum(real_plain) / sum(len(b) * t for b, t in zip(plain, padded_plain, strict=True)),
        "loss_last20pct_ours": mean_tail(a1["losses"]), "loss_last20pct_peer": mean_tail(peer["losses"]),
        "loss_last20pct_peer_on_our_batches": mean_tail(peer_b["losses"]),
        "loss_curve_ours": [round(x, 4) for x in a1["losses"]],
        "loss_curve_peer": [round(x, 4) for x in peer["losses"]],
        "loss_first_step_ours": a1["losses"][0],
        "loss_first_step_peer": peer["losses"][0] if peer["losses"] else None,
        "loss_first_step_peer_on_our_batches": peer_b["losses"][0] if peer_b["losses"] else None,
        "ours_deterministic": a1["losses"] == a2["losses"], "peer_logged_steps": len(peer["losses"]),
        "steps": steps, "timed_steps": steps - WARMUP, "threads_after_peer": peer["threads"],
        "step_flops_mean": timed_flops / (steps - WARMUP), "ours_flops_per_s": ours_flops_per_s,
        "dense_matmul_flops_per_s": dense, "flops_fraction_of_dense": ours_flops_per_s / max(dense.values()),
        "ours_flops_per_cpu_s": 2 * timed_flops / (c1 + c2), "dense_matmul_flops_per_cpu_s": dense_cpu,
        "flops_fraction_of_dense_cpu": 2 * timed_flops / (c1 + c2) / max(dense_cpu.values()),
        "torch_threads": torch.get_num_threads(),
    }
