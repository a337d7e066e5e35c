"""The texts ODMS embeds: a dataset's train split, cleaned, and the OOD pool's seeded cap."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cdco_core.errors import InputError

log = logging.getLogger(__name__)


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
