"""MLflow lineage of the ``prepare`` nodes: every task's splits as inputs, with our sha256 and row counts."""

from __future__ import annotations

from tasks.lineage import Lineage


def log_prepare(lin: Lineage, node_ids: list[str]) -> None:
    """Nested run ``prepare_data``: one ``log_input`` per task and split (the datasets every later step reads)."""
    import mlflow

    from tasks import lineage

    # prepare is never cached by Prefect: the data layer addresses its output by the files it reads
    with lineage.step_run(lin, node_ids, "prepare_data", {"cdco.cached": "false"}):
        rows = []
        for nid in sorted(node_ids, key=lambda n: lin.records[n].label):
            r = lin.records[nid]
            t = r.outputs
            for split, s in sorted(t["splits"].items()):
                ds, tags = lineage.task_split_dataset(r, split)
                lineage.log_dataset(ds, s["digest"], split, tags)
                mlflow.log_metric(f"rows.{r.label}.{split}", s["rows"])
                rows.append(f"| `{r.label}/{split}` | `{lineage.short(s['digest'])}` | {t['kind']}, {s['rows']} rows, "
                            f"`{r.dir}/{split}.parquet` |")
            mlflow.set_tag(f"cdco.digest.{r.label}", r.digest)
            for split, reasons in (t.get("dropped") or {}).items():  # on_invalid_rows: drop
                for reason, n in reasons.items():
                    mlflow.log_metric(f"dropped.{r.label}.{split}.{reason}", n)
        lineage.describe("prepare_data: every task's canonical splits", [], rows,
                         ["Each split is a dataset of this run (name `<task>/<split>`, digest = its sha256); "
                          "later steps log the same datasets as their inputs."])
