"""Task heads on the pooled representation, one per task, chosen by task type.

| type                 | head                    | logits      |
|----------------------|-------------------------|-------------|
| classification       | dropout -> Linear(H, C) | (B, C)      |
| pair_classification  | dropout -> Linear(H, C) | (B, C)      |
| boolean_qa           | dropout -> Linear(H, C) | (B, C), C=2 |
| regression           | dropout -> Linear(H, 1) | (B, 1)      |
| multiple_choice      | dropout -> Linear(H, 1) | one score per (question, option) sequence; the model
|                      |                         | reshapes them to (B, C) over the options            |

A pair or (question, passage) input is one sequence ``[CLS] a [SEP] b [SEP]``, so the same linear head fits;
what differs is tokenisation and, for multiple choice, the scoring of each option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from cdco_core.errors import ConfigError

SCORE_TYPES = ("regression", "multiple_choice")  # one output unit
HEAD_TYPES = ("classification", "pair_classification", "boolean_qa", *SCORE_TYPES)


@dataclass(frozen=True)
class HeadSpec:
    """What a head needs to know about its task."""

    name: str
    type: str
    num_labels: int  # classes; ignored for regression and multiple choice
    class_weights: tuple[float, ...] | None = None  # the training loss's per-class weights (None: unweighted)

    @classmethod
    def of(cls, task: Any) -> HeadSpec:
        """The head of a training task (:class:`cdco_core.data.canonical.TaskData`), its class weights included."""
        return cls(task.name, task.spec.type, task.num_labels, task.class_weights())


def head_output_dim(spec: HeadSpec) -> int:
    """Output units: 1 for regression / multiple choice, else the number of classes (at least 2)."""
    if spec.type not in HEAD_TYPES:
        raise ConfigError(f"task {spec.name!r}: no head for type {spec.type!r}; supported: {', '.join(HEAD_TYPES)}")
    if spec.type in SCORE_TYPES:
        return 1
    if spec.num_labels < 2:
        raise ConfigError(f"task {spec.name!r}: a {spec.type} head needs >= 2 labels, got {spec.num_labels}")
    return spec.num_labels


def build_head(spec: HeadSpec, hidden_size: int, dropout: float = 0.1) -> nn.Module:
    """A linear head (with input dropout) for one task. Raises ConfigError for an unknown type."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, head_output_dim(spec)))
