"""Adapters in every encoder layer (LoRA through peft, or our bottleneck adapters) and their layer groups.

- ``lora``: ``peft.get_peft_model`` with ``LoraConfig(r, lora_alpha, target_modules, lora_dropout)`` on every
  layer: ``W x + (alpha / r) B A x`` with B initialised to zero, so a fresh adapter is the identity.
- ``bottleneck`` (ours; Houlsby et al. 2019, placed as in Pfeiffer et al. 2020 after the feed-forward output
  projection, before its residual + LayerNorm): ``h + U act(D h)`` with D: H -> H/reduction_factor and U back to
  H, U initialised to zero.
- ``none``: no adapters (frozen encoder + heads, or full fine-tuning, which trains the encoder's own weights).

Layer groups name sets of layer indices; a stage trains the adapter parameters of the layers in its groups.
``lower`` / ``upper`` default to the two halves (lower gets the extra layer when the count is odd), ``all`` is
every layer, ``cfg.adapters.groups`` adds or overrides names.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from cdco_core.config import AdapterConfig
from cdco_core.errors import ConfigError

ADAPTER_TYPES = ("lora", "bottleneck", "none")
_LAYER_RE = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def layer_index(param_name: str) -> int | None:
    """Encoder layer of a parameter (``...encoder.layer.3.attention...`` -> 3), None outside the layers."""
    m = _LAYER_RE.search(param_name)
    return int(m.group(1)) if m else None


def is_adapter_param(param_name: str) -> bool:
    """True for LoRA (``lora_A``/``lora_B``/...) and bottleneck (``.adapter.``) parameters."""
    return "lora_" in param_name or ".adapter." in param_name


def resolve_groups(acfg: AdapterConfig, num_layers: int) -> dict[str, list[int]]:
    """Group name -> sorted layer indices: defaults ``lower``/``upper``/``all``, then ``acfg.groups``.

    Raises:
        ConfigError: a configured group names a layer outside [0, num_layers).
    """
    half = (num_layers + 1) // 2
    groups = {"lower": list(range(half)), "upper": list(range(half, num_layers)), "all": list(range(num_layers))}
    for name, layers in acfg.groups.items():
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad:
            raise ConfigError(
                f"adapters.groups.{name}: layer(s) {bad} do not exist; the encoder has layers 0..{num_layers - 1}"
            )
        groups[name] = sorted(set(layers))
    return groups


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The transformer blocks (BERT family: ``encoder.layer``)."""
    base = encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"adapters: {type(base).__name__} has no encoder.layer list (BERT-style encoders only)")
    return layers


# ------------------------------------------------------------------------------------------ bottleneck
class BottleneckAdapter(nn.Module):
    """``h + U act(D h)``; U is zero-initialised so a new adapter changes nothing."""

    def __init__(self, hidden_size: int, reduction_factor: int) -> None:
        super().__init__()
        width = max(1, hidden_size // reduction_factor)
        self.down = nn.Linear(hidden_size, width)
        self.act = nn.GELU()
        self.up = nn.Linear(width, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.enabled = True

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, T, H)
        if not self.enabled:
            return h
        return h + self.up(self.act(self.down(h)))


class _WithAdapter(nn.Module):
    """A linear layer followed by a bottleneck adapter on its output."""

    def __init__(self, base: nn.Linear, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


def add_bottleneck_adapters(encoder: nn.Module, reduction_factor: int) -> nn.Module:
    """Insert a bottleneck adapter after each layer's feed-forward output projection (in place)."""
    for layer in encoder_layers(encoder):
        dense = layer.output.dense
        layer.output.dense = _WithAdapter(dense, BottleneckAdapter(dense.out_features, reduction_factor))
    return encoder


# ------------------------------------------------------------------------------------------------ LoRA
def add_lora(encoder: nn.Module, acfg: AdapterConfig, adapter_names: list[str] | None = None) -> nn.Module:
    """Wrap ``encoder`` with peft LoRA on ``acfg.target_modules`` of every layer.

    Args:
        adapter_names: several named adapter sets (single-task LoRA: one per task); default one, "default".

    Returns:
        The ``peft.PeftModel``; its first adapter is active.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=acfg.r, lora_alpha=acfg.alpha, lora_dropout=acfg.dropout,
                        target_modules=list(acfg.target_modules), bias="none")
    names = adapter_names or ["default"]
    try:
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing` (a FutureWarning on every model
            # built); the attribute is peft's to rename, nothing a user of ours can act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(encoder, config, adapter_name=names[0])
    except ValueError as e:  # peft: target modules not found
        raise ConfigError(f"adapters.target_modules {acfg.target_modules}: {e}") from None
    for name in names[1:]:
        model.add_adapter(name, config)
    return model


def add_adapters(encoder: nn.Module, acfg: AdapterConfig, adapter_type: str,
                 adapter_names: list[str] | None = None) -> nn.Module:
    """Add adapters of ``adapter_type`` (lora | bottleneck | none) to ``encoder``; returns the new encoder."""
    if adapter_type == "lora":
        return add_lora(encoder, acfg, adapter_names)
    if adapter_names and len(adapter_names) > 1:
        raise ConfigError(f"several named adapter sets need adapters.type 'lora', not {adapter_type!r}")
    if adapter_type == "bottleneck":
        return add_bottleneck_adapters(encoder, acfg.reduction_factor)
    if adapter_type == "none":
        return encoder
    raise ConfigError(f"adapters.type {adapter_type!r} is not supported; allowed: {', '.join(ADAPTER_TYPES)}")


# ----------------------------------------------------------------------------------- enabling, routing
def _tuner_layers(module: nn.Module) -> Iterator[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for m in module.modules():
        if isinstance(m, BaseTunerLayer):
            yield m


@contextlib.contextmanager
def _keep_requires_grad(module: nn.Module) -> Iterator[None]:
    """peft's enable/set_adapter calls also flip requires_grad; the trainer owns those flags."""
    flags = {n: p.requires_grad for n, p in module.named_parameters()}
    try:
        yield
    finally:
        for n, p in module.named_parameters():
            p.requires_grad_(flags[n])


@contextlib.contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[None]:
    """Run the encoder without any adapter (LoRA or bottleneck), restoring them afterwards."""
    bottlenecks = [m for m in module.modules() if isinstance(m, BottleneckAdapter)]
    tuners = list(_tuner_layers(module))
    with _keep_requires_grad(module):
        for m in bottlenecks:
            m.enabled = False
        for m in tuners:
            m.enable_adapters(False)
    try:
        yield
    finally:
        with _keep_requires_grad(module):
            for m in bottlenecks:
                m.enabled = True
            for m in tuners:
                m.enable_adapters(True)


def activate_adapter(module: nn.Module, name: str) -> None:
    """Make the named LoRA adapter set the active one in every layer, leaving requires_grad alone."""
    with _keep_requires_grad(module):
        for m in _tuner_layers(module):
            if m.active_adapters != [name]:
                m.set_adapter(name)
