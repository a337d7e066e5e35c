"""Checkpoints for exact resume, written atomically.

A checkpoint is a directory ``ckpt-<step:08d>/`` created under a temporary name and renamed when complete
(:func:`cdco_core.io.atomic_dir`), so a ``kill -9`` at any moment leaves either the previous checkpoint or the
new one, never a torn one. It holds:

    weights.safetensors   adapters (or encoder, for full fine-tuning), heads, projections
    optimizer.pt          the optimizer's state dict (loaded with ``torch.load(weights_only=True)``)
    state.safetensors     torch RNG state, the negative bank's embeddings
    state.json            step, scheduler, python and numpy RNG states, batch source (sampler, streams,
                          generator), bank ids, loss history

Older checkpoints are removed after a newer one is complete.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cdco_core.io import atomic_dir

PREFIX = "ckpt-"


def python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_python_rng_state(state: list) -> None:
    random.setstate((state[0], tuple(state[1]), state[2]))


def numpy_rng_state() -> dict[str, Any]:
    st = np.random.get_state(legacy=False)
    st["state"] = {"key": st["state"]["key"].tolist(), "pos": int(st["state"]["pos"])}
    return st


def set_numpy_rng_state(state: dict[str, Any]) -> None:
    st = dict(state)
    st["state"] = {"key": np.asarray(state["state"]["key"], dtype=np.uint32), "pos": state["state"]["pos"]}
    np.random.set_state(st)


def save_checkpoint(root: Path, step: int, model: Any, optimizer: torch.optim.Optimizer,
                    scheduler: Any, source: Any, bank: Any, extra: dict[str, Any]) -> Path:
    """Write ``root/ckpt-<step>/`` atomically, then delete older checkpoints. Returns its path."""
    target = Path(root) / f"{PREFIX}{step:08d}"
    with atomic_dir(target) as tmp:
        save_file(model.trainable_state_dict(), str(tmp / "weights.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        tensors = {"torch_rng": torch.get_rng_state()}
        bank_meta = None
        if bank is not None:
            bank_tensors, bank_meta = bank.state_dict()
            tensors.update(bank_tensors)
        save_file(tensors, str(tmp / "state.safetensors"))
        state = {"step": step, "scheduler": scheduler.state_dict(), "python_rng": python_rng_state(),
                 "numpy_rng": numpy_rng_state(), "source": source.state_dict(), "bank": bank_meta, **extra}
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
    for old in Path(root).glob(f"{PREFIX}*"):
        if old != target and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root``, or None."""
    found = sorted(p for p in Path(root).glob(f"{PREFIX}*") if (p / "state.json").exists())
    return found[-1] if found else None


def load_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
                    source: Any, bank: Any) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote; returns the JSON state (step, history, ...)."""
    path = Path(path)
    model.load_trainable_state_dict(load_file(str(path / "weights.safetensors")))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    tensors = load_file(str(path / "state.safetensors"))
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["torch_rng"])
    set_python_rng_state(state["python_rng"])
    set_numpy_rng_state(state["numpy_rng"])
    source.load_state_dict(state["source"])
    if bank is not None and state.get("bank") is not None:
        bank.load_state_dict(tensors, state["bank"])
    return state
