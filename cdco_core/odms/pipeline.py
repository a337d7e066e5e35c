"""ODMS as three content-addressed steps: embed -> manifold -> negatives.

Each step runs what it needs before it (from cache when unchanged) and returns JSON-able paths and digests.
Outputs live under ``CDCO_HOME/cache/``:

    embeddings/<dataset>-<key16>/shard-NNNNN.{parquet,json}   key = H(corpus content, model identity incl. weights
                                                               digest, pooling, max length, code version)
    manifold/<key16>/{coords.parquet, reducer.joblib, meta.json}   key = H(embedding digests, manifold config)
    negatives/<key16>/{negatives.parquet, manifold.png, distances.png, meta.json}
                                                               key = H(manifold digest, negatives config)

The anchors are the ID tasks' train splits; the OOD pool is the OOD tasks' train splits (labels unused) minus
``negatives.strict_exclude``, each capped at ``embed.pool_max_rows`` rows (seeded sample).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cdco_core.config import Config, cdco_home
from cdco_core.errors import InputError
from cdco_core.io import sha256_file, sha256_frame, sha256_json, write_json, write_parquet

log = logging.getLogger(__name__)

EMBED_VERSION = "1"  # bump when embedding code changes its output: every shard is recomputed
MANIFOLD_VERSION = "1"
NEGATIVES_VERSION = "1"
NEGATIVE_COLUMNS = ["anchor_task", "anchor_id", "negative_dataset", "negative_id", "manifold_distance",
                    "raw_cosine", "rank"]


@dataclass
class Corpus:
    """Texts of one dataset to embed: ``frame`` has example_id, text_a, text_b."""

    name: str
    role: str  # "anchor" (ID train) or "pool" (OOD train)
    frame: pd.DataFrame


# ------------------------------------------------------------------------------------------ corpora
def odms_corpora(cfg: Config, tasks: list | None = None) -> list[Corpus]:
    """The ID anchors and the OOD pool, cleaned, with the pool cap and strict exclusion applied.

    Raises:
        InputError: no ID task; ``negatives.strict_exclude`` names an unknown OOD task; the pool is empty;
            a dataset has no train split or only empty texts.
    """
    if tasks is None:
        from cdco_core.data import load_tasks

        tasks = load_tasks(cfg.data)
    ood = [t for t in tasks if t.spec.kind == "OOD"]
    unknown = sorted(set(cfg.negatives.strict_exclude) - {t.name for t in ood})
    if unknown:
        raise InputError(f"negatives.strict_exclude: {unknown} are not OOD tasks; OOD tasks configured: "
                         f"{sorted(t.name for t in ood) or 'none'}")
    anchors = [t for t in tasks if t.spec.kind == "ID"]
    pool = [t for t in ood if t.name not in cfg.negatives.strict_exclude]
    if not anchors:
        raise InputError("ODMS needs at least one task with kind: ID (the anchors); none is configured")
    if not pool:
        why = (f"every OOD task is excluded by negatives.strict_exclude={cfg.negatives.strict_exclude}" if ood
               else "no task with kind: OOD is configured")
        raise InputError(f"the OOD pool is empty: {why}")
    out = [Corpus(t.name, "anchor", clean_corpus(t.name, t.splits.get("train"))) for t in anchors]
    for t in pool:
        frame = clean_corpus(t.name, t.splits.get("train"))
        out.append(Corpus(t.name, "pool", cap_rows(frame, cfg.embed.pool_max_rows, cfg.seed)))
    return out


def clean_corpus(name: str, df: pd.DataFrame | None) -> pd.DataFrame:
    """example_id, text_a, text_b with whitespace stripped; rows whose texts are all empty are dropped.

    Raises:
        InputError: no train split, no rows, or every text empty after cleaning (names the dataset).
    """
    if df is None or len(df) == 0:
        raise InputError(f"dataset {name!r}: its train split is missing or empty; ODMS embeds train splits")
    a = df["text_a"].fillna("").astype(str).str.strip()
    b = df["text_b"].fillna("").astype(str).str.strip() if "text_b" in df else pd.Series("", index=df.index)
    keep = (a != "") | (b != "")
    if not keep.any():
        raise InputError(f"dataset {name!r}: all {len(df)} texts of the train split are empty after cleaning")
    if not keep.all():
        log.warning("dataset %s: dropped %d rows with empty text", name, int((~keep).sum()))
    out = pd.DataFrame({"example_id": df["example_id"].astype(str), "text_a": a, "text_b": b})[keep]
    return out.reset_index(drop=True)


def cap_rows(df: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """A seeded uniform sample of ``cap`` rows (original order kept), or all rows."""
    if cap is None or len(df) <= cap:
        return df
    idx = np.sort(np.random.default_rng(seed).choice(len(df), size=cap, replace=False))
    return df.iloc[idx].reset_index(drop=True)


# -------------------------------------------------------------------------------------------- embed
def embed_key(frame: pd.DataFrame, identity: dict[str, str], pooling: str, max_length: int,
              dtype: str = "float32") -> str:
    """Digest addressing a corpus' shards: what the vectors depend on, and nothing else."""
    return sha256_json({"data": sha256_frame(frame[["example_id", "text_a", "text_b"]]), "model": identity,
                        "pooling": pooling, "max_length": max_length, "dtype": dtype, "version": EMBED_VERSION})


def embed_corpora(cfg: Config, corpora: list[Corpus], progress: bool = True) -> dict[str, Any]:
    """Embed every corpus into verified shards; the encoder is loaded only if some shard is missing."""
    from cdco_core.models.encoder import load_encoder, model_identity
    from cdco_core.odms.embed import embed_texts, resolve_dtype
    from cdco_core.odms.shards import fill_shards, vectors_table

    identity = model_identity(cfg.model).as_dict()
    dtype = resolve_dtype(cfg.embed.dtype)
    loaded: list[Any] = []

    def encoder() -> tuple[Any, Any]:
        if not loaded:
            model, tok, _ = load_encoder(cfg.model)
            loaded.extend([model.to(dtype), tok])  # our own frozen copy: nothing else sees the cast
        return loaded[0], loaded[1]

    datasets = {}
    for c in corpora:
        key = embed_key(c.frame, identity, cfg.embed.pooling, cfg.model.max_length, str(dtype).split(".")[-1])
        out_dir = cdco_home() / "cache" / "embeddings" / f"{c.name}-{key[:16]}"

        def compute(start: int, stop: int, c: Corpus = c) -> Any:
            rows = c.frame.iloc[start:stop]
            model, tok = encoder()
            vecs = embed_texts(model, tok, rows["text_a"].tolist(), rows["text_b"].tolist(),
                               max_length=cfg.model.max_length, batch_tokens=cfg.embed.batch_tokens,
                               max_batch_size=cfg.embed.max_batch_size, progress=progress,
                               desc=f"embed {c.name} rows {start}-{stop}")
            return vectors_table(rows["example_id"].tolist(), c.name, vecs)

        res = fill_shards(out_dir, key, len(c.frame), cfg.embed.shard_rows, compute)
        datasets[c.name] = {"role": c.role, "rows": len(c.frame), "key": key, "dir": str(out_dir), **res}
    return {"datasets": datasets, "model": identity, "dtype": str(dtype).split(".")[-1],
            "digest": sha256_json({n: d["digest"] for n, d in datasets.items()}),
            "cached": not any(d["computed"] for d in datasets.values())}


def embed_step(cfg: Config) -> dict[str, Any]:
    """Embed the ID anchors and the OOD pool (cached shards; only missing or invalid shards are computed).

    Returns:
        {"datasets": {name: {"role", "rows", "key", "dir", "shards", "computed", "digest"}}, "model",
        "digest", "cached", "seconds"}
    """
    t0 = time.perf_counter()
    result = embed_corpora(cfg, odms_corpora(cfg))
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def load_embeddings(embed: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray]:
    """All embedded rows as (frame[example_id, dataset, role], (N, H) vectors), anchors first, in step order."""
    from cdco_core.odms.shards import read_shards

    frames, vecs = [], []
    for d in embed["datasets"].values():
        meta, v = read_shards([Path(p) for p in d["shards"]])
        meta["role"] = d["role"]
        frames.append(meta)
        vecs.append(v)
    return pd.concat(frames, ignore_index=True), np.concatenate(vecs)


# ----------------------------------------------------------------------------------------- manifold
def _verified_meta(out_dir: Path, files: dict[str, str]) -> dict[str, Any] | None:
    """meta.json of a finished step output whose listed files all match their recorded sha256, else None."""
    meta_path = out_dir / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        for name, field in files.items():
            if sha256_file(out_dir / name) != meta[field]:
                return None
    except (OSError, ValueError, KeyError):
        return None
    return meta


def manifold_for(cfg: Config, embed: dict[str, Any]) -> dict[str, Any]:
    """Fit (or reuse) the manifold for an embed result. See :func:`manifold_step`."""
    from cdco_core.odms.manifold import fit_manifold, save_reducer
    from cdco_core.odms.shards import vectors_table

    key = sha256_json({"embed": embed["digest"], "roles": {n: d["role"] for n, d in embed["datasets"].items()},
                       "manifold": cfg.manifold.model_dump(mode="json"), "version": MANIFOLD_VERSION})
    out_dir = cdco_home() / "cache" / "manifold" / key[:16]
    files = {"coords.parquet": "coords_sha256", "reducer.joblib": "reducer_sha256"}
    meta = _verified_meta(out_dir, files)
    cached = meta is not None
    if meta is None:
        import pyarrow.parquet as pq

        from cdco_core.io import atomic_path

        frame, vecs = load_embeddings(embed)
        m = cfg.manifold
        coords, reducer, sample, timings = fit_manifold(vecs, m.n_components, m.n_neighbors, m.min_dist,
                                                        m.sample_size, m.seed)
        table = vectors_table(frame["example_id"].tolist(), frame["dataset"].tolist(), coords)
        table = table.rename_columns(["example_id", "dataset", "coords"]).append_column("role", _str_col(frame))
        with atomic_path(out_dir / "coords.parquet") as tmp:
            pq.write_table(table, tmp)
        meta = {"key": key, "rows": len(frame), "sample_rows": len(sample), "n_components": m.n_components,
                "coords_sha256": sha256_file(out_dir / "coords.parquet"),
                "reducer_sha256": save_reducer(reducer, out_dir / "reducer.joblib"),
                **{k: round(v, 3) for k, v in timings.items()}}
        write_json(meta, out_dir / "meta.json")  # last: its presence marks a finished output
    return {"path": str(out_dir / "coords.parquet"), "reducer": str(out_dir / "reducer.joblib"),
            "reducer_sha256": meta["reducer_sha256"], "digest": meta["coords_sha256"], "key": key,
            "rows": meta["rows"], "sample_rows": meta["sample_rows"], "cached": cached}


def _str_col(frame: pd.DataFrame) -> Any:
    import pyarrow as pa

    return pa.array(frame["role"].tolist(), pa.string())


def load_coords(path: str | Path) -> pd.DataFrame:
    """The coordinates table as a frame (example_id, dataset, role); the (N, d) array is in ``.attrs["xy"]``."""
    import pyarrow.parquet as pq

    from cdco_core.odms.shards import table_vectors

    table = pq.read_table(path)
    frame = pd.DataFrame({c: table.column(c).to_pylist() for c in ("example_id", "dataset", "role")})
    frame.attrs["xy"] = table_vectors(table, "coords")
    return frame


def manifold_step(cfg: Config) -> dict[str, Any]:
    """Embed (cached), then fit UMAP on a seeded sample of the union and map every point (cached).

    Returns:
        {"path": coords.parquet, "reducer", "reducer_sha256", "digest", "key", "rows", "sample_rows", "cached",
        "embed": {"digest", "cached"}, "seconds"}
    """
    t0 = time.perf_counter()
    embed = embed_step(cfg)
    result = manifold_for(cfg, embed)
    result["embed"] = {"digest": embed["digest"], "cached": embed["cached"]}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


# ---------------------------------------------------------------------------------------- negatives
def negatives_for(cfg: Config, embed: dict[str, Any], manifold: dict[str, Any]) -> dict[str, Any]:
    """Select (or reuse) the hard negatives and their plots. See :func:`negatives_step`."""
    key = sha256_json({"manifold": manifold["digest"], "embed": embed["digest"], "seed": cfg.seed,
                       "negatives": cfg.negatives.model_dump(mode="json"), "version": NEGATIVES_VERSION})
    out_dir = cdco_home() / "cache" / "negatives" / key[:16]
    meta = _verified_meta(out_dir, {"negatives.parquet": "sha256"})
    if meta is not None and not all((out_dir / p).exists() for p in ("manifold.png", "distances.png")):
        meta = None  # a lost plot is redrawn with the table
    cached = meta is not None
    if meta is None:
        meta = _compute_negatives(cfg, embed, manifold, out_dir)
        meta["key"] = key
        write_json(meta, out_dir / "meta.json")
    plots = [str(out_dir / p) for p in ("manifold.png", "distances.png")]
    return {"path": str(out_dir / "negatives.parquet"), "digest": meta["sha256"], "plots": plots,
            "rows": meta["rows"], "anchors": meta["anchors"], "short_anchors": meta["short_anchors"],
            "key": key, "cached": cached}


def _compute_negatives(cfg: Config, embed: dict[str, Any], manifold: dict[str, Any], out_dir: Path) -> dict:
    from cdco_core.odms.negatives import build_index, select_negatives
    from cdco_core.odms.plots import plot_distances, plot_manifold

    coords = load_coords(manifold["path"])
    frame, vecs = load_embeddings(embed)
    if not (frame["example_id"].to_numpy() == coords["example_id"].to_numpy()).all():
        raise RuntimeError("manifold coordinates and embeddings are out of order")  # internal invariant
    xy = coords.attrs["xy"]
    is_pool = (frame["role"] == "pool").to_numpy()
    anchors, pool = frame[~is_pool].reset_index(drop=True), frame[is_pool].reset_index(drop=True)
    names = sorted(pool["dataset"].unique())
    codes = pool["dataset"].map({n: i for i, n in enumerate(names)}).to_numpy()
    n = cfg.negatives
    index = build_index(xy[is_pool], n.index, n.ivf_nlist, n.ivf_nprobe, n.hnsw_m, cfg.seed) \
        if n.mode == "manifold" else None
    sel = select_negatives(xy[~is_pool], vecs[~is_pool], xy[is_pool], vecs[is_pool], codes, n.k, n.fn_ceiling,
                           n.per_dataset_cap, index=index, mode=n.mode, seed=cfg.seed)
    table = negatives_table(anchors, pool, sel)
    write_parquet(table, out_dir / "negatives.parquet")
    plot_manifold(coords, table, out_dir / "manifold.png", n.plot_anchors, cfg.seed)
    plot_distances(table, out_dir / "distances.png", n.fn_ceiling)
    short = int(((sel["index"] >= 0).sum(axis=1) < n.k).sum())
    if short:
        log.warning("%d of %d anchors have fewer than k=%d negatives (guard/cap/pool size)", short, len(anchors), n.k)
    return {"sha256": sha256_file(out_dir / "negatives.parquet"), "rows": len(table), "anchors": len(anchors),
            "short_anchors": short}


def negatives_table(anchors: pd.DataFrame, pool: pd.DataFrame, sel: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long table, one row per (anchor, negative): the CONTRACT columns; rank 1 = nearest on the manifold."""
    idx = sel["index"]  # (A, k)
    a_rows, slot = np.nonzero(idx >= 0)
    p_rows = idx[a_rows, slot]
    return pd.DataFrame({
        "anchor_task": anchors["dataset"].to_numpy()[a_rows],
        "anchor_id": anchors["example_id"].to_numpy()[a_rows],
        "negative_dataset": pool["dataset"].to_numpy()[p_rows],
        "negative_id": pool["example_id"].to_numpy()[p_rows],
        "manifold_distance": sel["distance"][a_rows, slot].astype(np.float32),
        "raw_cosine": sel["cosine"][a_rows, slot].astype(np.float32),
        "rank": (slot + 1).astype(np.int32),
    })[NEGATIVE_COLUMNS]


def negatives_step(cfg: Config) -> dict[str, Any]:
    """Embed, fit the manifold (both cached), index the OOD pool and select hard negatives; write plots.

    Returns:
        {"path": negatives.parquet, "digest", "plots": [manifold.png, distances.png], "rows", "anchors",
        "short_anchors", "key", "cached", "manifold": {"digest", "cached"}, "embed": {"digest", "cached"},
        "seconds"}
    """
    t0 = time.perf_counter()
    embed = embed_step(cfg)
    manifold = manifold_for(cfg, embed)
    result = negatives_for(cfg, embed, manifold)
    result["manifold"] = {"digest": manifold["digest"], "cached": manifold["cached"], "path": manifold["path"]}
    result["embed"] = {"digest": embed["digest"], "cached": embed["cached"]}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result
