"""Load a profile once, completely: the shared sections (:mod:`cdco_core.config`), then what needs the method
registry: each ``method_settings.<name>`` validated by the method's config class (defaults filled in),
``eval.methods: [all]`` expanded and every name checked, every stage's adapter groups checked.

Commands call :func:`load_profile` once per process and pass the validated :class:`Config` on; a process that
receives the config as JSON rebuilds it with :func:`config_from_json` (validated once per process per digest).
"""

from __future__ import annotations

from typing import Any

from cdco_core.config import Config, adapter_group_names, check_stage_groups, load_config
from cdco_core.errors import ConfigError
from cdco_core.methods import METHODS, expand_methods


def load_profile(profile: str, overrides: list[str] | None = None) -> Config:
    """The validated config of ``profile`` (a name or a YAML path) with ``key=value`` overrides.

    Raises:
        ConfigError: anything wrong, with the key's path (see :func:`cdco_core.config.load_config`).
        InputError: an unknown method in ``eval.methods``.
    """
    return complete_config(load_config(profile, overrides))


def complete_config(cfg: Config) -> Config:
    """``cfg`` with method settings validated and defaulted and ``eval.methods`` expanded (see module doc)."""
    settings = {}
    for name, raw in cfg.method_settings.items():
        if name not in METHODS:
            raise ConfigError(f"method_settings.{name}: unknown method; registered: {', '.join(METHODS.names())}")
        validated = METHODS.validate_settings(name, raw)
        settings[name] = validated.model_dump(mode="json") if validated is not None else {}
    methods = expand_methods(cfg.eval.methods)
    for name in methods:
        METHODS.entry(name)  # InputError listing the registered names
    dup = sorted({n for n in methods if methods.count(n) > 1})
    if dup:
        raise ConfigError(f"eval.methods: {dup} given more than once")
    check_stage_groups(cfg.train.stages, adapter_group_names(cfg))
    return cfg.model_copy(update={"method_settings": settings,
                                  "eval": cfg.eval.model_copy(update={"methods": methods})})


def with_overrides(cfg: Config, overrides: list[str], where: str) -> Config:
    """``cfg`` with ``key=value`` overrides applied and validated again (a tuned file's settings, a trial's).

    Raises:
        ConfigError: a key the config does not have or a value it refuses, naming ``where`` and the overrides.
    """
    from pydantic import ValidationError

    from cdco_core.config import apply_overrides
    from cdco_core.validation import format_validation_error

    try:
        raw = apply_overrides(cfg.model_dump(mode="json"), overrides)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    try:
        out = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"({where}: {' '.join(overrides)})", Config)) from None
    return complete_config(out)


_KNOWN: dict[str, Config] = {}  # digest -> the validated config this process already holds


def config_to_json(cfg: Config) -> dict[str, Any]:
    """What crosses a process (or Prefect task) boundary: the config's JSON dump and its digest."""
    digest = cfg.digest()
    _KNOWN.setdefault(digest, cfg)
    return {"config": cfg.model_dump(mode="json"), "digest": digest}


def config_from_json(wire: dict[str, Any]) -> Config:
    """The config behind :func:`config_to_json`'s output: the object itself in the process that sent it, else
    validated once per process and remembered.

    Raises:
        ConfigError: the payload does not match its digest (edited or truncated on the way).
    """
    digest = wire["digest"]
    if digest not in _KNOWN:
        cfg = Config.model_validate(wire["config"])
        if cfg.digest() != digest:
            raise ConfigError("the config received does not match its digest; re-run the command")
        _KNOWN[digest] = cfg
    return _KNOWN[digest]
