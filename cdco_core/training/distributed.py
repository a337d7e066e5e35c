"""Distributed data parallel training: one stage on several processes, each with a share of every batch.

Launch (every process runs the same command; the launcher sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT):

    torchrun --nproc-per-node 2 -m cdco_core.training --profile smoke            # CPU: gloo
    accelerate launch --multi_gpu --num_processes 4 -m cdco_core.training ...   # GPUs: NCCL (torchrun underneath)

(``accelerate launch --cpu --num_processes 2`` starts ONE process in accelerate 1.x: multi-process CPU runs go
through MPI there; ``torchrun`` is the launcher for CPU data parallelism.)

How a step is shared. Every rank draws the same full batch (``train.batch_size`` rows) from an identically seeded
batch source, so the source's state, the sampler and the RNGs stay equal on every rank and a checkpoint written
by rank 0 resumes every rank. Rank ``r`` of ``W`` then trains on rows ``r·B/W .. (r+1)·B/W`` through the model
wrapped in :class:`torch.nn.parallel.DistributedDataParallel`, which averages the gradients: for losses that are
means over independent rows (the task losses) the update equals the single-process update on the full batch, up
to float summation order. Terms that compare rows inside a batch (in-batch contrastive positives) see only the
rank's rows, as in any data-parallel contrastive training. The negative bank is re-encoded on rank 0 and
broadcast; its entries (``bank.choose``) depend only on the plan, so every rank knows which ids it holds.
Checkpoints: rank 0 writes, every rank waits, every rank reads the same files on resume (the folder must be
shared, as ``CDCO_HOME`` is on one machine); DDP's constructor broadcasts rank 0's weights once more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from cdco_core.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    """This process's place: ``rank`` of ``world`` (1 = not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup() -> Dist:
    """Join the process group the launcher described (``WORLD_SIZE`` > 1), once; a no-op otherwise.

    gloo on CPU, NCCL when CUDA is visible (each process on ``cuda:LOCAL_RANK``, made the default device so that
    ``.to("cuda")`` lands there).
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def current() -> Dist:
    """The process group's (rank, world) if one is initialised, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    return Dist()


def barrier() -> None:
    import torch.distributed as dist

    if current().active:
        dist.barrier()


def check_batch(batch_size: int, d: Dist) -> None:
    """Raises ConfigError unless ``train.batch_size`` splits evenly over the ranks."""
    if d.active and batch_size % d.world:
        raise ConfigError(f"train.batch_size={batch_size} does not split evenly over {d.world} processes; use a "
                          f"multiple of {d.world}")


def shard(batch: Any, d: Dist) -> Any:
    """This rank's contiguous share of ``batch`` (all of it when not distributed)."""
    if not d.active:
        return batch
    n = len(batch) // d.world
    return batch.select(list(range(d.rank * n, (d.rank + 1) * n)))


class _StepModule(torch.nn.Module):
    """``method.loss_terms(model, batch, stage, ctx)`` as a module, so that DDP sees the forward pass that uses
    the parameters (the methods call several of the model's entry points, not only ``forward``)."""

    def __init__(self, model: torch.nn.Module, method: Any, stage: Any, ctx: Any) -> None:
        super().__init__()
        self.model = model
        self.method, self.stage, self.ctx = method, stage, ctx

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.method.loss_terms(self.model, batch, self.stage, self.ctx)


def wrap(model: torch.nn.Module, method: Any, stage: Any, ctx: Any) -> torch.nn.Module:
    """The stage's loss computation wrapped in DDP (parameters that require grad now; rank 0's broadcast).

    ``find_unused_parameters``: a batch of one task leaves the other tasks' heads without gradient.
    """
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(_StepModule(model, method, stage, ctx),
                                   device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def mean_values(values: dict[str, float], d: Dist) -> dict[str, float]:
    """The ranks' mean of each value (the loss over the whole batch, for the history every rank keeps)."""
    if not d.active:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if torch.cuda.is_available() and dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return {k: float(v) / d.world for k, v in zip(keys, t.cpu().tolist(), strict=True)}


def refresh_bank(bank: Any, model: Any, planned: list[str] | None, d: Dist) -> None:
    """Re-encode the bank on rank 0 and broadcast its embeddings; the other ranks take the same ids."""
    if not d.active:
        bank.refresh(model, planned)
        return
    import torch.distributed as dist

    if d.main:
        bank.refresh(model, planned)
        emb = bank.emb
    else:
        ids = bank.choose(planned)
        emb = torch.empty(len(ids), model.hidden_size)
        bank.ids, bank.pos = ids, {n: i for i, n in enumerate(ids)}
        bank.refreshes += 1
    device = next(model.parameters()).device if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = emb.to(device).contiguous()
    dist.broadcast(buf, src=0)
    bank.emb = buf.cpu()
