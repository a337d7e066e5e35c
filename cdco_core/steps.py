"""The pipeline's steps as plain functions: config in, small JSON-able results (paths, digests, metrics) out.

Every step is content-addressed: its output lives under a path derived from a digest of what it reads
(data digests, the config sections it uses, the step's code version). Calling a step whose output
exists and verifies returns at once; a missing or corrupt output is recomputed. Prefect tasks
(``tasks/``) wrap these one-to-one; ``cdco step NAME`` calls them directly, without Prefect.

Order: prepare_data -> embed -> fit_manifold -> build_negatives -> train_stage (one per stage) -> evaluate -> report
"""

from __future__ import annotations

from typing import Any

from cdco_core.config import Config

STEP_NAMES = ("prepare", "embed", "manifold", "negatives", "train", "evaluate")


def prepare_data(cfg: Config) -> dict[str, Any]:
    """Load every configured task into the canonical Parquet cache.

    Returns:
        {"tasks": {name: {"kind", "type", "digest", "path", "splits": {split: {"rows", "digest"}}}}}
    """
    from cdco_core.data import load_tasks

    out = {}
    for t in load_tasks(cfg.data):
        out[t.name] = {
            "kind": t.spec.kind,
            "type": t.spec.type,
            "digest": t.digest,
            "path": str(t.path),
            "splits": {s: {"rows": len(df), "digest": t.digests[s]} for s, df in t.splits.items()},
            "split_record": t.split_record,
        }
    return {"tasks": out}


def run_step(name: str, cfg: Config) -> dict[str, Any]:
    """Run one step by name with everything it needs before it (each from cache when unchanged)."""
    from cdco_core.errors import InputError

    if name not in STEP_NAMES:
        raise InputError(f"unknown step {name!r}; available: {', '.join(STEP_NAMES)}")
    if name == "prepare":
        return prepare_data(cfg)
    from cdco_core.odms import pipeline as odms

    if name == "embed":
        return odms.embed_step(cfg)
    if name == "manifold":
        return odms.manifold_step(cfg)
    if name == "negatives":
        return odms.negatives_step(cfg)
    from cdco_core.training import pipeline as training

    if name == "train":
        return training.train_all_stages(cfg, method=cfg.eval.methods[0], seed=cfg.seed)
    from cdco_core.evaluation import pipeline as evaluation

    return evaluation.evaluate_step(cfg, method=cfg.eval.methods[0], seed=cfg.seed)
