"""CA-MTL (Pilault et al., ICLR 2021): task-conditioned attention, layer norm, alignment and adapters on a
half-frozen encoder, trained with multi-task uncertainty sampling. See docs/methods.md "CA-MTL"."""

from cdco_core.methods.ca_mtl.config import CaMtlConfig, ca_mtl_config
from cdco_core.methods.ca_mtl.method import CaMtlMethod, build_method
from cdco_core.methods.ca_mtl.model import CaMtlEncoder, CaMtlModel, frozen_layer_count
from cdco_core.methods.ca_mtl.sampler import UncertaintySampler, normalized_entropy  # registers "uncertainty"

__all__ = [
    "CaMtlConfig",
    "CaMtlEncoder",
    "CaMtlMethod",
    "CaMtlModel",
    "UncertaintySampler",
    "build_method",
    "ca_mtl_config",
    "frozen_layer_count",
    "normalized_entropy",
]
