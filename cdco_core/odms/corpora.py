"""The texts ODMS embeds: a dataset's train split, cleaned, and the OOD pool's seeded cap."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cdco_core.errors import InputError

if TYPE_CHECKING:
    from cdco_core.config import Config
    from cdco_core.data.spec import TaskSpec

log = logging.getLogger(__name__)


def odms_seed(base: int, seed: int) -> int:
    """The seed of training seed ``seed``'s ODMS draws (the pool sample, UMAP's fit sample and initialisation, the
    index, random negatives): ``base + seed``, where ``base`` is ``seed:`` (or ``manifold.seed`` for UMAP). Each
    training seed gets its own draw, so the spread over seeds includes the ODMS variance; training seed 0 of a
    profile with base 0 draws what a single-seed run always drew."""
    return base + seed


def clean_corpus(name: str, df: pd.DataFrame | None) -> pd.DataFrame:
    """example_id, text_a, text_b with whitespace stripped; rows whose texts are all empty are dropped.

    Raises:
        InputError: no train split, no rows, or every text empty after cleaning (names the dataset).
    """
    if df is None or len(df) == 0:
        raise InputError(f"dataset {name!r}: its train split is missing or empty; ODMS embeds train splits")
    a = df["text_a"].fillna("").astype(str).str.strip()
    b = df["text_b"].fillna("").astype(str).str.strip() if "text_b" in df else pd.Series("", index=df.index)
    keep = (a != "") | (b != "")
    if not keep.any():
        raise InputError(f"dataset {name!r}: all {len(df)} texts of the train split are empty after cleaning")
    if not keep.all():
        log.warning("dataset %s: dropped %d rows with empty text", name, int((~keep).sum()))
    out = pd.DataFrame({"example_id": df["example_id"].astype(str), "text_a": a, "text_b": b})[keep]
    return out.reset_index(drop=True)


def cap_rows(df: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """A seeded uniform sample of ``cap`` rows (original order kept), or all rows."""
    if cap is None or len(df) <= cap:
        return df
    idx = np.sort(np.random.default_rng(seed).choice(len(df), size=cap, replace=False))
    return df.iloc[idx].reset_index(drop=True)


def odms_datasets(cfg: Config, specs: list[TaskSpec]) -> tuple[list[str], list[str]]:
    """(anchor datasets, pool datasets) in task-spec order.

    Raises:
        InputError: no ID task; ``negatives.strict_exclude`` names an unknown OOD task; the pool is empty.
    """
    ood = [s.name for s in specs if s.kind == "OOD"]
    unknown = sorted(set(cfg.negatives.strict_exclude) - set(ood))
    if unknown:
        raise InputError(f"negatives.strict_exclude: {unknown} are not OOD tasks; OOD tasks configured: "
                         f"{sorted(ood) or 'none'}")
    anchors = [s.name for s in specs if s.kind == "ID"]
    pool = [n for n in ood if n not in cfg.negatives.strict_exclude]
    if not anchors:
        raise InputError("ODMS needs at least one task with kind: ID (the anchors); none is configured")
    if not pool:
        why = (f"every OOD task is excluded by negatives.strict_exclude={cfg.negatives.strict_exclude}" if ood
               else "no task with kind: OOD is configured")
        raise InputError(f"the OOD pool is empty: {why}")
    return anchors, pool
