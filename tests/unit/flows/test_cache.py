"""Content-addressed task caching (tasks/_cache.py): keys, output fingerprints, stale records."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tasks._cache import StepCache, fingerprint, fresh_key, output_digest, verify

CFG = {"seed": 0, "embed": {"shard_rows": 64, "batch_tokens": 2048},
       "train": {"lr": 1.0, "stages": [{"name": "a"}]}, "eval": {"methods": ["cdco"]}}


def _key(policy: StepCache, cfg=CFG, **args) -> str:
    return policy.base_key({"cfg": cfg, **args})


def test_key_follows_sections_args_and_nothing_else() -> None:
    p = StepCache(step="embed", sections=("seed", "embed"), code=("tasks/_cache.py",))
    base = _key(p, upstream={"data": "d1"})
    assert base == _key(p, upstream={"data": "d1"})
    assert base != _key(p, upstream={"data": "d2"})  # an upstream digest
    assert base != _key(p, cfg={**CFG, "embed": {**CFG["embed"], "shard_rows": 32}}, upstream={"data": "d1"})
    # a section the step does not read leaves the key alone (so do the profile's name and the run id)
    assert base == _key(p, cfg={**CFG, "eval": {"methods": ["ca_mtl"]}}, upstream={"data": "d1"})
    assert base != _key(StepCache(step="manifold", sections=("seed", "embed"), code=("tasks/_cache.py",)),
                        upstream={"data": "d1"})


def test_excluded_subsection_does_not_enter_the_key() -> None:
    p = StepCache(step="train", sections=("train",), exclude=("train.stages",))
    later = {**CFG, "train": {"lr": 1.0, "stages": [{"name": "a"}, {"name": "b"}]}}
    assert _key(p) == _key(p, cfg=later)
    assert _key(p) != _key(p, cfg={**CFG, "train": {"lr": 2.0, "stages": [{"name": "a"}]}})


def test_code_version_changes_the_key(tmp_path, monkeypatch) -> None:
    import tasks._cache as cache

    src = tmp_path / "step.py"
    src.write_text("x = 1\n")
    monkeypatch.setattr(cache, "PROJECT_ROOT", tmp_path)
    cache.code_version.cache_clear()
    p = StepCache(step="s", code=("step.py",))
    before = _key(p)
    src.write_text("x = 2\n")
    cache.code_version.cache_clear()
    assert _key(p) != before
    cache.code_version.cache_clear()


def test_fingerprint_hashes_files_and_folders_and_verify_catches_changes(tmp_path: Path) -> None:
    f = tmp_path / "out.parquet"
    f.write_bytes(b"abc")
    d = tmp_path / "shards"
    d.mkdir()
    (d / "0.parquet").write_bytes(b"x")
    res = fingerprint({"path": str(f), "dir": str(d), "rows": 3, "cached": True, "note": str(f)})
    assert res["_files"][str(f)] == hashlib.sha256(b"abc").hexdigest()
    assert set(res["_files"]) == {str(f), str(d)}  # only path-like keys count ("note" does not)
    assert verify(res)
    assert output_digest(res) == output_digest({**res, "cached": False})  # flags do not move digests
    (d / "0.parquet").write_bytes(b"y")  # corrupt a shard
    assert not verify(res)
    (d / "0.parquet").write_bytes(b"x")
    f.unlink()  # a file gone
    assert not verify(res)
    assert not verify({"path": str(f)}) and not verify(None)


@dataclass
class Record:
    result: dict


@dataclass
class FakeStore:
    """Just the two calls fresh_key makes on Prefect's ResultStore."""

    records: dict = field(default_factory=dict)

    def exists(self, key: str) -> bool:
        return key in self.records

    def read(self, key: str) -> Record:
        return self.records[key]


def test_fresh_key_skips_stale_records_deterministically(tmp_path: Path) -> None:
    f = tmp_path / "out.bin"
    f.write_bytes(b"v1")
    store = FakeStore()
    assert fresh_key(store, "k") == "k"  # nothing cached: compute under k
    store.records["k"] = Record(fingerprint({"path": str(f)}))
    assert fresh_key(store, "k") == "k"  # valid: a cache hit
    f.write_bytes(b"corrupt")
    moved = fresh_key(store, "k")
    assert moved == hashlib.sha256(b"k:stale").hexdigest()  # recompute under the next key in the chain
    store.records[moved] = Record(fingerprint({"path": str(f)}))  # the recomputed record
    assert fresh_key(store, "k") == moved  # found again on the next run


@pytest.mark.parametrize("bad", [Record({"no": "files"}), None])
def test_unreadable_or_unverifiable_records_count_as_stale(bad) -> None:
    class Broken(FakeStore):
        def read(self, key):
            if bad is None:
                raise OSError("truncated record")
            return bad

    assert fresh_key(Broken(records={"k": 1}), "k") != "k"
