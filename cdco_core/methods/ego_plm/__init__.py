"""EGO-PLM (our reading of "Shaping pre-trained language models for task-specific embedding generation via
consistency calibration", Neural Networks 2025; only the abstract is public): a per-task embedding generator
on the shared encoder, a task-agnostic pre-defined task like the backbone's pre-training (MLM or SimCSE), and
consistency calibration (CoCa) by adversarial training. See docs/methods.md "EGO-PLM"."""

from cdco_core.methods.ego_plm.config import EgoPlmConfig, load_ego_plm_config
from cdco_core.methods.ego_plm.method import EgoPlmMethod, build_method
from cdco_core.methods.ego_plm.model import EgoPlmModel, TaskEmbeddingGenerator

__all__ = [
    "EgoPlmConfig",
    "EgoPlmMethod",
    "EgoPlmModel",
    "TaskEmbeddingGenerator",
    "build_method",
    "load_ego_plm_config",
]
