"""What a task is: the schema of a task spec (``tasks:`` files, ``data.tasks``) and of the ``data`` section.

See README "Task specs". Loading and canonicalisation live beside this module (``canonical.py``).
"""

from __future__ import annotations

import codecs
from typing import Annotated, Literal

from pydantic import Field, model_validator

from cdco_core.validation import Strict

TaskKind = Literal["ID", "OOD", "KI"]
TaskType = Literal["classification", "pair_classification", "regression", "multiple_choice", "boolean_qa"]
MetricName = Literal["accuracy", "macro_f1", "mcc", "f1", "pearson", "spearman"]
SPLIT_NAMES = ("train", "validation", "test")  # the only split names a task spec may use
EVAL_SPLITS = ("validation", "test")  # the held-out splits that may be scored
CLASS_WEIGHT_TYPES = ("classification", "pair_classification", "boolean_qa")  # types with a fixed class set

# Which metrics make sense for which task type; the first is the default. "f1" (binary: label id 1 is positive, as
# GLUE scores MRPC) is reported only for a task whose main metric it is (see OPT_IN_METRICS).
METRICS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1", "mcc", "f1"),
    "pair_classification": ("accuracy", "macro_f1", "mcc", "f1"),
    "boolean_qa": ("accuracy", "macro_f1", "mcc", "f1"),
    "regression": ("pearson", "spearman"),
    "multiple_choice": ("accuracy",),
}
OPT_IN_METRICS = frozenset({"f1"})


class TaskSpec(Strict):
    """One task: where its data is and how to read it. See README "Task specs"."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    kind: TaskKind
    type: TaskType
    # Exactly one of `source` or `files`:
    #   source: "mirror:<name>" (../shared/datasets), "package:<name>" (data shipped in a PyPI package),
    #           "hf:<dataset>[/<config>]" (Hugging Face hub, online only)
    source: str | None = None
    files: dict[str, str] | None = None  # split -> path (csv, tsv, jsonl, parquet), relative to the spec file
    text: list[str] | None = None  # one column, or two for pairs; defaulted for mirror/package sources
    label: str | None = None
    label_names: list[str] | None = None  # declared label set; inferred (sorted) when absent
    choices: str | None = None  # multiple choice: column holding the list of options
    metric: MetricName | None = None  # default: the first allowed for the type
    encoding: str = "utf-8"
    # Held-out split used for scoring; "validation" or "test". Missing splits are made deterministically.
    eval_split: str | None = None
    # Rows with an empty text or label: "error" refuses the file (naming the first such row); "drop" drops them,
    # counts them per reason (cache meta.json, `cdco data check`) and warns with the file and count.
    on_invalid_rows: Literal["error", "drop"] = "error"
    # Rows held out when the task has a single split (instead of data.heldout_fraction): a small dataset
    # (commonsense_qa, 1,221 rows) can keep a fixed, large scored split and give training the rest.
    heldout_rows: int | None = Field(None, ge=1)
    # Row caps per split for this task, replacing data.max_rows' value for the splits named (seeded sample).
    # E.g. smaller probe train/test splits for OOD/KI tasks, where feature extraction dominates a profile's cost.
    max_rows: dict[str, Annotated[int, Field(ge=1)]] | None = None
    # OOD tasks only. "seen": the ODMS pool holds this domain's unlabeled train texts (like task-adaptive
    # pre-training); "unseen": the domain is absent from the pool in every form (it must be listed in
    # negatives.strict_exclude). None: not declared (the demo's single OOD task is both pool and probe).
    ood_protocol: Literal["seen", "unseen"] | None = None
    # false: the task is not scored by the OOD/KI probe (an OOD task that only feeds the pool its train texts).
    probe: bool = True
    # ID classification tasks: "balanced" weighs each class's rows in the training loss by n / (C * n_c), from
    # the train split's counts, so a small imbalanced task's head is not pulled to its majority class.
    class_weights: Literal["none", "balanced"] = "none"

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if (self.source is None) == (self.files is None):
            raise ValueError(f"task {self.name!r}: give exactly one of 'source' or 'files'")
        if self.source is not None and not self.source.startswith(("mirror:", "package:", "hf:")):
            raise ValueError(
                f"task {self.name!r}: source {self.source!r} must start with 'mirror:', 'package:' or 'hf:'"
            )
        unknown = [k for k in (self.files or {}) if k not in SPLIT_NAMES]
        if unknown:
            raise ValueError(f"task {self.name!r}: files: split {unknown[0]!r} is not a split name; "
                             f"allowed: {', '.join(SPLIT_NAMES)}")
        if self.eval_split is not None and self.eval_split not in EVAL_SPLITS:
            raise ValueError(f"task {self.name!r}: eval_split {self.eval_split!r} is not a held-out split; "
                             f"allowed: {', '.join(EVAL_SPLITS)}")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"task {self.name!r}: encoding {self.encoding!r} is not a known text encoding "
                             "(e.g. utf-8, latin-1, cp1252)") from None
        if self.ood_protocol is not None and self.kind != "OOD":
            raise ValueError(f"task {self.name!r}: ood_protocol is for OOD tasks only (kind is {self.kind!r})")
        if not self.probe and self.kind != "OOD":
            raise ValueError(f"task {self.name!r}: probe: false is for pool-only OOD tasks (kind is {self.kind!r})")
        if not self.probe and self.ood_protocol == "unseen":
            raise ValueError(
                f"task {self.name!r}: an unseen-domain task that is not probed is used nowhere; "
                "drop it, or set probe: true"
            )
        if self.class_weights != "none" and (self.kind != "ID" or self.type not in CLASS_WEIGHT_TYPES):
            raise ValueError(
                f"task {self.name!r}: class_weights is for ID tasks with a fixed set of classes "
                f"({', '.join(CLASS_WEIGHT_TYPES)}); this one is {self.kind} {self.type}"
            )
        if self.text is not None and not 1 <= len(self.text) <= 2:
            raise ValueError(f"task {self.name!r}: 'text' names one column, or two for pairs")
        if self.metric is not None and self.metric not in METRICS_BY_TYPE[self.type]:
            raise ValueError(
                f"task {self.name!r}: metric {self.metric!r} does not fit type {self.type!r}; "
                f"allowed: {', '.join(METRICS_BY_TYPE[self.type])}"
            )
        return self

    @property
    def metric_name(self) -> str:
        return self.metric or METRICS_BY_TYPE[self.type][0]


class TaskFile(Strict):
    """The top level of a task spec file: ``tasks: [...]``."""

    tasks: list[TaskSpec]


class DataConfig(Strict):
    tasks_file: str | None = None  # a YAML task spec file (relative paths: to the project root)
    tasks: list[TaskSpec] = Field(default_factory=list)  # inline tasks, added after tasks_file's
    # Row caps per split, taken as a seeded sample so small profiles stay fast. null = all rows.
    max_rows: dict[str, int] = Field(default_factory=dict)
    split_seed: int = 0  # seed of the deterministic split for tasks that lack one
    heldout_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # share held out when a task has a single split
    mirror_dir: str | None = None  # default: $CDCO_MIRROR or ../shared/datasets beside the project
    # Share of each ID task's capped train split held out as the "dev" split (seeded by split_seed, recorded
    # in the task cache's meta.json): settings are chosen on it, never on the reported splits. 0 = no dev split.
    dev_fraction: float = Field(0.0, ge=0.0, lt=1.0)
