"""Baselines on the shared trainer (task loss only, the same total steps as CDCO): see :mod:`.method`."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from cdco_core.methods.registry import register_method

if TYPE_CHECKING:
    from cdco_core.methods.base import Method


def build_baseline(kind: str, settings: object = None) -> Method:
    """The baseline ``kind`` (a key of :data:`.method.BASELINES`); baselines take no settings."""
    from cdco_core.methods.baselines.method import BASELINES

    return BASELINES[kind]()


for _kind, _text in {
    "lora_mtl": "multi-task LoRA, task loss only",
    "bottleneck_mtl": "multi-task bottleneck adapters, task loss only",
    "lora_single": "one LoRA adapter set per task (the largest task's for OOD/KI)",
    "frozen": "frozen encoder, task heads only",
    "full_ft": "full fine-tuning of every encoder weight, task loss",
    "top_half_ft": "upper half of the encoder fine-tuned, task loss, no conditioning (CA-MTL's capacity)",
}.items():
    register_method(_kind, partial(build_baseline, _kind), description=_text)
