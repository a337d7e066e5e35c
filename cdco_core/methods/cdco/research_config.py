"""Settings of the CDCO research variant ``cdco_r`` (kept apart from :mod:`.research` so registering needs no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CdcoResearchConfig(BaseModel):
    """``method_settings.cdco_r``: every default reproduces CDCO's loss (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    schedule: Literal["cdco", "flat"] = "cdco"
    contrastive_scale: float = Field(1.0, ge=0)
    temperature_poincare: float | Literal["auto"] | None = None  # None: train.contrastive_temperature
    label_aware: bool = False
    tau_plus: float = Field(0.0, ge=0, lt=1)
    anchor_tasks: list[str] | None = None  # None: every task's rows are anchors; else only these tasks' rows
    centre: bool = False  # domain-centred projections: each side minus its own mean before the space's map
