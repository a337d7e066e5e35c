"""CDCO and its ablations (registry: cdco, cdco_no_poincare, cdco_no_euclidean, cdco_random_negatives,
cdco_strict)."""

from __future__ import annotations

from cdco_core.methods.cdco.method import CDCOMethod, contrastive_term


def build_method(variant: str | None = None) -> CDCOMethod:
    """The CDCO method, or the ablation ``variant``."""
    return CDCOMethod(variant)


__all__ = ["CDCOMethod", "build_method", "contrastive_term"]
