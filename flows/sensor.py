"""The dataset sensor: a small scheduled flow that emits ``cdco.dataset.changed`` when a dataset's digest moves.

Each run computes the canonical digest of every configured dataset (the same digest the pipeline's cache
keys use), compares it with the digests it recorded last time (``CDCO_HOME/sensor/<profile>-<h>.json``) and
emits one event per changed or newly configured dataset. The first run for a profile records a baseline
and emits nothing (there is nothing to compare with). The ``full-pipeline`` deployment has a trigger on
the event (see :mod:`cli.serve`), so a changed dataset re-runs the pipeline, which recomputes only
what depends on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow

EVENT = "cdco.dataset.changed"


def dataset_digests(cfg: Any) -> dict[str, str]:
    """{dataset: canonical content digest} of every configured task (loaded through the data cache)."""
    from cdco_core.data import load_tasks

    return {t.name: t.digest for t in load_tasks(cfg.data)}


def state_path(profile: str, overrides: list[str]) -> Path:
    from cdco_core.io import sha256_json
    from cdco_core.paths import cdco_home

    return cdco_home() / "sensor" / f"{Path(profile).stem}-{sha256_json(sorted(overrides))[:8]}.json"


def changed_datasets(previous: dict[str, str] | None, current: dict[str, str]) -> dict[str, str]:
    """Datasets whose digest differs from the recorded one, or that were not recorded; none on a baseline."""
    if previous is None:
        return {}
    return {n: d for n, d in sorted(current.items()) if previous.get(n) != d}


def emit_changed(profile: str, name: str, digest: str, previous: str | None) -> str | None:
    """Emit one ``cdco.dataset.changed`` event; returns its id (None when no events client is configured)."""
    from prefect.events import emit_event

    event = emit_event(
        event=EVENT,
        resource={"prefect.resource.id": f"cdco.dataset.{name}", "prefect.resource.name": name,
                  "cdco.dataset": name, "cdco.digest": digest, "cdco.profile": profile},
        payload={"dataset": name, "digest": digest, "previous_digest": previous, "profile": profile},
    )
    return str(event.id) if event is not None else None


@flow(name="cdco-dataset-sensor", log_prints=True)
def dataset_sensor(profile: str = "demo", overrides: list[str] | None = None) -> dict[str, Any]:
    """Compare the configured datasets' digests with the last recorded ones; emit an event per change.

    Returns:
        {"baseline": bool, "changed": {name: digest}, "events": [ids], "digests": {name: digest}}
    """
    from cdco_core.config import load_config
    from cdco_core.io import write_json

    overrides = list(overrides or [])
    cfg = load_config(profile, overrides)
    path = state_path(profile, overrides)
    previous = json.loads(path.read_text(encoding="utf-8"))["digests"] if path.exists() else None
    current = dataset_digests(cfg)
    changed = changed_datasets(previous, current)
    events = [emit_changed(cfg.profile, n, d, (previous or {}).get(n)) for n, d in changed.items()]
    write_json({"profile": cfg.profile, "overrides": overrides, "digests": current}, path)
    for n, d in changed.items():
        print(f"dataset {n} changed: digest {d[:16]}")
    return {"baseline": previous is None, "changed": changed, "events": events, "digests": current}
