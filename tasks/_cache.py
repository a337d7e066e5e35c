"""Content-addressed Prefect caching for the step tasks.

A step's cache key is a sha256 of what it reads: the config sections it uses, the digests of its upstream
outputs (passed in as the ``upstream`` argument: small dicts, never DataFrames or models) and the code
version of the modules that implement it. Nothing else (not the profile's name, not the run id), so two
profiles that share a prefix of the pipeline share its cached steps, and different inputs never collide.

A cached record is trusted only if the files it names still hold the bytes they held when it was written:
every task result carries ``_files`` ({path: sha256}), re-hashed before the record is used. A stale record
is not deleted (that would need Prefect internals); the key moves on to ``sha256(key + ":stale")``,
deterministically, so the next run finds the recomputed record under the moved key.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy

from cdco_core.config import PROJECT_ROOT
from cdco_core.io import sha256_file, sha256_json

MAX_STALE_HOPS = 32  # a record replaced more often than this under one key is recomputed anyway
PATH_KEYS = ("path", "checkpoint", "csv", "md", "plots", "shards", "index", "dir", "reducer", "predictions",
             "files")


@functools.lru_cache(maxsize=64)
def code_version(*modules: str) -> str:
    """sha256 of the Python sources under the given project-relative files/folders (missing ones count)."""
    h = hashlib.sha256()
    for rel in modules:
        root = PROJECT_ROOT / rel
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        h.update(rel.encode())
        for f in files:
            if f.is_file():
                h.update(str(f.relative_to(PROJECT_ROOT)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def _collect_paths(obj: Any, key: str = "", out: list[str] | None = None) -> list[str]:
    """Absolute path strings under the result's path-like keys (nested dicts and lists included)."""
    out = [] if out is None else out
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k != "_files":
                _collect_paths(v, str(k), out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _collect_paths(v, key, out)
    elif isinstance(obj, str) and key in PATH_KEYS and Path(obj).is_absolute():
        out.append(obj)
    return out


def digest_path(path: str | Path) -> str | None:
    """sha256 of a file, or of a folder's relative names and file digests; None when absent."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".tmp-"))
        return sha256_json({str(f.relative_to(p)): sha256_file(f) for f in files})
    return None


def fingerprint(result: dict[str, Any]) -> dict[str, Any]:
    """The result with ``_files`` added: {path: sha256} for every output path it names."""
    files = {p: digest_path(p) for p in sorted(set(_collect_paths(result)))}
    return {**result, "_files": files}


def output_digest(result: dict[str, Any]) -> str:
    """What downstream keys use: the content of the step's output files (not flags like ``cached``)."""
    return sha256_json(result.get("_files") or result)


def verify(result: Any) -> bool:
    """True when every file a cached result names still hashes to what was recorded."""
    if not isinstance(result, dict) or "_files" not in result:
        return False
    return all(d is not None and digest_path(p) == d for p, d in result["_files"].items())


@dataclass
class StepCache(CachePolicy):
    """Key = sha256(step, config sections, upstream digests, code version); stale records are skipped.

    The task must take ``cfg`` (the config as a dict) and may take ``upstream`` (a dict of digests) and
    any small JSON-able arguments (method, seed, stage index), all of which enter the key.
    """

    step: str = ""
    sections: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()  # dotted paths inside ``sections`` left out (e.g. train.stages)
    ignore: tuple[str, ...] = field(default=("cfg",))

    def base_key(self, inputs: dict[str, Any]) -> str:
        cfg = inputs["cfg"]
        config = {s: section(cfg, s) for s in self.sections}
        for dotted in self.exclude:
            head, _, last = dotted.rpartition(".")
            if head in config and isinstance(config[head], dict):
                config[head] = {k: v for k, v in config[head].items() if k != last}
        return sha256_json({
            "step": self.step,
            "config": config,
            "args": {k: v for k, v in inputs.items() if k not in self.ignore},
            "code": code_version(*self.code),
        })

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        key = self.base_key(inputs)
        store = getattr(task_ctx, "result_store", None)
        return fresh_key(store, key) if store is not None else key


def section(cfg: dict[str, Any], dotted: str) -> Any:
    """``cfg["a"]["b"]`` for ``"a.b"``."""
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def fresh_key(store: Any, key: str) -> str:
    """``key`` if no record or a valid one exists under it; otherwise follow the stale chain."""
    for _ in range(MAX_STALE_HOPS):
        if not store.exists(key):
            return key
        try:
            if verify(store.read(key).result):
                return key
        except Exception:  # an unreadable record is as stale as a corrupt output
            pass
        key = hashlib.sha256(f"{key}:stale".encode()).hexdigest()
    return key


def cached_task_options() -> dict[str, Any]:
    """Options every step task shares: JSON results (no pickle from a user-writable folder), persisted."""
    return {"persist_result": True, "result_serializer": "json"}


def with_storage(task: Any, storage: Path) -> Any:
    """The task with its result records under ``storage`` (per CDCO_HOME, so homes never share records)."""
    return task.with_options(result_storage=Path(storage))
