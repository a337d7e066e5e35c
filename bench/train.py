"""Training step cost: a CDCO contrastive step with hard negatives against a plain multi-task LoRA step.

Same process, same model (all-MiniLM-L6-v2, the demo profile), same batch size, same max_length, same batches
(each row's batch source has the same seed, so both draw the same sequence of ID batches), same trained groups
("all"). What differs is only what a method's step does:

    lora_mtl          task loss                                                (the peer)
    cdco_contrastive  task + Euclidean + Poincaré InfoNCE over bank negatives   (ours; both spaces: the dearest
                      CDCO stage, consolidation), bank re-encoded every train.negative_refresh_every steps

Timing runs whole refresh periods (R steps), so the bank's re-encoding is amortised exactly as in training; rows
take turns per period, order rotated, so the machine's drifting load favours no one. Peak memory is the max RSS of
a fresh process that builds one row and runs a few of its steps (sampled).

The negatives are a seeded random table of the OOD (imdb) train rows, K per ID anchor: a step's cost does not depend
on which OOD rows are negatives, and it saves the UMAP fit. To extend: append a :class:`Row` to ROWS (e.g. CA-MTL or
EGO-PLM with their losses); every row is timed against ROWS[0].
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import THREADS, comparison

PROFILE = "demo"
TARGET = 1.5  # ours / peer step time
TRAINER_STEPS = {False: 100, True: 30}  # steps of each run against the HF Trainer (quick: 30)
TRAINER_TARGET = 1.0  # ours / peer real tokens per second


@dataclass
class Row:
    """One contender: a registry method and the losses of the timed stage (trained groups: all)."""

    name: str
    method: str
    losses: dict[str, float]
    space: str = "none"
    overrides: list[str] = field(default_factory=list)
    target: float = TARGET  # the ours/peer step-time ratio this row is held to


ROWS: list[Row] = [
    Row("lora_mtl", "lora_mtl", {"task": 1.0}),
    Row("cdco_contrastive", "cdco", {"task": 1.0, "euclidean": 0.25, "poincare": 0.25}, space="both", target=1.3),
    # EGO-PLM, K = 1, step_scheme "fast" (default): adversary + outer pass, SimCSE's second view taken from the
    # adversary's pass = 2 forward/backward passes (issue 18's target 2.0)
    Row("ego_plm", "ego_plm", {"task": 1.0, "pretext": 0.1, "consistency": 1.0}, target=2.0),
    # the old exact step: adversary + outer + SimCSE's own second pass = 3 passes
    Row("ego_plm_exact", "ego_plm", {"task": 1.0, "pretext": 0.1, "consistency": 1.0}, target=3.0,
        overrides=["method_settings.ego_plm.step_scheme=exact"]),
    # CA-MTL with its uncertainty sampler: a no-grad pass over b candidates of each of the 2 tasks, then forward +
    # backward on the b kept rows (issue 18's target 1.5; ~(2 + 3) / 3 forward units against LoRA's 3 in fp32)
    Row("ca_mtl", "ca_mtl", {"task": 1.0}, target=1.5),
]


def synthetic_negatives(cfg: Any, tasks: list[Any], path: Path, seed: int = 0) -> str:
    """K random OOD train rows per ID train row, in the negatives Parquet's columns; returns the path."""
    import numpy as np
    import pandas as pd

    anchors = [(t.name, i) for t in tasks if t.spec.kind == "ID" for i in t.splits["train"]["example_id"]]
    pool = [(t.name, i) for t in tasks if t.spec.kind == "OOD" for i in t.splits["train"]["example_id"]]
    rng = np.random.default_rng(seed)
    k = cfg.negatives.k
    picks = np.stack([rng.choice(len(pool), size=k, replace=False) for _ in anchors])  # (A, k)
    rows = [(a[0], a[1], pool[j][0], pool[j][1], float(r), 0.0, r)
            for a, p in zip(anchors, picks, strict=True) for r, j in enumerate(p, 1)]
    df = pd.DataFrame(rows, columns=["anchor_task", "anchor_id", "negative_dataset", "negative_id",
                                     "manifold_distance", "raw_cosine", "rank"])
    df.to_parquet(path, index=False)
    return str(path)


class Contender:
    """A row's model, batch source and (for contrastive rows) negative bank, ready to run R-step blocks."""

    def __init__(self, row: Row, cfg: Any, tasks: list[Any], negatives_path: str, work: Path) -> None:
        import torch

        from cdco_core.config import StageConfig
        from cdco_core.methods import get_method
        from cdco_core.samplers import get_sampler, sampler_from_config
        from cdco_core.training.batches import BatchSource, task_examples
        from cdco_core.training.negatives import load_bank
        from cdco_core.training.trainer import uses_contrastive

        self.row, self.work = row, work
        if row.overrides:  # a variant of a method (e.g. EGO-PLM's exact step): the row's own config settings
            from cdco_core.config import Config, apply_overrides
            from cdco_core.profile import complete_config

            cfg = complete_config(Config.model_validate(apply_overrides(cfg.model_dump(mode="json"),
                                                                         list(row.overrides))))
        self.method = get_method(row.method, cfg)
        self.cfg = self.method.configure(cfg)
        ids = [t for t in tasks if t.spec.kind == "ID"]
        torch.manual_seed(0)
        self.model, tok = self.method.build_model(self.cfg, ids)
        self.stage = StageConfig(name="bench", groups=["all"], losses=row.losses, space=row.space, steps=1, lr=1e-3)
        # the method's own sampler when it has one (CA-MTL's uncertainty sampling is part of its step), as in training
        sampler = get_sampler(self.method.sampler) if self.method.sampler else sampler_from_config(self.cfg.train)
        self.source = BatchSource([task_examples(t, i) for i, t in enumerate(ids)], sampler,
                                  self.cfg.train.batch_size, tok, self.cfg.model.max_length, seed=0,
                                  length_bucket_batches=self.cfg.train.length_bucket_batches)
        self.bank = None
        if self.method.uses_negatives and uses_contrastive(self.stage):
            self.bank = load_bank(self.cfg, negatives_path, [t for t in tasks if t.spec.kind == "OOD"], tok, seed=0)
        self.task_types = {t.name: t.spec.type for t in ids}
        self.seconds, self.steps, self.coverage, self.refresh_seconds = 0.0, 0, [], 0.0
        self.cpu_seconds = 0.0  # this process's CPU time in the timed blocks (one torch thread: the work done)
        if self.bank is not None:  # time the bank's re-encoding on its own, to show where a step's cost goes
            refresh = self.bank.refresh

            def timed_refresh(*args: Any, **kwargs: Any) -> Any:
                import time

                t0 = time.perf_counter()
                try:
                    return refresh(*args, **kwargs)
                finally:
                    self.refresh_seconds += time.perf_counter() - t0

            self.bank.refresh = timed_refresh

    def block(self, steps: int, timed: bool = True) -> None:
        """Run ``steps`` steps as one stage (the bank is re-encoded at its step 0)."""
        from cdco_core.training.trainer import StageInputs, run_stage

        stage = self.stage.model_copy(update={"steps": steps})
        inp = StageInputs(cfg=self.cfg, method=self.method, stage=stage, stage_index=0, global_offset=self.steps,
                          task_types=self.task_types, work_dir=self.work / f"{self.row.name}-{self.steps}")
        import time

        c0 = time.process_time()
        out = run_stage(self.model, self.source, self.bank, inp)
        cpu = time.process_time() - c0
        if not timed:
            self.refresh_seconds = 0.0
        if timed:
            self.seconds += out["seconds"]
            self.cpu_seconds += cpu
            self.steps += steps
            self.coverage += [h["coverage"] for h in out["history"] if "coverage" in h]


def _setup(quick: bool, work: Path) -> tuple[Any, list[Any], str]:
    from cdco_core.data import load_tasks
    from cdco_core.profile import load_profile as load_config

    # no checkpoints inside the timed blocks: their I/O is not a step's cost
    overrides = ["train.checkpoint_every=1000000"]
    cfg = load_config(PROFILE, overrides)
    if quick:  # half the refresh period and half the bank: the same encode cost per step, blocks half as long
        t = cfg.train
        overrides += [f"train.negative_refresh_every={max(1, t.negative_refresh_every // 2)}",
                      f"train.negative_bank_size={max(1, t.negative_bank_size // 2)}"]
        cfg = load_config(PROFILE, overrides)
    tasks = load_tasks(cfg.data)
    return cfg, tasks, synthetic_negatives(cfg, tasks, work / "negatives.parquet")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory_mb(row_index: int, steps: int = 3) -> dict[str, float]:
    """Memory of ROWS[row_index] in a fresh process: RSS once built, and its peak while running ``steps`` steps
    (sampled every 2 ms; the first step includes a bank refresh)."""
    code = "import sys; from bench.train import _peak_child; _peak_child(int(sys.argv[1]), int(sys.argv[2]))"
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code, str(row_index), str(steps)], cwd=root, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peak_child(row_index: int, steps: int) -> None:
    import threading
    import time

    import torch

    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, tasks, neg = _setup(True, Path(tmp))
        c = Contender(ROWS[row_index], cfg, tasks, neg, Path(tmp))
        built = _rss_mb()
        peak, stop = [built], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_mb())
                time.sleep(0.002)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        c.block(steps)
        stop.set()
        t.join()
    print(json.dumps({"rss_built_mb": round(built, 1), "peak_rss_steps_mb": round(peak[0], 1),
                      "step_extra_mb": round(peak[0] - built, 1)}))


def run(quick: bool = False) -> dict[str, Any]:
    """Time every row in alternating R-step blocks; compare each with ROWS[0]."""
    import torch

    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, tasks, neg = _setup(quick, Path(tmp))
        period = cfg.train.negative_refresh_every
        blocks = 1 if quick else 2
        contenders = [Contender(r, cfg, tasks, neg, Path(tmp)) for r in ROWS]
        for c in contenders:
            c.block(2, timed=False)  # warm-up: allocator, first-call kernels
        for b in range(blocks):
            order = contenders[b % len(contenders):] + contenders[:b % len(contenders)]
            for c in order:
                c.block(period)
    bsz = cfg.train.batch_size
    per = {c.row.name: {"seconds_per_step": round(c.seconds / c.steps, 4),
                        "cpu_seconds_per_step": round(c.cpu_seconds / c.steps, 4),
                        "samples_per_s": round(bsz * c.steps / c.seconds, 2), "steps": c.steps,
                        **({"own_negative_share": round(sum(c.coverage) / len(c.coverage), 3),
                            "bank_refresh_seconds_per_step": round(c.refresh_seconds / c.steps, 4)}
                           if c.coverage else {})}
           for c in contenders}
    # lora_mtl against the Hugging Face Trainer + peft on the same model, data, batch size, max length, threads
    from bench.trainer_peer import compare as trainer_compare

    hf = trainer_compare(cfg, tasks, TRAINER_STEPS[quick])
    memory = {r.name: peak_memory_mb(i) for i, r in enumerate(ROWS)}
    peer = ROWS[0].name
    comps = [comparison(f"{r.name}_vs_{peer}_step_time", per[r.name]["seconds_per_step"],
                        per[peer]["seconds_per_step"], "s/step", False, r.target,
                        samples_per_s=per[r.name]["samples_per_s"], peer_samples_per_s=per[peer]["samples_per_s"],
                        ratio_cpu=round(per[r.name]["cpu_seconds_per_step"] / per[peer]["cpu_seconds_per_step"], 4),
                        peak_rss_mb=memory[r.name]["peak_rss_steps_mb"],
                        peer_peak_rss_mb=memory[peer]["peak_rss_steps_mb"])
             for r in ROWS[1:]]
    comps.append(comparison(
        "lora_mtl_vs_hf_trainer_peft_real_tokens_per_s", hf["ours_tokens_per_s"], hf["peer_tokens_per_s"],
        "real tokens/s", True, TRAINER_TARGET,
        vs_peer_on_our_batches=round(hf["ours_vs_peer_on_our_batches"], 4), ratio_cpu=round(hf["ratio_cpu"], 4),
        ratio_cpu_vs_peer_on_our_batches=round(hf["ratio_cpu_vs_peer_on_our_batches"], 4),
        loss_last20pct_ours=round(hf["loss_last20pct_ours"], 4),
        loss_last20pct_peer=round(hf["loss_last20pct_peer"], 4),
        flops_fraction_of_dense_matmul=round(hf["flops_fraction_of_dense"], 4),
        flops_fraction_of_dense_matmul_cpu=round(hf["flops_fraction_of_dense_cpu"], 4)))
    settings = {"profile": PROFILE, "model": cfg.model.source, "batch_size": bsz, "max_length": cfg.model.max_length,
                "n_hard_negatives": cfg.train.n_hard_negatives, "negative_bank_size": cfg.train.negative_bank_size,
                "negative_refresh_every": period, "blocks": blocks, "torch_threads": torch.get_num_threads()}
    return {"comparisons": comps, "rows": per, "memory": memory, "settings": settings, "hf_trainer": hf}


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
