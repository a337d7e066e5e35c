"""Prefect's step cache (tasks/_cache.py): the key is the library's step key, and a result file Prefect would read is
kept only if it names the JSON serializer and equals the library's verified record (nothing is ever unpickled)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
from prefect.serializers import JSONSerializer, PickleSerializer

from cdco_core.cache import Record, run_cached
from cdco_core.plan import Node
from cdco_core.profile import config_to_json
from tasks._cache import StepCache, drop_unless_verified, stored_record

MANIFOLD = Node("manifold", "manifold", params={}, inputs=["embed[a]"])


def _key(cfg, upstream: dict[str, str] | None = None, node: Node = MANIFOLD, storage: str = "") -> str:
    ups = {k: Record("embed", k, "k", "/nowhere", {}, digest=d).as_dict()
           for k, d in (upstream or {"embed[a]": "d1"}).items()}
    return StepCache(storage=storage).compute_key(None, {"cfg": config_to_json(cfg), "node": node.as_dict(),
                                                        "upstream": ups}, {})


def test_key_is_the_library_key_and_follows_inputs_section_and_nothing_else(smoke_cfg) -> None:
    from cdco_core.steps import node_key

    base = _key(smoke_cfg)
    up = {"embed[a]": Record("embed", "a", "k", "/nowhere", {}, digest="d1")}
    assert base == node_key(smoke_cfg, MANIFOLD, up)  # one key for Prefect and the library's folder
    assert base == _key(smoke_cfg)
    assert base != _key(smoke_cfg, {"embed[a]": "d2"})  # an upstream digest
    nn = smoke_cfg.manifold.n_neighbors + 1
    assert base != _key(smoke_cfg.model_copy(update={"manifold": smoke_cfg.manifold.model_copy(
        update={"n_neighbors": nn})}))
    # a section the step does not read leaves the key alone (so does the profile's name)
    other = smoke_cfg.model_copy(update={"eval": smoke_cfg.eval.model_copy(update={"methods": ["ca_mtl"]}),
                                         "profile": "renamed"})
    assert base == _key(other)
    negatives = Node("negatives", "negatives", params={}, inputs=["embed[a]"])
    assert base != _key(smoke_cfg, node=negatives)
    prepare = Node("prepare[a]", "prepare", params={"task": "a"})
    assert _key(smoke_cfg, {}, node=prepare) is None  # never cached by Prefect: the data layer addresses it


def test_code_in_the_steps_import_closure_changes_the_key(smoke_cfg, tmp_path, monkeypatch) -> None:
    import cdco_core.cache as cache

    root = tmp_path / "cdco_core"
    shutil.copytree(cache.SOURCE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "SOURCE_ROOT", root)
    before = _key(smoke_cfg)
    (root / "losses.py").write_text((root / "losses.py").read_text() + "\n_EDITED = 1\n")  # not the manifold's code
    cache._code_digest.cache_clear()  # digests are computed once per process; the edit happens mid-process here
    assert _key(smoke_cfg) == before
    manifold = root / "odms" / "manifold.py"
    manifold.write_text(manifold.read_text() + "\n# a comment\n\n")  # the manifold's, but no code
    cache._code_digest.cache_clear()
    assert _key(smoke_cfg) == before
    manifold.write_text(manifold.read_text() + "\n_EDITED = 1\n")
    cache._code_digest.cache_clear()
    assert _key(smoke_cfg) != before
    cache._code_digest.cache_clear()


def _core_record(key: str) -> Record:
    def compute(out: Path, scratch: Path) -> dict:
        (out / "coords.parquet").write_bytes(b"abc")
        return {"rows": 3}

    return run_cached("manifold", "manifold", key, compute)


def _write_prefect(path: Path, result, serializer) -> None:
    """A result file as Prefect writes it (its own ResultRecord), under the storage key ``path.name``."""
    meta = ResultRecordMetadata(storage_key=str(path), serializer=serializer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ResultRecord(metadata=meta, result=result).serialize())


def test_a_valid_record_is_kept_and_read_as_the_core_record(smoke_cfg, tmp_path) -> None:
    storage = tmp_path / "prefect"
    key = _key(smoke_cfg)
    core = _core_record(key)
    _write_prefect(storage / key, core.as_dict(), JSONSerializer())
    assert _key(smoke_cfg, storage=str(storage)) == key
    assert (storage / key).exists()  # kept: Prefect may serve it
    got = stored_record(storage / key, key)
    assert got is not None and got.files == core.files and got.outputs == {"rows": 3} and got.dir == core.dir
    assert stored_record(storage / key, "another-key") is None  # a record under the wrong key is not trusted


def test_a_record_that_differs_from_the_core_record_is_dropped(smoke_cfg, tmp_path) -> None:
    storage = tmp_path / "prefect"
    key = _key(smoke_cfg)
    core = _core_record(key)
    _write_prefect(storage / key, {**core.as_dict(), "outputs": {"rows": 999}}, JSONSerializer())
    assert _key(smoke_cfg, storage=str(storage)) == key
    assert not (storage / key).exists()
    # the core folder changed after Prefect stored a matching record: the record no longer verifies
    _write_prefect(storage / key, core.as_dict(), JSONSerializer())
    core.path("coords.parquet").write_bytes(b"corrupt")
    assert not drop_unless_verified(storage / key, key)
    assert not (storage / key).exists()
    assert not drop_unless_verified(storage / key, key)  # nothing there: nothing kept


@pytest.mark.parametrize("content", [b"{not json", b'{"metadata": {}}', b"[]"])
def test_unreadable_records_are_dropped(tmp_path, content) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    assert not drop_unless_verified(path, "k")
    assert not path.exists()


class _Trap:
    """Unpickling this creates ``marker``: proof that a file was deserialised."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_record_is_dropped_without_being_unpickled(smoke_cfg, tmp_path) -> None:
    storage = tmp_path / "prefect"
    key = _key(smoke_cfg)
    _core_record(key)
    # the payload is live: Prefect's own serializer would run it
    probe = tmp_path / "probe"
    PickleSerializer().loads(PickleSerializer().dumps(_Trap(probe)))
    assert probe.exists()
    marker = tmp_path / "unpickled"
    _write_prefect(storage / key, _Trap(marker), PickleSerializer())
    assert json.loads((storage / key).read_bytes())["metadata"]["serializer"]["type"] == "pickle"
    assert stored_record(storage / key, key) is None
    assert _key(smoke_cfg, storage=str(storage)) == key
    assert not (storage / key).exists()  # dropped: Prefect will run the task, which returns the verified output
    assert not marker.exists()
