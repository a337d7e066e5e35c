"""Where things are: the project's folders and ``CDCO_HOME``, the root of all local state."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"


def cdco_home() -> Path:
    """Root of all local state: ``$CDCO_HOME`` or ``.cdco/`` in the project."""
    return Path(os.environ.get("CDCO_HOME") or PROJECT_ROOT / ".cdco").resolve()
