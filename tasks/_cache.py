"""Prefect's cache for the step tasks, keyed by the library's own step key (:func:`cdco_core.steps.node_key`).

The key Prefect looks a task up by and the folder the library publishes the step's output in are the same
string, so the two caches cannot disagree: an edit to a step's code changes both.

Prefect persists a task's result (our step record: paths and digests) in ``CDCO_HOME/cache/prefect/<key>``. Before
Prefect may read such a file it is checked here, as raw JSON, without deserialising anything: it must name the JSON
serializer (never pickle: the folder is user-writable) and hold exactly the record that the library's verified
cache holds under that key. Anything else is deleted, so Prefect runs the task, which returns the verified output
(or recomputes it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy

from cdco_core.cache import Record, read_record


def cached_task_options() -> dict[str, Any]:
    """Options every step task shares: JSON results (no pickle from a user-writable folder), persisted."""
    return {"persist_result": True, "result_serializer": "json"}


def wire_inputs(inputs: dict[str, Any]) -> tuple[Any, Any, dict[str, Record]]:
    """(config, node, {input id: record}) from a step task's parameters."""
    from cdco_core.plan import Node
    from cdco_core.profile import config_from_json

    upstream = {k: v if isinstance(v, Record) else Record.from_dict(v) for k, v in inputs["upstream"].items()}
    return config_from_json(inputs["cfg"]), Node.from_dict(inputs["node"]), upstream


@dataclass
class StepCache(CachePolicy):
    """Key = :func:`cdco_core.steps.node_key` of the task's (cfg, node, upstream); unsafe records are dropped."""

    storage: str = ""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        from cdco_core.steps import node_key

        cfg, node, upstream = wire_inputs(inputs)
        key = node_key(cfg, node, upstream)
        if key is not None and self.storage:
            drop_unless_verified(Path(self.storage) / key, key)
        return key


def drop_unless_verified(path: Path, key: str) -> bool:
    """Keep Prefect's record at ``path`` only if it is safe and true (see the module docstring).

    Returns:
        True when a record is kept.
    """
    if not path.exists():
        return False
    if stored_record(path, key) is None:
        path.unlink(missing_ok=True)
        return False
    return True


def stored_record(path: Path, key: str) -> Record | None:
    """The step record in Prefect's result file, if the file names the JSON serializer and its record equals the
    library's verified record for ``key``; None otherwise. Parses JSON only: nothing is unpickled."""
    try:
        raw = json.loads(path.read_bytes())
        serializer = raw["metadata"]["serializer"]
        if not isinstance(serializer, dict) or serializer.get("type") != "json":
            return None
        value = raw["result"]
        value = json.loads(value) if isinstance(value, str) else value
        stored = Record.from_dict(value)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    core = read_record(Path(stored.dir), key) if stored.key == key else None
    if core is None or core.files != stored.files or core.outputs != stored.outputs:
        return None
    return core
