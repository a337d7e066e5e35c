"""Multi-task samplers: which task the next training batch comes from.

Task-level samplers draw a task index per step with probabilities ``p_t`` over the task sizes ``n_t``:

- ``proportional``: ``p_t = n_t / Σ_s n_s``
- ``temperature``:  ``p_t = n_t^{1/T} / Σ_s n_s^{1/T}`` (T = 1 is proportional, T → ∞ is uniform)
- ``uniform``:      ``p_t = 1 / #tasks``

Batch-level samplers (the hook CA-MTL's ``uncertainty`` sampler fills) subclass :class:`BatchLevelSampler`:
the trainer sees ``sampler.batch_level is True``, draws one candidate batch from every task, scores the rows
without gradients and keeps ``sampler.select(candidates, scores, k)``. A sampler living in a method folder
is registered in :data:`SAMPLERS` below; the classes live in :mod:`.base` and :mod:`.uncertainty`.

Randomness is never owned by a sampler: ``next_task(rng)`` consumes the trainer's ``np.random.Generator``, whose
``bit_generator.state`` the trainer checkpoints next to ``sampler.state_dict()``; restoring both reproduces the
remaining draws exactly.
"""

from __future__ import annotations

import inspect
from typing import Any

from cdco_core.errors import InputError
from cdco_core.registry import Registry
from cdco_core.samplers.base import (
    BatchLevelSampler,
    ProportionalSampler,
    TaskSampler,
    TemperatureSampler,
    UniformSampler,
)
from cdco_core.samplers.uncertainty import UncertaintySampler, normalized_entropy

SAMPLERS: Registry[TaskSampler] = Registry("sampler")
for _cls in (ProportionalSampler, TemperatureSampler, UniformSampler, UncertaintySampler):
    SAMPLERS.register(_cls.name, _cls, description=(_cls.__doc__ or "").strip().splitlines()[0])


def list_samplers() -> list[str]:
    """Names accepted by :func:`get_sampler`, sorted."""
    return sorted(SAMPLERS.names())


def get_sampler(name: str, **kwargs: Any) -> TaskSampler:
    """Build the sampler registered as ``name`` with constructor ``kwargs``.

    Raises:
        InputError: unknown name (the message lists the supported names), or kwargs the sampler does not take.
    """
    cls = SAMPLERS.entry(name).factory
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("args", "kwargs")]
        raise InputError(f"sampler {name!r} got arguments {sorted(kwargs)}; it accepts {accepted}") from exc
    return cls(**kwargs)


def sampler_from_config(train: Any) -> TaskSampler:
    """The sampler named by ``cfg.train.sampler``, given ``train.sampler_temperature`` if it takes one."""
    cls = SAMPLERS.entry(train.sampler).factory
    takes_temperature = "temperature" in inspect.signature(cls).parameters
    kwargs = {"temperature": train.sampler_temperature} if takes_temperature else {}
    return get_sampler(train.sampler, **kwargs)


__all__ = ["SAMPLERS", "BatchLevelSampler", "ProportionalSampler", "TaskSampler", "TemperatureSampler",
           "UncertaintySampler", "UniformSampler", "get_sampler", "list_samplers", "normalized_entropy",
           "sampler_from_config"]
