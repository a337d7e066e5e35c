"""Vector tables as Parquet shards with a size/digest sidecar, so a truncated or edited shard is never trusted.

A shard ``shard-00003.parquet`` has columns ``example_id`` (str), ``dataset`` (str) and ``vector``
(fixed-size list of float32). Its sidecar ``shard-00003.json`` is written *after* the Parquet file and holds
``{"rows", "bytes", "sha256", "key"}``; a shard without a sidecar, or whose size or sha256 differ, is invalid
and gets rebuilt. ``key`` is the digest of what produced it (data, model, pooling, max length).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cdco_core.io import atomic_path, sha256_file, write_json


def vectors_table(example_ids: Sequence[str], dataset: str | Sequence[str], vectors: np.ndarray) -> Any:
    """Build an Arrow table (example_id, dataset, vector) from (N, H) float32 vectors."""
    import pyarrow as pa

    n, h = vectors.shape
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    datasets = [dataset] * n if isinstance(dataset, str) else list(dataset)
    return pa.table({
        "example_id": pa.array(list(example_ids), pa.string()),
        "dataset": pa.array(datasets, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, h),
    })


def table_vectors(table: Any, column: str = "vector") -> np.ndarray:
    """(N, H) float32 view of a fixed-size-list column, without a Python loop."""
    col = table.column(column).combine_chunks()
    h = col.type.list_size
    return col.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, h)


def sidecar_path(shard: Path) -> Path:
    return shard.with_suffix(".json")


def write_shard(path: Path, table: Any, key: str) -> dict[str, Any]:
    """Write a shard atomically, then its sidecar; returns the sidecar's content."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    meta = {"rows": table.num_rows, "bytes": path.stat().st_size, "sha256": sha256_file(path), "key": key}
    write_json(meta, sidecar_path(path))
    return meta


def shard_status(path: Path, key: str) -> dict[str, Any] | None:
    """The sidecar of a valid shard, or None when the shard is missing, truncated, edited or from another key."""
    side = sidecar_path(path)
    if not path.exists() or not side.exists():
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):  # valid JSON of another shape (a list, a number): not our sidecar
        return None
    if meta.get("key") != key or path.stat().st_size != meta.get("bytes"):
        return None  # size check first: it catches truncation without reading the file
    if sha256_file(path) != meta.get("sha256"):
        return None
    return meta


def read_shards(paths: Sequence[Path]) -> tuple[pd.DataFrame, np.ndarray]:
    """Concatenate shards into (frame[example_id, dataset], (N, H) float32 vectors)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(p) for p in paths])
    meta = pd.DataFrame({"example_id": table.column("example_id").to_pylist(),
                         "dataset": table.column("dataset").to_pylist()})
    return meta, table_vectors(table)


def fill_shards(out_dir: Path, key: str, n_rows: int, shard_rows: int,
                compute: Callable[[int, int], Any]) -> dict[str, Any]:
    """Make sure every shard ``[start, stop)`` of a corpus exists and verifies; compute only the others.

    Shards are visited in order, so an interrupted run resumes at its first missing shard.

    Args:
        out_dir: folder of this corpus' shards (already addressed by ``key``).
        key: digest of what produces the shards; stored in every sidecar.
        n_rows: corpus rows.
        shard_rows: rows per shard.
        compute: ``compute(start, stop) -> pyarrow.Table`` for rows ``[start, stop)``.

    Returns:
        {"shards": [paths], "computed": [indices recomputed], "digest": sha256 over the shards' digests}
    """
    from cdco_core.io import sha256_json

    paths, computed, digests = [], [], []
    for i, start in enumerate(range(0, n_rows, shard_rows)):
        path = out_dir / f"shard-{i:05d}.parquet"
        meta = shard_status(path, key)
        if meta is None:
            meta = write_shard(path, compute(start, min(start + shard_rows, n_rows)), key)
            computed.append(i)
        paths.append(str(path))
        digests.append(meta["sha256"])
    return {"shards": paths, "computed": computed, "digest": sha256_json(digests)}
