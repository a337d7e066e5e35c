"""Normalise every task into one canonical table, cached as Parquet and identified by a content digest.

Canonical columns (one Parquet file per split):
    example_id  str    stable: "<task>:<source split>:<row>", unchanged by re-splitting or sampling
    text_a      str    first text (the question for multiple choice)
    text_b      str    second text for pairs, "" otherwise
    choices     list   options (multiple choice only)
    label       int64  class id / choice index; float64 for regression
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from cdco_core.cache import code_digest
from cdco_core.data.sources import RawSource, load_source
from cdco_core.data.spec import DataConfig, TaskFile, TaskSpec
from cdco_core.errors import DataError
from cdco_core.io import atomic_dir, describe_bad_byte, read_utf8, sha256_frame, sha256_json
from cdco_core.paths import PROJECT_ROOT, cdco_home
from cdco_core.validation import format_validation_error

# The loader's code (this module's import closure) is part of every cached table's key: no version to bump.


@dataclass
class TaskData:
    """A loaded task: its spec, label names, canonical splits and their digests."""

    spec: TaskSpec
    label_names: list[str]
    splits: dict[str, pd.DataFrame]
    digests: dict[str, str]  # split -> content digest
    split_record: dict[str, dict] = field(default_factory=dict)  # how missing splits were made
    path: Path | None = None  # cache directory
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> reason -> rows dropped

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def digest(self) -> str:
        return sha256_json(self.digests)

    @property
    def eval_split(self) -> str:
        if self.spec.eval_split:
            return self.spec.eval_split
        return "validation" if "validation" in self.splits else "test"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def class_weights(self) -> tuple[float, ...] | None:
        """The training loss's class weights: ``n / (C · n_c)`` per class c from the train split's label counts
        (scikit-learn's "balanced") when the spec asks for ``class_weights: balanced``, else None. A class with no
        train row gets weight 1 (no row of it is ever weighed)."""
        if self.spec.class_weights != "balanced":
            return None
        import numpy as np

        labels = self.splits["train"]["label"].to_numpy(np.int64)
        counts = np.bincount(labels, minlength=self.num_labels)
        n, c = int(counts.sum()), self.num_labels
        return tuple(float(n / (c * k)) if k else 1.0 for k in counts)


# ---------------------------------------------------------------------------------------- task specs
def read_task_file(path: str | Path) -> list[TaskSpec]:
    """Read a ``tasks:`` YAML file. Relative ``files:`` paths are resolved against the file's folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"task spec file not found: {path}")
    try:
        raw = yaml.safe_load(read_utf8(path)) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path} is not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {describe_bad_byte(path, e)}") from None
    try:
        specs = TaskFile.model_validate(raw).tasks
    except ValidationError as e:
        raise DataError(format_validation_error(e, str(path), TaskFile, title="invalid task spec")) from None
    return [_anchor_files(s, path.parent) for s in specs]


def _anchor_files(spec: TaskSpec, base: Path) -> TaskSpec:
    if spec.files:
        spec = spec.model_copy(
            update={
                "files": {k: str(v if Path(v).is_absolute() else (base / v).resolve()) for k, v in spec.files.items()}
            }
        )
    return spec


def task_specs(data: DataConfig) -> list[TaskSpec]:
    specs: list[TaskSpec] = []
    if data.tasks_file:
        p = Path(data.tasks_file)
        specs += read_task_file(p if p.is_absolute() else PROJECT_ROOT / p)
    specs += [_anchor_files(s, PROJECT_ROOT) for s in data.tasks]
    from cdco_core.data.checks import check_task_specs

    check_task_specs(specs)
    return specs


# ----------------------------------------------------------------------------------------- loading
def load_tasks(data: DataConfig, names: list[str] | None = None) -> list[TaskData]:
    specs = task_specs(data)
    if names is not None:
        known = {s.name for s in specs}
        missing = [n for n in names if n not in known]
        if missing:
            raise DataError(f"unknown task(s) {missing}; configured: {', '.join(sorted(known))}")
        specs = [s for s in specs if s.name in names]
    return [load_task(s, data) for s in specs]


def load_task(spec: TaskSpec, data: DataConfig, cache_root: Path | None = None) -> TaskData:
    """Load one task into canonical form, from the Parquet cache when its inputs are unchanged.

    Raises:
        DataError: missing file/column/split, empty split, NaN or empty text, unknown label (names file and row).
    """
    mirror = Path(data.mirror_dir) if data.mirror_dir else None
    raw = load_source(spec, PROJECT_ROOT, mirror)
    key_parts = {
        "spec": spec_key(spec),
        "files": raw.file_digests,
        "max_rows": data.max_rows,
        "split_seed": data.split_seed,
        "heldout_fraction": data.heldout_fraction,
        "code": code_digest(__name__),
    }
    if data.dev_fraction > 0 and spec.kind == "ID":  # absent at 0: other profiles' cache keys stay as they were
        key_parts["dev_fraction"] = data.dev_fraction
    key = sha256_json(key_parts)
    cache_dir = (cache_root or cdco_home() / "cache" / "tasks") / f"{spec.name}-{key[:16]}"
    cached = _read_cache(spec, cache_dir)
    if cached is not None:
        return _remember(cached)
    task = canonicalize(spec, raw, data)
    with atomic_dir(cache_dir) as tmp:
        for split, df in task.splits.items():
            df.to_parquet(tmp / f"{split}.parquet", index=False)
        meta = {"label_names": task.label_names, "digests": task.digests, "split_record": task.split_record,
                "dropped": task.dropped}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    task.path = cache_dir
    return _remember(task)


# Tables this process already read and verified, by (cache folder, content digest): the plan's steps open the
# same tasks again and again (the pre-training check, every stage, the evaluation); each is read and hashed once.
_OPENED: dict[tuple[str, str], TaskData] = {}


def _remember(task: TaskData) -> TaskData:
    if len(_OPENED) >= 64:
        _OPENED.clear()
    _OPENED[(str(task.path), task.digest)] = task
    return task


def open_task(record: Any) -> TaskData:
    """The task a ``prepare`` record names (:mod:`cdco_core.steps.prepare`), read from its cache folder (once per
    process: see :data:`_OPENED`).

    Raises:
        DataError: the cached table is gone or no longer has the content digest the record holds.
    """
    known = _OPENED.get((str(Path(record.dir)), record.digest))
    if known is not None:
        return known
    spec = TaskSpec.model_validate(record.outputs["spec"])
    task = _read_cache(spec, Path(record.dir))
    if task is None or task.digest != record.digest:
        raise DataError(f"task {spec.name!r}: its cached table in {record.dir} changed since it was prepared; "
                        "run the command again")
    return _remember(task)


# TaskSpec fields that do not change the canonical table (where a task is used and how it is trained, not what
# its rows are): out of the table's key, in the keys of the steps that read the task (:func:`usage_key`). And
# fields that enter the key only when set, so adding them left every existing task's cache key unchanged.
_ROLE_FIELDS = ("ood_protocol", "probe", "class_weights")
_KEYED_WHEN_SET = ("heldout_rows", "max_rows")


def usage_key(spec_json: dict[str, Any]) -> dict[str, Any]:
    """The spec fields a prepared task's consumers depend on beyond its rows (the role fields), from the spec's
    JSON: a step reading the task is keyed by them too, so changing ``class_weights`` retrains."""
    return {f: spec_json.get(f) for f in _ROLE_FIELDS}


def spec_key(spec: TaskSpec) -> dict:
    """The part of a spec the canonical table depends on (JSON), for the task cache key."""
    out = spec.model_dump(mode="json", exclude=set(_ROLE_FIELDS))
    for name in _KEYED_WHEN_SET:
        if out.get(name) is None:
            out.pop(name, None)
    if out.get("on_invalid_rows") == "error":  # the default leaves the key of caches made before the field
        del out["on_invalid_rows"]
    return out


def _read_cache(spec: TaskSpec, cache_dir: Path) -> TaskData | None:
    meta_path = cache_dir / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        splits = {s: pd.read_parquet(cache_dir / f"{s}.parquet") for s in meta["digests"]}
        for s, df in splits.items():
            if "choices" in df.columns:
                splits[s]["choices"] = df["choices"].map(list)
            if sha256_frame(splits[s]) != meta["digests"][s]:
                return None  # corrupt or edited: rebuild, never trust
    except Exception:  # unreadable cache of any kind is rebuilt
        return None
    return TaskData(spec, meta["label_names"], splits, meta["digests"], meta["split_record"], cache_dir,
                    dropped=meta.get("dropped", {}))


def canonicalize(spec: TaskSpec, raw: RawSource, data: DataConfig) -> TaskData:
    text_cols = spec.text or raw.text
    label_col = spec.label or raw.label
    choices_col = spec.choices or raw.choices
    if not text_cols or not label_col:
        raise DataError(f"task {spec.name!r}: name the text column(s) with 'text:' and the label with 'label:'")
    if spec.type == "multiple_choice" and not choices_col:
        raise DataError(f"task {spec.name!r}: multiple_choice needs 'choices:' naming the options column")
    if spec.type == "pair_classification" and len(text_cols) != 2:
        raise DataError(f"task {spec.name!r}: pair_classification needs two text columns, got {text_cols}")

    frames: dict[str, pd.DataFrame] = {}
    dropped: dict[str, dict[str, int]] = {}
    for split, df in raw.splits.items():
        where = raw.files.get(split, split)
        if len(df) == 0:
            raise DataError(f"task {spec.name!r}: split {split!r} ({where}) is empty")
        needed = list(text_cols) + [label_col] + ([choices_col] if choices_col else [])
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise DataError(f"{where}: column(s) {missing} not found; columns found: {list(df.columns)}")
        frames[split], counts = _normalise_rows(spec, df, split, where, text_cols, label_col, choices_col)
        if counts:
            dropped[split] = counts
            warnings.warn(f"{where}: dropped {sum(counts.values())} invalid row(s) of {len(df)} "
                          f"({', '.join(f'{k}={v}' for k, v in counts.items())}) because task {spec.name!r} "
                          "sets on_invalid_rows: drop", UserWarning, stacklevel=2)
        if len(frames[split]) == 0:
            raise DataError(f"task {spec.name!r}: split {split!r} ({where}) has no valid row left")

    label_names, frames = _encode_labels(spec, raw, frames)
    frames, record = _ensure_splits(spec, frames, data)
    caps = {**data.max_rows, **(spec.max_rows or {})}  # the task's own caps win
    frames = {s: _cap_rows(df, caps.get(s), data.split_seed) for s, df in frames.items()}
    if data.dev_fraction > 0 and spec.kind == "ID":
        frames, dev_record = carve_dev_split(spec.name, frames, data.dev_fraction, data.split_seed)
        if "train" in record:  # train was itself carved from a single split: keep that, note the dev cut
            dev_record["train"] = {**record["train"], "rows": dev_record["train"]["rows"],
                                   "dev": dev_record["train"]["method"]}
        record = {**record, **dev_record}
    digests = {s: sha256_frame(df) for s, df in frames.items()}
    return TaskData(spec, label_names, frames, digests, record, dropped=dropped)


def _blank(values: pd.Series) -> np.ndarray:
    """True where a cell is missing or only whitespace."""
    return np.array(values.isna() | values.astype(str).str.strip().eq(""), dtype=bool)  # a writable copy


def _normalise_rows(spec, df, split, where, text_cols, label_col, choices_col) -> tuple[pd.DataFrame, dict]:
    """Canonical columns of one split, and the rows dropped per reason (``on_invalid_rows: drop``)."""
    df = df.reset_index(drop=True)
    reasons = {"empty_text": np.zeros(len(df), bool), "empty_label": _blank(df[label_col])}
    for col in text_cols:
        bad = _blank(df[col])
        if bad.any() and spec.on_invalid_rows == "error":
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where} row {row + 1}: column {col!r} is empty or NaN ({int(bad.sum())} such rows); "
                f"clean the file, or set 'on_invalid_rows: drop' on task {spec.name!r} to drop such rows"
            )
        reasons["empty_text"] |= bad
    if reasons["empty_label"].any() and spec.on_invalid_rows == "error":
        row = int(np.flatnonzero(reasons["empty_label"])[0])
        raise DataError(f"{where} row {row + 1}: label column {label_col!r} is empty; clean the file, or set "
                        f"'on_invalid_rows: drop' on task {spec.name!r} to drop such rows")
    # A row with both an empty text and an empty label counts once, under empty_text.
    reasons["empty_label"] &= ~reasons["empty_text"]
    keep = ~(reasons["empty_text"] | reasons["empty_label"])
    counts = {k: int(v.sum()) for k, v in reasons.items() if v.any()}
    # ids keep the source row numbers, so dropping a row never renames the others
    out = pd.DataFrame({"example_id": [f"{spec.name}:{split}:{i}" for i in np.flatnonzero(keep)]})
    df = df[keep].reset_index(drop=True)
    for new, col in zip(["text_a", "text_b"], text_cols, strict=False):
        out[new] = df[col].astype(str).to_numpy()
    if "text_b" not in out:
        out["text_b"] = ""
    if choices_col:
        opts = df[choices_col].reset_index(drop=True).map(_as_options)
        short = opts.map(len) < 2
        if short.any():
            row = int(np.flatnonzero(short.to_numpy())[0])
            raise DataError(f"{where} row {row + 1}: column {choices_col!r} needs at least 2 options")
        out["choices"] = opts.to_numpy()
    out["label"] = df[label_col].to_numpy()
    out.attrs["where"] = where
    return out, counts


def _as_options(v) -> list[str]:
    if isinstance(v, str):
        return [o.strip() for o in v.split("|")]
    return [str(o) for o in v]


def _encode_labels(spec: TaskSpec, raw: RawSource, frames: dict[str, pd.DataFrame]):
    if spec.type == "regression":
        for df in frames.values():
            vals = pd.to_numeric(df["label"], errors="coerce")
            if vals.isna().any():
                row = int(np.flatnonzero(vals.isna().to_numpy())[0])
                raise DataError(f"{df.attrs['where']} row {row + 1}: label {df['label'][row]!r} is not a number")
            df["label"] = vals.astype("float64")
        return [], frames
    if spec.type == "multiple_choice":
        for df in frames.values():
            df["label"] = [_choice_index(lab, opts, df.attrs["where"], i) for i, (lab, opts)
                           in enumerate(zip(df["label"], df["choices"], strict=True))]
            df["label"] = df["label"].astype("int64")
        return [], frames

    declared = spec.label_names or raw.label_names
    if spec.type == "boolean_qa" and declared is None:
        declared = ["false", "true"]
    if declared is None:  # infer from the training split (all splits if none is called train)
        basis = frames.get("train")
        pool = basis["label"] if basis is not None else pd.concat([f["label"] for f in frames.values()])
        declared = sorted({_label_str(v) for v in pool})
    names = [str(n) for n in declared]
    index = {n: i for i, n in enumerate(names)}
    for df in frames.values():
        ids = []
        for row, v in enumerate(df["label"]):
            ids.append(_label_id(v, index, names, df.attrs["where"], row))
        df["label"] = np.asarray(ids, dtype="int64")
    return names, frames


def _label_str(v) -> str:
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _label_id(v, index: dict[str, int], names: list[str], where: str, row: int) -> int:
    s = _label_str(v)
    if s in index:
        return index[s]
    # integer ids against declared names (the mirror stores ids)
    if isinstance(v, int | np.integer) or (isinstance(v, str) and v.strip().lstrip("-").isdigit()):
        i = int(v)
        if 0 <= i < len(names):
            return i
    raise DataError(f"{where} row {row + 1}: label {v!r} is not in the label set {names}")


def _choice_index(label, options: list[str], where: str, row: int) -> int:
    if isinstance(label, int | np.integer) and 0 <= int(label) < len(options):
        return int(label)
    s = str(label).strip()
    if s.isdigit() and 0 <= int(s) < len(options):
        return int(s)
    if len(s) == 1 and s.isalpha() and 0 <= ord(s.upper()) - 65 < len(options):
        return ord(s.upper()) - 65
    if s in options:
        return options.index(s)
    raise DataError(f"{where} row {row + 1}: answer {label!r} is not an option index, letter or option text")


def _stable_rank(ids: pd.Series, seed: int) -> np.ndarray:
    keys = [hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids]
    return np.argsort(np.asarray(keys))


def _ensure_splits(spec: TaskSpec, frames: dict[str, pd.DataFrame], data: DataConfig):
    """Make the train and held-out splits a task needs, deterministically, and record how."""
    record: dict[str, dict] = {}
    eval_name = spec.eval_split or ("validation" if "validation" in frames else "test")
    held = sorted(s for s in frames if s != "train")
    if spec.eval_split and spec.eval_split not in frames and "train" in frames and held:
        # carving it out of train would silently ignore the held-out split(s) the source does have
        raise DataError(f"task {spec.name!r}: eval_split {spec.eval_split!r} names a split the source does not "
                        f"have; found: {', '.join(sorted(frames))}")
    if spec.eval_split and spec.eval_split not in frames and "train" not in frames:
        raise DataError(f"task {spec.name!r}: split {spec.eval_split!r} is missing; found {sorted(frames)}")
    if "train" in frames and eval_name in frames:
        return frames, record
    if "train" in frames:  # no held-out split: carve it out of train
        source, heldout_name = "train", spec.eval_split or "validation"
    else:
        if eval_name not in frames:
            eval_name = sorted(frames)[0]
        source, heldout_name = eval_name, eval_name
    df = frames.pop(source)
    order = _stable_rank(df["example_id"], data.split_seed)
    if spec.heldout_rows is not None:
        n_held, share = spec.heldout_rows, f"held-out rows={spec.heldout_rows}"
    else:
        n_held = max(1, int(math.floor(len(df) * data.heldout_fraction)))
        share = f"held-out fraction={data.heldout_fraction}"
    if len(df) - n_held < 1:
        raise DataError(
            f"task {spec.name!r}: split {source!r} has {len(df)} row(s), too few to hold out {n_held} and train on "
            "the rest" + (" (lower heldout_rows)" if spec.heldout_rows is not None else "")
        )
    held_idx, train_idx = np.sort(order[:n_held]), np.sort(order[n_held:])
    frames["train"] = df.iloc[train_idx].reset_index(drop=True)
    frames[heldout_name] = df.iloc[held_idx].reset_index(drop=True)
    how = f"sha256(seed:example_id) order, seed={data.split_seed}, {share}"
    record = {
        "train": {"from": source, "rows": len(train_idx), "method": how},
        heldout_name: {"from": source, "rows": len(held_idx), "method": how},
    }
    return frames, record


DEV_SPLIT = "dev"


def carve_dev_split(task: str, frames: dict[str, pd.DataFrame], fraction: float,
                    seed: int) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """Hold ``fraction`` of the (capped) train split out as the ``dev`` split, for choices of settings.

    Rows are ordered by ``sha256(f"dev-{seed}:{example_id}")`` (a salt distinct from the cap's and the
    held-out split's order) and the first ``max(1, floor(n * fraction))`` go to dev; train keeps the rest.
    Dev comes out of train only, so it never meets a reported (validation/test) split.

    Args:
        task: task name (for messages).
        frames: canonical splits; must hold ``train``.
        fraction: share of train held out, 0 < fraction < 1.
        seed: ``data.split_seed``.

    Returns:
        (frames with ``train`` reduced and ``dev`` added, the split record for both).

    Raises:
        DataError: no train split, a source split already called ``dev``, or too few rows to carve one.
    """
    if "train" not in frames:
        raise DataError(f"task {task!r}: a dev split is carved from train, and the task has none ({sorted(frames)})")
    if DEV_SPLIT in frames:
        raise DataError(f"task {task!r}: the source already has a split named {DEV_SPLIT!r}; rename it")
    train = frames["train"]
    n_dev = max(1, int(math.floor(len(train) * fraction)))
    if len(train) - n_dev < 1:
        raise DataError(f"task {task!r}: train has {len(train)} row(s), too few to hold out a dev split")
    order = np.argsort(np.asarray([hashlib.sha256(f"dev-{seed}:{i}".encode()).hexdigest()
                                   for i in train["example_id"]]))
    dev_idx, keep_idx = np.sort(order[:n_dev]), np.sort(order[n_dev:])
    out = dict(frames)
    out["train"] = train.iloc[keep_idx].reset_index(drop=True)
    out[DEV_SPLIT] = train.iloc[dev_idx].reset_index(drop=True)
    how = f"sha256(dev-seed:example_id) order over the capped train split, seed={seed}, dev fraction={fraction}"
    record = {"train": {"from": "train", "rows": len(keep_idx), "method": f"train minus dev; {how}"},
              DEV_SPLIT: {"from": "train", "rows": n_dev, "method": how}}
    return out, record


def _cap_rows(df: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    if cap is None or len(df) <= cap:
        return df
    idx = np.sort(_stable_rank(df["example_id"], seed)[:cap])
    return df.iloc[idx].reset_index(drop=True)
