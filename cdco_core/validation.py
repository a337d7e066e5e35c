"""Pydantic conventions shared by every validated mapping: unknown keys refused, one error format.

Every message names the key's full path (``train.stages.1.lr``, ``method_settings.ca_mtl.freeze_fraction``) and,
for an unknown key, the keys allowed at that place.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel], prefix: str = "",
                            title: str = "invalid config") -> str:
    """One readable message for a failed validation of ``model``.

    Args:
        err: the error pydantic raised.
        source: what was being read (a file path, "--set overrides", ...), shown in the first line.
        model: the model validated at the top level (for the allowed keys of an unknown one).
        prefix: the key path of ``model`` inside a larger mapping, e.g. ``method_settings.ca_mtl``.
        title: the first line's words (``invalid task spec`` for a task file).

    Returns:
        ``<title> <source>:`` followed by one ``  <key path>: <problem>`` line per error.
    """
    lines = [f"{title} {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in (*([prefix] if prefix else []), *e["loc"])) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")  # our validators' messages read as they were written
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            allowed = allowed_keys(model, e["loc"])
            if allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
        elif "input" in e and e["type"] != "missing":
            msg += f" (got {e['input']!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model holding ``loc``'s last key (walking ``model`` along ``loc``)."""
    node: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(node, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        if inner:  # list[X] / X | None / dict[str, X]
            ann = next((a for a in inner if hasattr(a, "model_fields")), ann)
        node = ann
    return sorted(getattr(node, "model_fields", {}))
