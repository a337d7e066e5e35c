"""CDCO's ablations (the same schedule and steps with one part removed, see :mod:`.method`) and its research
variant ``cdco_r`` (:mod:`.research`).

This module is imported by ``cdco_core.methods`` alone, so it is in no training step's code closure: registering
a variant here leaves every cached stage of the other methods valid (``cdco_core/cache.py``). The four ablations
declare that they may share ``cdco``'s stages (:mod:`cdco_core.methods.sharing`).
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from pydantic import Field

from cdco_core.methods.cdco import build_cdco
from cdco_core.methods.cdco.research_config import CdcoConfig, CdcoResearchConfig
from cdco_core.methods.registry import register_method
from cdco_core.methods.sharing import same_stages_as

for _variant, _text in {
    "no_poincare": "CDCO without the Poincaré term",
    "no_euclidean": "CDCO without the Euclidean term",
    "random_negatives": "CDCO with uniform OOD negatives instead of manifold neighbours",
    "strict": "CDCO with no OOD text in training (in-batch negatives only)",
}.items():
    register_method(f"cdco_{_variant}", partial(build_cdco, variant=_variant), config_cls=CdcoConfig,
                    description=_text)
    # CDCOMethod reads its variant in configure, stages and uses_negatives alone: where they leave a stage
    # unchanged (the task-only warm-up; every stage of cdco_no_poincare when no stage weights the Poincaré term),
    # the variant trains cdco's bytes, and the plan runs that stage once (cdco_core/methods/sharing.py)
    same_stages_as(f"cdco_{_variant}", "cdco")


def build_cdco_research(settings: CdcoResearchConfig | None = None) -> object:
    """``cdco_r``: CDCO with the research settings of :class:`CdcoResearchConfig` (docs/methods.md, issue 14)."""
    from cdco_core.methods.cdco.research import CDCOResearchMethod

    return CDCOResearchMethod(settings)


register_method("cdco_r", build_cdco_research, config_cls=CdcoResearchConfig,
                description="CDCO research variant: label-aware or debiased negatives, per-space temperatures")



class TaskOnlyConfig(CdcoResearchConfig):
    """``cdco_task_only``: CDCO's staged schedule with the task loss only."""

    contrastive_scale: float = Field(0.0, ge=0)


class FlatConfig(CdcoResearchConfig):
    """``cdco_flat``: one stage on every group with the task loss and both contrastive terms."""

    schedule: Literal["cdco", "flat"] = "flat"


# the schedule's effect and the contrastive terms' effect, measured apart (issue 14); their other settings are
# cdco_r's and can be set under method_settings.cdco_task_only / .cdco_flat
register_method("cdco_task_only", build_cdco_research, config_cls=TaskOnlyConfig,
                description="CDCO's staged schedule with the task loss only (no contrastive term, no negatives)")
register_method("cdco_flat", build_cdco_research, config_cls=FlatConfig,
                description="one stage on every group with the task loss and both contrastive terms")
