"""Leftovers of interrupted work under CDCO_HOME: ``*.partial`` folders (a stage's checkpoints for a configuration
never re-run) and ``.tmp-*`` files and folders (an atomic write cut short). ``cdco cache prune`` removes them."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Leftover:
    path: Path
    bytes: int
    age_hours: float  # since the newest write anywhere inside it


def _is_leftover(name: str) -> bool:
    return name.endswith(".partial") or name.startswith(".tmp-")


def _newest_and_size(path: Path) -> tuple[float, int]:
    """(newest mtime, total bytes) of a file or a folder tree (symbolic links are not followed)."""
    st = path.lstat()
    if not path.is_dir() or path.is_symlink():
        return st.st_mtime, st.st_size
    newest, size = st.st_mtime, 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                s = (Path(root) / name).lstat()
            except FileNotFoundError:  # removed while we walk (a live writer): it is not stale
                continue
            newest = max(newest, s.st_mtime)
            size += s.st_size if name in files else 0
    return newest, size


def find_leftovers(home: Path, older_than_hours: float, now: float | None = None) -> list[Leftover]:
    """Every ``*.partial`` / ``.tmp-*`` under ``home`` with no write for ``older_than_hours`` (not descended into).

    The age is the newest write anywhere inside, so a stage that is still writing checkpoints is never listed.
    """
    now = time.time() if now is None else now
    found: list[Leftover] = []
    for root, dirs, files in os.walk(home):
        for name in sorted(dirs + files):
            if not _is_leftover(name):
                continue
            path = Path(root) / name
            try:
                newest, size = _newest_and_size(path)
            except FileNotFoundError:
                continue
            age = (now - newest) / 3600
            if age >= older_than_hours:
                found.append(Leftover(path, size, age))
        dirs[:] = [d for d in dirs if not _is_leftover(d)]  # a leftover's inside is removed with it
    return found


def remove_leftovers(leftovers: list[Leftover]) -> int:
    """Delete them; returns the bytes freed (of those that still existed)."""
    freed = 0
    for item in leftovers:
        if item.path.is_dir() and not item.path.is_symlink():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        if not item.path.exists():
            freed += item.bytes
    return freed
