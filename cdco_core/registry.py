"""One registry mechanism for everything chosen by name: methods, samplers, benchmarks.

An entry is a name, a factory and, optionally, the Pydantic class that validates the entry's settings (PEFT
registers a tuner the same way: name, config class and model class together). Registering a taken name is refused;
looking up an unknown one raises :class:`~cdco_core.errors.InputError` listing the registered names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from cdco_core.errors import ConfigError, InputError
from cdco_core.validation import format_validation_error

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: how to build it, and the class validating its settings (None: it takes none)."""

    name: str
    factory: Callable[..., T]
    config_cls: type[BaseModel] | None = None
    description: str = ""


class Registry(Generic[T]):
    """Names -> :class:`Entry`, in registration order.

    Args:
        kind: what the entries are ("method", "sampler", "bench"), used in messages.
        config_key: where an entry's settings live in a profile (e.g. ``method_settings``), used in messages.
    """

    def __init__(self, kind: str, config_key: str | None = None) -> None:
        self.kind = kind
        self.config_key = config_key
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, factory: Callable[..., T], *, config_cls: type[BaseModel] | None = None,
                 description: str = "") -> Entry[T]:
        """Add ``name``.

        Raises:
            ValueError: the name is taken by another factory (registering the same factory again is harmless).
        """
        known = self._entries.get(name)
        if known is not None and known.factory is not factory:
            raise ValueError(f"{self.kind} name {name!r} is already registered (by {_where(known.factory)})")
        entry = Entry(name, factory, config_cls, description)
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry[T]:
        """The entry of ``name``.

        Raises:
            InputError: unknown name; the message lists the registered ones.
        """
        if name not in self._entries:
            raise InputError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def validate_settings(self, name: str, raw: dict[str, Any] | None) -> BaseModel | None:
        """``raw`` validated by ``name``'s config class (defaults filled in); None when it takes no settings.

        Raises:
            ConfigError: unknown name, settings given to an entry that takes none, or a bad key/value (the message
                names ``<config_key>.<name>.<key>``).
        """
        entry = self.entry(name)
        where = f"{self.config_key}.{name}" if self.config_key else name
        if entry.config_cls is None:
            if raw:
                raise ConfigError(f"{where}: {self.kind} {name!r} takes no settings; got {sorted(raw)}")
            return None
        try:
            return entry.config_cls.model_validate(raw or {})
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, f"({where})", entry.config_cls, prefix=where)) from None


def _where(factory: Callable[..., Any]) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"
