"""CA-MTL (Pilault et al., ICLR 2021): task-conditioned attention, layer norm, alignment and adapters on a
half-frozen encoder, trained with multi-task uncertainty sampling. See docs/methods.md "CA-MTL"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdco_core.methods.ca_mtl.config import CaMtlConfig
from cdco_core.methods.registry import register_method

if TYPE_CHECKING:
    from cdco_core.methods.ca_mtl.method import CaMtlMethod


def build_ca_mtl(settings: CaMtlConfig | None = None) -> CaMtlMethod:
    from cdco_core.methods.ca_mtl.method import CaMtlMethod

    return CaMtlMethod()


register_method("ca_mtl", build_ca_mtl, config_cls=CaMtlConfig,
                description="CA-MTL: task-conditioned attention/layer norm/alignment/adapter, half-frozen encoder")
