"""CDCO's ablations: the same schedule and steps with one part removed (see :mod:`.method`)."""

from __future__ import annotations

from functools import partial

from cdco_core.methods.cdco import build_cdco
from cdco_core.methods.registry import register_method

for _variant, _text in {
    "no_poincare": "CDCO without the Poincaré term",
    "no_euclidean": "CDCO without the Euclidean term",
    "random_negatives": "CDCO with uniform OOD negatives instead of manifold neighbours",
    "strict": "CDCO with no OOD text in training (in-batch negatives only)",
}.items():
    register_method(f"cdco_{_variant}", partial(build_cdco, variant=_variant), description=_text)
