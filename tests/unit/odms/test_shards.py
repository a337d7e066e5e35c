"""Embedding shards through the embed step: content addressing, no recompute, resume after a kill from the
step's scratch shards (deleted, truncated or edited ones recomputed), never another model's shards."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdco_core import cache
from cdco_core.odms import shards as S
from cdco_core.plan import build_plan
from cdco_core.profile import load_profile
from cdco_core.runner import run_plan
from cdco_core.steps import node_key
from cdco_core.steps.embed import load_embeddings

NODE = "embed[rotten_tomatoes]"  # 96 train rows in the smoke profile: 6 shards of 16


class Killed(Exception):
    """Stands in for a kill -9 between two shards."""


@pytest.fixture
def cfg():
    return load_profile("smoke", ["embed.shard_rows=16"])


def _run(cfg, *nodes: str) -> dict:
    return run_plan(build_plan(cfg, ["cdco"], [0]), targets=list(nodes or [NODE]))


def _scratch(cfg, node: str = NODE) -> tuple[Path, str]:
    """(the node's scratch folder, its key)."""
    plan = build_plan(cfg, ["cdco"], [0])
    n = plan.nodes[node]
    done = run_plan(plan, targets=n.inputs)
    key = node_key(plan.config_for(n), n, {i: done[i] for i in n.inputs})
    out = cache.step_dir("embed", n.params["dataset"], key)
    return out.with_name(out.name + ".partial"), key


def _killed_at(monkeypatch, stop_at: int) -> list[int]:
    """Make the embed step die before the shard starting at row ``stop_at``; returns the shards it computes."""
    real, computed = S.fill_shards, []

    def fill(out_dir, key, n_rows, shard_rows, compute):
        def once(start, stop):
            if start >= stop_at:
                raise Killed
            computed.append(start // shard_rows)
            return compute(start, stop)

        return real(out_dir, key, n_rows, shard_rows, once)

    monkeypatch.setattr(S, "fill_shards", fill)
    return computed


REAL_FILL = S.fill_shards


def test_same_digest_no_recompute_changed_dataset_only_its_shards(tmp_path):
    rows = [f"protein kinase {i} binds the receptor domain in assay {i % 7}" for i in range(40)]
    bio = tmp_path / "bio.csv"
    pd.DataFrame({"text": rows, "label": [i % 2 for i in range(40)]}).to_csv(bio, index=False)
    cfg = load_profile("smoke", ["embed.shard_rows=16", f"data.tasks=[{{name: bio, kind: OOD, type: classification, "
                                 f"files: {{train: {bio}}}, text: [text], label: label}}]"])
    embeds = [n for n in build_plan(cfg, ["cdco"], [0]).nodes if n.startswith("embed[")]
    assert "embed[bio]" in embeds and NODE in embeds
    first = _run(cfg, *embeds)
    assert first[NODE].outputs["computed_shards"] == [0, 1, 2, 3, 4, 5]
    n_bio = first["embed[bio]"].outputs["rows"]
    assert 16 < n_bio <= 40 and first["embed[bio]"].outputs["computed_shards"] == list(range((n_bio + 15) // 16))
    mtimes = {(n, f): first[n].path(f).stat().st_mtime_ns for n in embeds for f in first[n].outputs["shards"]}

    again = _run(cfg, *embeds)
    assert all(again[n].cached and again[n].digest == first[n].digest for n in embeds)
    assert {(n, f): again[n].path(f).stat().st_mtime_ns for n in embeds for f in again[n].outputs["shards"]} == mtimes

    pd.DataFrame({"text": [f"edited {r}" for r in rows], "label": [i % 2 for i in range(40)]}).to_csv(bio, index=False)
    changed = _run(cfg, *embeds)
    assert changed[NODE].cached and changed["embed[sms_spam]"].cached
    assert not changed["embed[bio]"].cached
    assert changed["embed[bio]"].outputs["computed_shards"] == first["embed[bio]"].outputs["computed_shards"]
    assert changed["embed[bio]"].dir != first["embed[bio]"].dir
    meta, vecs = load_embeddings([changed[NODE], changed["embed[bio]"]])
    assert vecs.shape == (96 + n_bio, 32) and meta["role"].tolist() == ["anchor"] * 96 + ["pool"] * n_bio


def test_resume_after_a_kill_with_deleted_truncated_or_edited_shard(cfg, monkeypatch):
    scratch, _ = _scratch(cfg)
    computed = _killed_at(monkeypatch, 48)
    with pytest.raises(Killed):
        _run(cfg)
    assert computed == [0, 1, 2]
    shards = [scratch / f"shard-{i:05d}.parquet" for i in range(3)]
    assert all(p.is_file() for p in shards)  # the killed run's shards are kept for the next one

    def resumed() -> list[int]:
        computed.clear()
        with pytest.raises(Killed):
            _run(cfg)
        return list(computed)

    assert resumed() == []
    shards[1].unlink()
    assert resumed() == [1]
    data = shards[2].read_bytes()
    shards[2].write_bytes(data[: len(data) // 2])  # truncated
    assert resumed() == [2]
    data = bytearray(shards[0].read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    shards[0].write_bytes(bytes(data))
    assert resumed() == [0]

    monkeypatch.setattr(S, "fill_shards", REAL_FILL)
    done = _run(cfg)[NODE]
    assert done.outputs["computed_shards"] == [3, 4, 5] and not scratch.exists()  # scratch gone once published
    _, after = load_embeddings([done])
    shutil.rmtree(Path(done.dir))  # from an empty cache: the same vectors
    fresh = _run(cfg)[NODE]
    assert fresh.outputs["computed_shards"] == [0, 1, 2, 3, 4, 5]
    _, before = load_embeddings([fresh])
    assert abs(after - before).max() < 1e-5


def test_a_published_shard_that_changed_is_never_trusted(cfg):
    first = _run(cfg)[NODE]
    shard = first.path(first.outputs["shards"][1])
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    again = _run(cfg)[NODE]
    assert not again.cached and again.outputs["computed_shards"] == [0, 1, 2, 3, 4, 5]
    assert again.files == first.files  # rebuilt: the same bytes as the first time


def test_shard_from_another_model_or_dtype_or_length_is_never_reused(cfg, monkeypatch):
    import torch

    from cdco_core.odms.embed import resolve_dtype

    scratch, key = _scratch(cfg)
    keys = {key}
    other_dtype = "bfloat16" if resolve_dtype(cfg.embed.dtype) == torch.float32 else "float32"
    for extra in (["model.tiny.seed=1"], ["model.max_length=47"], [f"embed.dtype={other_dtype}"]):
        keys.add(_scratch(load_profile("smoke", ["embed.shard_rows=16", *extra]))[1])
    assert len(keys) == 4  # (pooling has one allowed value, "mean": nothing to vary)

    # A different tiny model (another seed = other weights) gets its own folder, even if a killed run's shards
    # are copied into its scratch: the sidecars' key does not match, so every shard is recomputed.
    _killed_at(monkeypatch, 16)
    with pytest.raises(Killed):
        _run(cfg)
    cfg2 = load_profile("smoke", ["embed.shard_rows=16", "model.tiny.seed=1"])
    scratch2, key2 = _scratch(cfg2)
    shutil.copytree(scratch, scratch2, dirs_exist_ok=True)
    assert S.shard_status(scratch2 / "shard-00000.parquet", key) is not None
    assert S.shard_status(scratch2 / "shard-00000.parquet", key2) is None
    monkeypatch.setattr(S, "fill_shards", REAL_FILL)
    second = _run(cfg2)[NODE]
    assert second.outputs["computed_shards"] == [0, 1, 2, 3, 4, 5]
    first = _run(cfg)[NODE]
    assert first.outputs["computed_shards"] == [1, 2, 3, 4, 5] and second.dir != first.dir
    _, v1 = load_embeddings([first])
    _, v2 = load_embeddings([second])
    assert np.abs(v1 - v2).max() > 1e-3
