"""The method registry: a method is its folder plus one :func:`register_method` call in the folder's ``__init__``.

A registration names the method, its factory and, when it has settings of its own, their Pydantic class. The
settings live in a profile under ``method_settings.<name>``, are validated when the profile loads
(:func:`cdco_core.profile.load_profile`) and reach the method as :attr:`Method.settings`; the training and
evaluation cache keys include them. Registration modules stay light (no torch): factories import the method's
code when called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from cdco_core.registry import Registry

if TYPE_CHECKING:
    from cdco_core.config import Config
    from cdco_core.methods.base import Method

METHODS: Registry[Method] = Registry("method", config_key="method_settings")


def register_method(name: str, factory: Callable[[BaseModel | None], Method], *,
                    config_cls: type[BaseModel] | None = None, description: str = "") -> None:
    """Register ``name``: ``factory(settings)`` builds the method; ``config_cls`` validates its settings."""
    METHODS.register(name, factory, config_cls=config_cls, description=description)


def get_method(name: str, cfg: Config | None = None) -> Method:
    """A fresh instance of method ``name`` with its settings from ``cfg.method_settings`` (defaults without cfg).

    Raises:
        InputError: unknown name (the message lists the registered ones).
        ConfigError: bad settings.
    """
    raw: dict[str, Any] | None = cfg.method_settings.get(name) if cfg is not None else None
    settings = METHODS.validate_settings(name, raw)
    method = METHODS.entry(name).factory(settings)
    method.name = name
    method.settings = settings
    return method


def expand_methods(names: list[str]) -> list[str]:
    """``["all"]`` -> every registered method in registration order; any other list unchanged."""
    return METHODS.names() if list(names) == ["all"] else list(names)


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(METHODS.names())
