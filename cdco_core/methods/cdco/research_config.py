"""Settings of CDCO (``method_settings.cdco`` and its ablations') and of the research variant ``cdco_r``, kept
apart from the torch modules so registering needs no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CdcoConfig(BaseModel):
    """``method_settings.cdco`` (and ``.cdco_no_poincare`` etc.): how the contrastive terms project their rows."""

    model_config = ConfigDict(extra="forbid")

    centre: bool = True  # each side's linear projection minus its own mean before the space's map (method.project)


class CdcoResearchConfig(CdcoConfig):
    """``method_settings.cdco_r``: every default reproduces CDCO's loss (see :mod:`.research`)."""

    schedule: Literal["cdco", "flat"] = "cdco"
    contrastive_scale: float = Field(1.0, ge=0)
    temperature_poincare: float | Literal["auto"] | None = None  # None: train.contrastive_temperature
    label_aware: bool = False
    tau_plus: float = Field(0.0, ge=0, lt=1)
    anchor_tasks: list[str] | None = None  # None: every task's rows are anchors; else only these tasks' rows
