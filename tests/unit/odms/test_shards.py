"""Embedding shards: content addressing, no recompute, resume, corruption, never another model's shards."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from cdco_core.config import load_config
from cdco_core.odms.pipeline import Corpus, embed_corpora, embed_key, load_embeddings
from cdco_core.odms.shards import shard_status


def _corpus(name: str, role: str, n: int, tag: str = "") -> Corpus:
    frame = pd.DataFrame({"example_id": [f"{name}:train:{i}" for i in range(n)],
                          "text_a": [f"{tag}sentence number {i} of {name}" for i in range(n)],
                          "text_b": [""] * n})
    return Corpus(name, role, frame)


@pytest.fixture
def cfg():
    return load_config("smoke", ["embed.shard_rows=16"])


def test_same_digest_no_recompute_changed_dataset_only_its_shards(cfg):
    corpora = [_corpus("aa", "anchor", 40), _corpus("pp", "pool", 20)]
    first = embed_corpora(cfg, corpora, progress=False)
    assert first["datasets"]["aa"]["computed"] == [0, 1, 2] and first["datasets"]["pp"]["computed"] == [0, 1]
    mtimes = {p: Path(p).stat().st_mtime_ns for d in first["datasets"].values() for p in d["shards"]}

    again = embed_corpora(cfg, corpora, progress=False)
    assert again["cached"] and again["digest"] == first["digest"]
    assert all(Path(p).stat().st_mtime_ns == t for p, t in mtimes.items())

    corpora[1] = _corpus("pp", "pool", 20, tag="edited ")
    changed = embed_corpora(cfg, corpora, progress=False)
    assert changed["datasets"]["aa"]["computed"] == []
    assert changed["datasets"]["pp"]["computed"] == [0, 1]
    assert changed["datasets"]["pp"]["dir"] != first["datasets"]["pp"]["dir"]
    meta, vecs = load_embeddings(changed)
    assert vecs.shape == (60, 32) and meta["role"].tolist() == ["anchor"] * 40 + ["pool"] * 20


def test_resume_after_deleted_truncated_or_edited_shard(cfg):
    corpora = [_corpus("aa", "anchor", 40)]
    first = embed_corpora(cfg, corpora, progress=False)
    shards = [Path(p) for p in first["datasets"]["aa"]["shards"]]
    _, before = load_embeddings(first)

    shards[1].unlink()
    assert embed_corpora(cfg, corpora, progress=False)["datasets"]["aa"]["computed"] == [1]

    data = shards[2].read_bytes()
    shards[2].write_bytes(data[: len(data) // 2])  # truncated
    assert embed_corpora(cfg, corpora, progress=False)["datasets"]["aa"]["computed"] == [2]

    data = bytearray(shards[0].read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    shards[0].write_bytes(bytes(data))
    res = embed_corpora(cfg, corpora, progress=False)
    assert res["datasets"]["aa"]["computed"] == [0]
    _, after = load_embeddings(res)
    assert abs(after - before).max() < 1e-5


def test_shard_from_another_model_or_pooling_is_never_reused(cfg):
    corpora = [_corpus("aa", "anchor", 20)]
    first = embed_corpora(cfg, corpora, progress=False)
    ident = first["model"]
    frame = corpora[0].frame
    length, dtype = cfg.model.max_length, first["dtype"]
    key = embed_key(frame, ident, "mean", length, dtype)
    assert first["datasets"]["aa"]["key"] == key
    other_model = embed_key(frame, {**ident, "weights_digest": "0" * 64}, "mean", length, dtype)
    other_dtype = embed_key(frame, ident, "mean", length, "float32" if dtype == "bfloat16" else "bfloat16")
    assert len({key, other_model, other_dtype, embed_key(frame, ident, "cls", length, dtype),
                embed_key(frame, ident, "mean", length + 1, dtype)}) == 5

    # A different tiny model (another seed = other weights) gets its own folder, even if the old shards
    # are copied into it: the sidecar's key does not match, so every shard is recomputed.
    cfg2 = load_config("smoke", ["embed.shard_rows=16", "model.tiny.seed=1"])
    key2 = embed_key(frame, ident | {"weights_digest": _tiny_digest(cfg2)}, "mean", length, dtype)
    old_dir = Path(first["datasets"]["aa"]["dir"])
    new_dir = old_dir.parent / f"aa-{key2[:16]}"
    shutil.copytree(old_dir, new_dir)
    assert shard_status(new_dir / "shard-00000.parquet", key2) is None
    second = embed_corpora(cfg2, corpora, progress=False)
    assert second["datasets"]["aa"]["dir"] == str(new_dir)
    assert second["datasets"]["aa"]["computed"] == [0, 1]
    _, v1 = load_embeddings(first)
    _, v2 = load_embeddings(second)
    assert abs(v1 - v2).max() > 1e-3


def _tiny_digest(cfg) -> str:
    from cdco_core.models.encoder import model_identity

    return model_identity(cfg.model).weights_digest
