"""Step 1: load every configured task into the canonical Parquet cache; its digests key everything after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks._cache import fingerprint


# Not cached by Prefect: this is the step that turns raw files into digests, so a key for it would have to
# read the same files. Its work is content-addressed in cdco_core (an unchanged source is read from the
# verified Parquet cache, nothing is recomputed).
@task(name="prepare_data", cache_policy=NO_CACHE, persist_result=False)
def prepare_data(cfg: dict[str, Any]) -> dict[str, Any]:
    """Canonical tables of every task: {"tasks": {name: {kind, type, digest, path, splits}}, "_files"}."""
    from cdco_core.config import Config
    from cdco_core.steps import prepare_data as step

    return fingerprint(step(Config.model_validate(cfg)))


def data_digests(prepared: dict[str, Any], kinds: tuple[str, ...] = ("ID", "OOD", "KI")) -> dict[str, str]:
    """{task: digest} of the tasks of the given kinds: what downstream cache keys are made from."""
    return {n: t["digest"] for n, t in sorted(prepared["tasks"].items()) if t["kind"] in kinds}


def log_prepare(parent_run_id: str, result: dict[str, Any]) -> None:
    """Nested run ``prepare_data``: one ``log_input`` per task and split, with our sha256 and row count."""
    import mlflow

    from cdco_core import tracking

    with tracking.step_run(parent_run_id, "prepare_data", tags={"cdco.cached": "false"}):
        for name, t in sorted(result["tasks"].items()):
            for split, s in sorted(t["splits"].items()):
                tracking.log_table_input(
                    f"{name}/{split}", s["digest"], Path(t["path"]) / f"{split}.parquet", context=split,
                    extra_tags={"cdco.kind": t["kind"], "cdco.type": t["type"], "cdco.rows": str(s["rows"])},
                )
                mlflow.log_metric(f"rows.{name}.{split}", s["rows"])
            mlflow.set_tag(f"cdco.digest.{name}", t["digest"])
