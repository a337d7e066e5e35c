"""What every step run shares in MLflow: its upstream as inputs, its outputs, and one upload per content.

One :class:`Lineage` per pipeline run carries the plan's records and, as the step runs are written in plan
order, the MLflow run and LoggedModel each node got. A step run then logs, for each node it reads:

- a prepared task: the split it reads as a dataset (``<task>/<split>``, the split's sha256, the Parquet path);
- a derived table (embeddings, manifold, negatives, predictions): a dataset named by the node with the upstream
  record's digest, tagged with the run that produced it (``cdco.produced_by``);
- a training stage: its LoggedModel (``LoggedModelInput``), the MLflow-native edge between two runs.

Datasets are inputs only in MLflow (its outputs are models), so a step's own tables are written as tags
(``cdco.output.<name>`` = digest) and in the run's description, a Markdown table whose links open the producing
runs and models in the UI: the chain datasets -> embeddings -> manifold -> negatives -> stages -> evaluation ->
registered model can be followed by clicking.

A step whose output (its cache key) is already stored in the experiment uploads nothing again: it tags the run
that holds the files (``cdco.artifacts_run_id``) and links the same LoggedModel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdco_core.cache import Record

# MLflow's "source" of a run (its UI shows it in the runs table); without these every run says engine.py.
SOURCE_TAGS = {"mlflow.source.type": "JOB", "mlflow.source.name": "cdco/full-pipeline"}
UPLOADED = "cdco.artifacts"  # "uploaded" on the run that holds a step's files
ARTIFACTS_RUN = "cdco.artifacts_run_id"  # on a run that reuses them


@dataclass
class Lineage:
    """One pipeline run's lineage state: the plan, the records, and what has been logged so far."""

    parent_run_id: str
    experiment_id: str
    plan: Any
    records: dict[str, Record]
    cached: dict[str, bool]
    runs: dict[str, str] = field(default_factory=dict)  # node id -> the step run that logged it (this pipeline run)
    run_names: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # train node id -> LoggedModel id
    packaged: set[str] = field(default_factory=set)  # train node ids to log as a loadable pyfunc model

    def node(self, node_id: str) -> Any:
        return self.plan.nodes[node_id]

    def run_link(self, node_id: str) -> str:
        """A Markdown link to the step run that logged ``node_id`` (its name), or the node id."""
        run = self.runs.get(node_id)
        if not run:
            return f"`{node_id}`"
        return f"[{self.run_names.get(node_id, node_id)}]({run_url(self.experiment_id, run)})"


# MLflow 3's UI opens in its GenAI view unless told otherwise (a per-browser setting, default GenAI); this query
# parameter opens the model-training view, where runs, datasets and models are.
ML_VIEW = "?workflowType=machine_learning"


def run_url(experiment_id: str, run_id: str) -> str:
    """The UI route of a run, relative to the MLflow server's root (works in run descriptions)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}{ML_VIEW}"


def model_url(experiment_id: str, model_id: str) -> str:
    return f"#/experiments/{experiment_id}/models/{model_id}{ML_VIEW}"


def short(digest: str) -> str:
    return digest[:12]


# ----------------------------------------------------------------------------------------------- the runs
@contextlib.contextmanager
def step_run(lin: Lineage, node_ids: list[str], name: str, extra_tags: dict[str, str] | None = None
             ) -> Iterator[str]:
    """The nested run of one step (``node_ids``: the plan nodes it logs, usually one), tagged with the node, key,
    digest and whether it came from the cache."""
    from tasks import tracking

    recs = [lin.records[n] for n in node_ids]
    tags = {**SOURCE_TAGS, "cdco.step": lin.node(node_ids[0]).step, "cdco.node": ",".join(node_ids)[:4000],
            "cdco.cached": str(all(lin.cached.get(n, False) for n in node_ids)).lower(), **(extra_tags or {})}
    if len(recs) == 1:
        tags |= {"cdco.key": recs[0].key, "cdco.digest": recs[0].digest}
    with tracking.step_run(lin.parent_run_id, name, tags=tags) as run_id:
        for n in node_ids:
            lin.runs[n], lin.run_names[n] = run_id, name
        yield run_id


def producer_run(experiment_id: str, key: str, exclude: str | None = None) -> str | None:
    """The first run in the experiment that uploaded the files of the step output with cache key ``key``."""
    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [experiment_id], f"tags.`cdco.key` = '{key}' and tags.`{UPLOADED}` = 'uploaded'",
        max_results=2, order_by=["attributes.start_time ASC"])
    return next((r.info.run_id for r in runs if r.info.run_id != exclude), None)


def upload_once(lin: Lineage, run_id: str, key: str, upload: Callable[[], None]) -> str:
    """Call ``upload`` unless a run of this experiment already holds this output's files; returns the run that
    holds them (tagged ``cdco.artifacts_run_id`` on a run that reuses them)."""
    import mlflow

    held = producer_run(lin.experiment_id, key, exclude=run_id)
    if held is not None:
        mlflow.set_tag(ARTIFACTS_RUN, held)
        return held
    upload()
    mlflow.set_tag(UPLOADED, "uploaded")
    return run_id


# ----------------------------------------------------------------------------------------------- datasets
def task_split_dataset(record: Record, split: str) -> tuple[Any, dict[str, str]]:
    """A prepared task's split as an MLflow dataset (name ``<task>/<split>``, the split's sha256) and its tags."""
    s = record.outputs["splits"][split]
    tags = {"cdco.kind": record.outputs.get("kind", ""), "cdco.type": record.outputs.get("type", ""),
            "cdco.rows": str(s.get("rows", "")), "cdco.task_digest": record.digest}
    return meta_dataset(f"{record.label}/{split}", s["digest"], Path(record.dir) / f"{split}.parquet"), tags


def eval_split(record: Record) -> str:
    """The split a task is scored on (the same rule as ``TaskData.eval_split``)."""
    spec = record.outputs.get("spec") or {}
    splits = record.outputs.get("splits") or {}
    return spec.get("eval_split") or ("validation" if "validation" in splits else "test")


def meta_dataset(name: str, sha256: str, path: str | Path) -> Any:
    """A dataset by reference: our sha256 (MLflow keeps its first 36 hex digits), the local path, no data."""
    import json

    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset

    from tasks.tracking import MLFLOW_DIGEST_LEN

    source = get_dataset_source_from_json(json.dumps({"uri": str(path)}), source_type="local")
    return MetaDataset(source=source, name=name, digest=sha256[:MLFLOW_DIGEST_LEN])


# How a database reports two writers inserting the same row (MLflow's SQL store checks, then inserts).
CONFLICTS = ("UniqueViolation", "UNIQUE constraint failed", "IntegrityError", "Duplicate entry")


def log_dataset(dataset: Any, sha256: str, context: str, tags: dict[str, str] | None = None,
                attempts: int = 4) -> None:
    """``mlflow.log_input``, again when another run inserted the same dataset at the same moment.

    MLflow's SQL store looks a dataset (experiment, name, digest) up, then inserts it when missing: two pipeline
    runs logging the same dataset at once (two workers of a team stack) make the second insert fail with a
    unique-key violation. The next attempt finds the row and links it.
    """
    import time

    import mlflow
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context, tags={"cdco.sha256": sha256, **(tags or {})})
            return
        except MlflowException as e:
            if attempt == attempts - 1 or not any(c in str(e) for c in CONFLICTS):
                raise
            time.sleep(0.2 * (attempt + 1))


def log_upstream(lin: Lineage, node_id: str, contexts: Callable[[Record, str | None], str],
                 splits: Callable[[Record], list[str]] | None = None) -> list[str]:
    """Log every input of ``node_id`` as an input of the active run; returns Markdown rows for the description.

    ``contexts(record, split)`` names the use (``training``, ``evaluation``, ``input``...; ``split`` is None for a
    derived table); ``splits(record)`` the splits of a prepared task that the step reads (default: ``train``).
    """
    import mlflow
    from mlflow.entities import LoggedModelInput

    rows = []
    for up in lin.node(node_id).inputs:
        rec = lin.records[up]
        if rec.step == "prepare":
            for split in (splits or (lambda r: ["train"]))(rec):
                if split not in rec.outputs.get("splits", {}):
                    continue
                context = contexts(rec, split)
                ds, tags = task_split_dataset(rec, split)
                sha = rec.outputs["splits"][split]["digest"]
                log_dataset(ds, sha, context, tags)
                rows.append(f"| `{rec.label}/{split}` | {context} | `{short(sha)}` | {lin.run_link(up)} |")
            continue
        context = contexts(rec, None)
        produced_by = lin.runs.get(up, "")
        ds = meta_dataset(up, rec.digest, rec.dir)
        log_dataset(ds, rec.digest, context, {"cdco.step": rec.step, "cdco.produced_by": produced_by})
        model = lin.models.get(up)
        if model:  # a previous stage or the stage an evaluation scores: the run-to-model edge MLflow draws
            mlflow.log_input(model=LoggedModelInput(model))
            link = f"{lin.run_link(up)} ([model]({model_url(lin.experiment_id, model)}))"
        else:
            link = lin.run_link(up)
        rows.append(f"| `{up}` | {context} | `{short(rec.digest)}` | {link} |")
    return rows


def describe(title: str, inputs: list[str], outputs: list[str], notes: list[str] | None = None,
             digest: str | None = None) -> None:
    """The active run's description (Markdown in the run page): what it read, with links, and what it wrote.

    ``digest``: the output's record digest, the sha256 the runs that read it list for it.
    """
    import mlflow

    lines = [f"**{title}**", ""]
    if digest:
        lines += [f"Output digest (as the steps that read it list it): `{short(digest)}`", ""]
    if inputs:
        lines += ["Inputs:", "", "| input | context | sha256 | produced by |", "|---|---|---|---|", *inputs, ""]
    if outputs:
        lines += ["Outputs:", "", "| output | sha256 | where |", "|---|---|---|", *outputs, ""]
    lines += notes or []
    mlflow.set_tag("mlflow.note.content", "\n".join(lines)[:60000])


def output_row(lin: Lineage, node_id: str, name: str, sha256: str, where: str) -> str:
    import mlflow

    mlflow.set_tag(f"cdco.output.{name}", sha256)
    return f"| `{name}` | `{short(sha256)}` | {where} |"


def log_linked_metrics(metrics: dict[str, float], model_id: str | None = None, dataset: Any = None,
                       step: int | None = None) -> None:
    """Metrics of the active run, linked to a LoggedModel and the dataset they were measured on (MLflow shows
    them on the model's page by dataset)."""
    import mlflow

    clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if clean:
        mlflow.log_metrics(clean, step=step, model_id=model_id, dataset=dataset)
