"""Read one user data file (csv, tsv, jsonl, parquet) into a DataFrame, with messages that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cdco_core.errors import DataError
from cdco_core.io import describe_bad_byte

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    return fmt


def read_table(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read ``path`` by its extension.

    Raises:
        DataError: the file is missing, undecodable (suggests the ``encoding:`` field) or not parseable.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    fmt = detect_format(path)
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        if fmt == "jsonl":
            return _read_jsonl(path, encoding)
        sep = "\t" if fmt == "tsv" else ","
        # keep_default_na=False: the literal text "NA" or "null" is a valid sentence, not a missing value.
        return pd.read_csv(path, sep=sep, encoding=encoding, keep_default_na=False, na_values=[""], dtype=str)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: {describe_bad_byte(path, e)} is not valid {encoding}; "
            f"set the task's 'encoding:' field (e.g. encoding: latin-1)"
        ) from None
    except (pd.errors.ParserError, ValueError, OSError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot parse as {fmt}: {e}") from None


def _read_jsonl(path: Path, encoding: str) -> pd.DataFrame:
    rows = []
    with open(path, encoding=encoding) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                kind = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
                    type(row), "a number")
                raise DataError(f"{path} line {lineno}: a JSON object ({{\"column\": value, ...}}) expected, "
                                f"got {kind}")
            rows.append(row)
    return pd.DataFrame(rows)
