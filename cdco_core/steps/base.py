"""What a step is: the config it reads, how it computes, its code (see :mod:`cdco_core.steps`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdco_core.cache import Record, code_digest, step_key

if TYPE_CHECKING:
    from cdco_core.config import Config
    from cdco_core.plan import Node


@dataclass
class StepCall:
    """What a step's compute receives: its config, node, input records, and where to write."""

    cfg: Config
    node: Node
    inputs: dict[str, Record]
    key: str
    out: Path  # the step's files go here (published atomically)
    scratch: Path  # resume state (kept across a kill until the output is published)
    on_step: Callable[[dict[str, Any]], None] | None = None  # progress: {"step", "total"?, "unit"?, "loss"?, ...}


@dataclass(frozen=True)
class Step:
    """A step: the config JSON it reads, how it computes, and the modules whose code is its code digest.

    Attributes:
        section: ``section(cfg, node) -> JSON``: everything of the config the step reads (enters the key).
        compute: ``compute(call) -> outputs``: writes ``call.out``; returns small JSON.
        label: a readable name for folders and logs (e.g. ``imdb``, ``cdco-seed0-2-poincare``).
        modules: ``modules(cfg, node)``: modules whose import closure is the step's code (default: the step's own).
        collective: under a distributed launcher every rank computes the step (DDP training).
    """

    name: str
    section: Callable[[Config, Node], Any]
    compute: Callable[[StepCall], dict[str, Any]]
    label: Callable[[Node], str]
    modules: Callable[[Config, Node], tuple[str, ...]] | None = None
    collective: bool = False  # under DDP every rank computes it (training); otherwise rank 0 alone

    def code(self, cfg: Config, node: Node) -> str:
        mods = self.modules(cfg, node) if self.modules else (self.compute.__module__,)
        return code_digest(*mods)

    def key(self, cfg: Config, node: Node, inputs: dict[str, Record]) -> str:
        return step_key(self.name, {k: input_digest(r) for k, r in inputs.items()}, self.section(cfg, node),
                        self.code(cfg, node))


def input_digest(record: Record) -> str:
    """What a consumer's key reads of an input record: its digest; for a prepared task, its content digest with
    the spec fields that say how the task is used (:func:`cdco_core.data.canonical.usage_key`), which the content
    digest leaves out."""
    if record.step != "prepare":
        return record.digest
    from cdco_core.data.canonical import usage_key
    from cdco_core.io import sha256_json

    return sha256_json({"content": record.digest, "usage": usage_key(record.outputs["spec"])})


@functools.lru_cache(maxsize=8)
def _identity(model_json: str) -> dict[str, str]:
    from cdco_core.config import ModelConfig
    from cdco_core.models.encoder import model_identity

    return model_identity(ModelConfig.model_validate_json(model_json)).as_dict()


def model_section(cfg: Config) -> dict[str, Any]:
    """What every step that runs the encoder reads of ``model``: its identity (weights digest) and max length."""
    return {"identity": _identity(cfg.model.model_dump_json()), "max_length": cfg.model.max_length}
