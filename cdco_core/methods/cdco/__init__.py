"""CDCO: staged task + Euclidean/Poincaré cross-domain contrastive training over ODMS hard negatives.

Its ablations register in :mod:`.ablations` (imported after the baselines, so ``--methods all`` lists them last).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdco_core.methods.cdco.research_config import CdcoConfig
from cdco_core.methods.registry import register_method

if TYPE_CHECKING:
    from cdco_core.methods.cdco.method import CDCOMethod


def build_cdco(settings: CdcoConfig | None = None, variant: str | None = None) -> CDCOMethod:
    """CDCO, or its ablation ``variant`` (see :data:`.method.VARIANTS`), with ``settings`` (:class:`CdcoConfig`)."""
    from cdco_core.methods.cdco.method import CDCOMethod

    return CDCOMethod(variant, centre=(settings or CdcoConfig()).centre)


register_method("cdco", build_cdco, config_cls=CdcoConfig,
                description="CDCO: staged task + Euclidean/Poincaré cross-domain contrastive training, ODMS negatives")
