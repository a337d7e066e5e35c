"""Settings of CA-MTL (``method_settings.ca_mtl`` in a profile), validated by the method registry at load.

Every key is optional; the defaults follow the paper's base model (lower half frozen, conditional attention in
every layer, conditional layer norm in the trainable layers, one conditional adapter on the top layer).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CaMtlConfig(BaseModel):
    """``method_settings.ca_mtl`` keys, each with its trade-off."""

    model_config = ConfigDict(extra="forbid")

    # Width of the task embedding z_t and of its learned transformation; all generators read it.
    # Larger = more room to separate tasks, more generator parameters (2*H per FiLM per unit).
    task_embedding_dim: int = Field(64, ge=1, le=4096)
    # Learning rate of the pretrained weights CA-MTL trains (the upper layers), as a multiple of the stage's lr;
    # the new conditional modules and the heads use the stage's lr. The shared schedules' lr suits adapters
    # (~1e-3), too high for fine-tuning pretrained blocks: 0.1 keeps them near 1e-4. 1.0 = one lr for all.
    encoder_lr_scale: float = Field(0.1, gt=0.0, le=10.0)
    # Share of the encoder's layers (from the bottom) whose pretrained weights are frozen, with the embeddings.
    # 0.5 as in the paper: keeps pretrained knowledge (less forgetting), halves the trainable encoder weights.
    freeze_fraction: float = Field(0.5, ge=0.0, le=1.0)
    # FiLM on the embedding output ("conditional alignment").
    conditional_alignment: bool = True
    # Task-conditioned block-diagonal bias on the attention scores, in every layer (frozen ones included).
    conditional_attention: bool = True
    # Tokens per diagonal block of that bias. Small = local, cheap; large = longer-range task patterns.
    attention_block_size: int = Field(16, ge=1, le=512)
    # Layer norms whose weight is modulated by the task, in the trainable (upper) layers.
    conditional_layer_norm: bool = True
    # How many top layers carry a conditional bottleneck adapter (the "hypernetwork adapter"); 0 = none.
    adapter_layers: int = Field(1, ge=0)
    # Adapter bottleneck width; null = hidden // 3 as in the reference. Wider = more capacity per task.
    adapter_size: int | None = Field(None, ge=1)
