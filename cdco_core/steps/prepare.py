"""Step ``prepare``: one task into its canonical, content-addressed Parquet cache (:mod:`cdco_core.data`).

Not keyed like the other steps: its key would have to read the very files it digests. The data layer addresses
the table by the spec and the source files' sha256 itself, so an unchanged task is read back, never rebuilt. The
record's digest is the task's content digest; downstream steps open the table with
:func:`cdco_core.data.open_task`, which checks that digest again.
"""

from __future__ import annotations

from cdco_core.cache import Record
from cdco_core.config import Config
from cdco_core.errors import InputError


def prepare(cfg: Config, task: str) -> Record:
    """The canonical table of the configured task ``task``.

    Raises:
        InputError: the task is not configured; any problem with its data (names the file, column or row).
    """
    from cdco_core.data import load_task, task_specs

    specs = {s.name: s for s in task_specs(cfg.data)}
    if task not in specs:
        raise InputError(f"unknown task {task!r}; configured: {', '.join(sorted(specs))}")
    t = load_task(specs[task], cfg.data)
    outputs = {"name": t.name, "kind": t.spec.kind, "type": t.spec.type, "spec": t.spec.model_dump(mode="json"),
               "label_names": t.label_names, "split_record": t.split_record, "dropped": t.dropped,
               "splits": {s: {"rows": len(df), "digest": t.digests[s]} for s, df in t.splits.items()}}
    return Record(step="prepare", label=t.name, key=t.digest, dir=str(t.path), outputs=outputs,
                  files={f"{s}.parquet": d for s, d in t.digests.items()}, digest=t.digest, cached=False)
