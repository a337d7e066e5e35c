"""Method registry: name -> factory. A method is a folder ``cdco_core/methods/<name>/`` plus one line here.

Each method package exposes ``build_method(**kwargs) -> cdco_core.methods.base.Method``; the factory below
imports it only when the method is asked for, so listing methods imports nothing heavy.
Ablations are the same package with keyword arguments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cdco_core.errors import InputError

if TYPE_CHECKING:
    from cdco_core.methods.base import Method


def _lazy(package: str, **kwargs: Any) -> Callable[[], Method]:
    """A factory importing ``cdco_core.methods.<package>`` and calling its ``build_method(**kwargs)``."""

    def factory() -> Method:
        module = importlib.import_module(f"cdco_core.methods.{package}")
        build = getattr(module, "build_method", None)
        if build is None:
            raise InputError(f"method package cdco_core.methods.{package} has no build_method() (not implemented)")
        return build(**kwargs)

    return factory


METHODS: dict[str, Callable[[], Method]] = {
    "cdco": _lazy("cdco"),
    "lora_mtl": _lazy("baselines", kind="lora_mtl"),
    "bottleneck_mtl": _lazy("baselines", kind="bottleneck_mtl"),
    "lora_single": _lazy("baselines", kind="lora_single"),
    "frozen": _lazy("baselines", kind="frozen"),
    "full_ft": _lazy("baselines", kind="full_ft"),
    "ca_mtl": _lazy("ca_mtl"),
    "ego_plm": _lazy("ego_plm"),
    # CDCO ablations
    "cdco_no_poincare": _lazy("cdco", variant="no_poincare"),
    "cdco_no_euclidean": _lazy("cdco", variant="no_euclidean"),
    "cdco_random_negatives": _lazy("cdco", variant="random_negatives"),
    "cdco_strict": _lazy("cdco", variant="strict"),
}


def expand_methods(names: list[str]) -> list[str]:
    """``["all"]`` -> every registered method in registry order (CDCO, baselines, CA-MTL, EGO-PLM, ablations);
    any other list unchanged (names are checked by :func:`get_method`)."""
    return list(METHODS) if list(names) == ["all"] else list(names)


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(METHODS)


def get_method(name: str) -> Method:
    """A fresh instance of the method ``name``.

    Raises:
        InputError: unknown name (the message lists the registered ones).
    """
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    method = METHODS[name]()
    method.name = name
    return method
