"""Encoder loading: the tiny random BERT for tests, MiniLM from its package, clear errors otherwise."""

from __future__ import annotations

import pytest
import torch

from cdco_core.config import ModelConfig
from cdco_core.errors import ConfigError, OfflineError
from cdco_core.models.encoder import clean_base_path, load_encoder, model_identity


def test_tiny_random_bert_is_deterministic_and_uses_the_real_tokenizer():
    cfg = ModelConfig(source="tiny-random")
    m1, tok, ident = load_encoder(cfg)
    m2, _, ident2 = load_encoder(cfg)
    assert m1.config.hidden_size == 32 and m1.config.num_hidden_layers == 2
    assert tok.vocab_size == 30522  # MiniLM's uncased WordPiece
    assert ident == ident2
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters(), strict=True):
        assert torch.equal(p1, p2), n
    other = model_identity(ModelConfig(source="tiny-random", tiny={"seed": 1}))
    assert other.weights_digest != ident.weights_digest


def test_minilm_loads_offline_from_its_package():
    model, tok, ident = load_encoder(ModelConfig(source="minilm"))
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert ident.path.endswith("model") and len(ident.weights_digest) == 64
    enc = tok(["a small test"], return_tensors="pt")
    with torch.no_grad():
        out = model(**enc).last_hidden_state
    assert out.shape[-1] == 384 and torch.isfinite(out).all()


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match=r"needs the Hugging Face hub, but this process is offline"):
        load_encoder(ModelConfig(source="hf:bert-base-uncased"))


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"neither 'minilm', 'tiny-random', 'hf:<id>' nor a model folder"):
        load_encoder(ModelConfig(source=str(tmp_path / "nowhere")))


def test_clean_base_path_round_trips_the_tiny_model(tmp_path):
    from transformers import AutoModel

    cfg = ModelConfig(source="tiny-random")
    path = clean_base_path(cfg, tmp_path)
    reloaded = AutoModel.from_pretrained(path)
    original, _, _ = load_encoder(cfg)
    ids = torch.tensor([[101, 2023, 102]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).last_hidden_state, original(input_ids=ids).last_hidden_state)


def test_a_checkpoint_without_a_pooler_loads_without_one_and_quietly(tmp_path, capfd):
    """Our tiny model is saved without a pooler (mean pooling never reads it). Loaded back through load_encoder it
    gets none either, so transformers prints no load report about a randomly initialised pooler, and neither the
    save nor the load draws transformers' progress bars."""
    path = clean_base_path(ModelConfig(source="tiny-random"), tmp_path)
    model, _, _ = load_encoder(ModelConfig(source=str(path)))
    out, err = capfd.readouterr()
    assert model.pooler is None
    assert "pooler" not in out + err and "LOAD REPORT" not in out + err and "Writing model shards" not in err
    assert "Loading weights" not in err
