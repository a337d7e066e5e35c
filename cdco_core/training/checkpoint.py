"""Checkpoints for exact resume, written atomically.

A checkpoint is a directory ``ckpt-<step:08d>/`` created under a temporary name and renamed when complete
(:func:`cdco_core.io.atomic_dir`), so a ``kill -9`` at any moment leaves either the previous checkpoint or the
new one, never a torn one. It holds:

    weights.safetensors   adapters (or encoder, for full fine-tuning), heads, projections
    optimizer.pt          the optimizer's state dict (loaded with ``torch.load(weights_only=True)``)
    state.safetensors     torch RNG state, the negative bank's embeddings
    state.json            step, scheduler, python and numpy RNG states, batch source (sampler, streams,
                          generator), bank ids, loss history, the dev selection's curve (and its best
                          weights in state.safetensors)
    manifest.json         sha256 and size of each file above, written last

The newest two checkpoints are kept (older ones are removed once a newer one is complete), so that a
damaged newest one can fall back to its predecessor. :func:`latest_checkpoint` verifies the manifest: a
checkpoint whose files differ from it (flipped bytes, truncation, a missing or garbage manifest) is
deleted with a ``RuntimeWarning`` and the next older valid one is used, or none (the stage restarts).
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cdco_core.io import atomic_dir, sha256_file

PREFIX = "ckpt-"
MANIFEST = "manifest.json"
FILES = ("weights.safetensors", "optimizer.pt", "state.safetensors", "state.json")
KEEP = 2  # checkpoints kept: the newest, and one to fall back to if the newest turns out damaged


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
                    scheduler: Any, source: Any, bank: Any, extra: dict[str, Any],
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``root/ckpt-<step>/`` atomically, then delete older checkpoints. Returns its path.

    ``extra`` (JSON) and ``extra_tensors`` (e.g. the dev selection's best weights) come back from
    :func:`load_checkpoint` in its state, the tensors under ``"extra_tensors"``.
    """
    target = Path(root) / f"{PREFIX}{step:08d}"
    with atomic_dir(target) as tmp:
        save_file(model.trainable_state_dict(), str(tmp / "weights.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        tensors = {"torch_rng": torch.get_rng_state()}
        bank_meta = None
        if bank is not None:
            bank_tensors, bank_meta = bank.state_dict()
            tensors.update(bank_tensors)
        extra_tensors = extra_tensors or {}
        clash = sorted(set(extra_tensors) & set(tensors))
        if clash:
            raise ValueError(f"extra tensor names {clash} clash with the checkpoint's own")
        save_file({**tensors, **extra_tensors}, str(tmp / "state.safetensors"))
        state = {"step": step, "scheduler": scheduler.state_dict(), "python_rng": python_rng_state(),
                 "numpy_rng": numpy_rng_state(), "source": source.state_dict(), "bank": bank_meta,
                 "extra_tensor_names": sorted(extra_tensors), **extra}
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
        files = {name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size} for name in FILES}
        (tmp / MANIFEST).write_text(json.dumps({"files": files}), encoding="utf-8")
    older = sorted(p for p in Path(root).glob(f"{PREFIX}*") if p.is_dir() and p.name < target.name)
    for old in older[: max(0, len(older) - (KEEP - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def verify_checkpoint(path: Path) -> str | None:
    """None when every file of the checkpoint matches its manifest, else what is wrong (one line)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no manifest (written by an older version, or incomplete)"
    except (OSError, ValueError) as e:
        return f"manifest unreadable ({e})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or set(files) != set(FILES):
        return f"manifest does not list the files {list(FILES)}"
    for name in FILES:
        entry, f = files[name], path / name
        if not isinstance(entry, dict) or not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != entry.get("bytes"):  # size first: catches truncation without hashing
            return f"{name} has {f.stat().st_size} bytes, manifest says {entry.get('bytes')} (sha256 not checked)"
        if sha256_file(f) != entry.get("sha256"):
            return f"{name} sha256 differs from the manifest"
    return None


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint under ``root`` whose files match their manifest, or None.

    Damaged checkpoints met on the way (newest first) are deleted with a ``RuntimeWarning`` naming the file.
    """
    found = sorted((p for p in Path(root).glob(f"{PREFIX}*") if p.is_dir()), reverse=True)
    for ckpt in found:
        problem = verify_checkpoint(ckpt)
        if problem is None:
            return ckpt
        warnings.warn(f"checkpoint {ckpt} is damaged: {problem}; discarded, resuming from an older one "
                      "or the stage start", RuntimeWarning, stacklevel=2)
        shutil.rmtree(ckpt, ignore_errors=True)
    return None


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
    state["extra_tensors"] = {k: tensors[k] for k in state.get("extra_tensor_names", [])}
    return state
