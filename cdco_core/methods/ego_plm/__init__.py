"""EGO-PLM (our reading of "Shaping pre-trained language models for task-specific embedding generation via
consistency calibration", Neural Networks 2025; only the abstract is public): a per-task embedding generator
on the shared encoder, a task-agnostic pre-defined task like the backbone's pre-training (MLM or SimCSE), and
consistency calibration (CoCa) by adversarial training. See docs/methods.md "EGO-PLM"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdco_core.methods.ego_plm.config import EgoPlmConfig
from cdco_core.methods.registry import register_method

if TYPE_CHECKING:
    from cdco_core.methods.ego_plm.method import EgoPlmMethod


def build_ego_plm(settings: EgoPlmConfig | None = None) -> EgoPlmMethod:
    from cdco_core.methods.ego_plm.method import EgoPlmMethod

    return EgoPlmMethod()


register_method("ego_plm", build_ego_plm, config_cls=EgoPlmConfig,
                description="EGO-PLM: per-task embedding generator + pre-defined task (MLM/SimCSE) + adversarial CoCa")
