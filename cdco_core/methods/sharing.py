"""Registrations that train the same stages as another: declared beside the registration, read by the plan.

``same_stages_as("cdco_no_poincare", "cdco")`` says that the registration ``cdco_no_poincare`` differs from
``cdco`` only through what a stage's cache section and inputs already capture: its :meth:`configure` (the shared
config sections), its :meth:`stages` (the schedule) and ``uses_negatives`` (whether the plan gives a stage the ODMS
negatives). A stage of either is then one node of the plan when its section, without the method's name, and its
inputs are equal (:func:`cdco_core.plan.build_plan`): ``cdco_no_poincare`` under a schedule without a Poincaré
term trains ``cdco``'s stages, and every ablation starts from ``cdco``'s task-only warm-up. Settings of its own
(``method_settings.<name>``) are part of the section, so a variant with other settings trains apart.

A declaration is a promise about the method's code, so ``tests/unit/training/test_shared_stages.py`` trains every
stage the plan shares under each declared name and checks that the bytes are equal. This module is in no training
step's code closure (``cdco_core/cache.py``): declaring a share changes no cached key.
"""

from __future__ import annotations

_BASE: dict[str, str] = {}  # registration -> the registration whose stages it may share


def same_stages_as(name: str, base: str) -> None:
    """Declare that ``name`` trains ``base``'s stage wherever their sections and inputs agree (module docstring)."""
    _BASE[name] = base


def stage_family(name: str) -> str | None:
    """The registration whose stages ``name`` may share (``name`` itself for a base), or None: no declaration."""
    if name in _BASE:
        return _BASE[name]
    return name if name in _BASE.values() else None
