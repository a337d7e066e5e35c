"""Step ``embed``: one dataset's train texts as L2-normalised sentence vectors in verified Parquet shards.

The anchors are the ID tasks' train splits; the OOD pool is the OOD tasks' train splits (labels unused) minus
``negatives.strict_exclude``, each capped at ``embed.pool_max_rows`` rows (a seeded sample). The shards are written
to the step's scratch folder first, one by one, so a killed run resumes at its first missing shard.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cdco_core.steps.base import Step, StepCall, model_section

if TYPE_CHECKING:
    from cdco_core.cache import Record
    from cdco_core.config import Config
    from cdco_core.plan import Node


def section(cfg: Config, node: Node) -> dict[str, Any]:
    from cdco_core.odms.corpora import odms_seed
    from cdco_core.odms.embed import resolve_dtype

    role = node.params["role"]
    pool = ({"cap": cfg.embed.pool_max_rows, "seed": odms_seed(cfg.seed, node.params.get("seed", 0))}
            if role == "pool" else None)
    return {"model": model_section(cfg), "pooling": cfg.embed.pooling, "role": role, "pool": pool,
            "dtype": str(resolve_dtype(cfg.embed.dtype)).split(".")[-1]}


@functools.lru_cache(maxsize=2)
def _encoder(model_json: str, dtype_name: str) -> tuple[Any, Any]:
    """The frozen encoder cast to the embedding dtype, loaded once per process (our own copy: nothing else sees
    the cast)."""
    import torch

    from cdco_core.config import ModelConfig
    from cdco_core.models.encoder import load_encoder

    model, tok, _ = load_encoder(ModelConfig.model_validate_json(model_json))
    return model.to(getattr(torch, dtype_name)), tok


def corpus(cfg: Config, node: Node, task_record: Record) -> pd.DataFrame:
    """The rows this node embeds: the task's cleaned train split (capped for the pool)."""
    from cdco_core.data import open_task
    from cdco_core.odms.corpora import cap_rows, clean_corpus, odms_seed

    task = open_task(task_record)
    frame = clean_corpus(task.name, task.splits.get("train"))
    if node.params["role"] != "pool":
        return frame
    return cap_rows(frame, cfg.embed.pool_max_rows, odms_seed(cfg.seed, node.params.get("seed", 0)))


def compute(call: StepCall) -> dict[str, Any]:
    from cdco_core.odms.embed import embed_texts, resolve_dtype
    from cdco_core.odms.shards import fill_shards, vectors_table

    cfg, name = call.cfg, call.node.params["dataset"]
    frame = corpus(cfg, call.node, call.inputs[f"prepare[{name}]"])
    dtype = str(resolve_dtype(cfg.embed.dtype)).split(".")[-1]

    total = len(frame)

    def report(done: int) -> None:  # rows embedded so far, shards read back from the scratch folder included
        if call.on_step is not None:
            call.on_step({"step": done, "total": total, "unit": "row"})

    def rows_to_table(start: int, stop: int) -> Any:
        rows = frame.iloc[start:stop]
        model, tok = _encoder(cfg.model.model_dump_json(), dtype)
        report(start)
        vecs = embed_texts(model, tok, rows["text_a"].tolist(), rows["text_b"].tolist(),
                           max_length=cfg.model.max_length, batch_tokens=cfg.embed.batch_tokens,
                           max_batch_size=cfg.embed.max_batch_size, on_rows=lambda done: report(start + done))
        return vectors_table(rows["example_id"].tolist(), name, vecs)

    res = fill_shards(call.scratch, call.key, len(frame), cfg.embed.shard_rows, rows_to_table)
    shards = []
    for path in map(Path, res["shards"]):
        path.replace(call.out / path.name)  # the verified shard moves into the published folder
        shards.append(path.name)
    return {"dataset": name, "role": call.node.params["role"], "rows": len(frame), "shards": shards,
            "computed_shards": res["computed"], "dtype": dtype}


def load_embeddings(records: list[Record]) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of embed records as (frame[example_id, dataset, role], (N, H) vectors), in the records' order."""
    from cdco_core.odms.shards import read_shards

    frames, vecs = [], []
    for r in records:
        meta, v = read_shards([r.path(s) for s in r.outputs["shards"]])
        meta["role"] = r.outputs["role"]
        frames.append(meta)
        vecs.append(v)
    return pd.concat(frames, ignore_index=True), np.concatenate(vecs)


STEP = Step("embed", section, compute, label=lambda node: node.params["dataset"])
