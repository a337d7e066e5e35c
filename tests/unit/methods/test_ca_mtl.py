"""CA-MTL: conditional modules, the conditioned encoder, freezing, and the uncertainty sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdco_core.errors import ConfigError
from cdco_core.methods import METHODS
from cdco_core.methods.ca_mtl.model import CaMtlEncoder, frozen_layer_count
from cdco_core.methods.ca_mtl.modules import BlockDiagonalAttentionBias, ConditionalLayerNorm, FiLM
from cdco_core.samplers import UncertaintySampler, normalized_entropy


def ca_mtl_config(raw: dict):
    """``method_settings.ca_mtl`` validated as a profile load does it (the registry's config class)."""
    return METHODS.validate_settings("ca_mtl", raw)


def _bert(layers: int = 2, hidden: int = 32, seed: int = 0):
    """A fresh tiny random BertModel (not the session fixture: CA-MTL changes requires_grad of what it wraps)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    conf = BertConfig(
        vocab_size=120,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertModel(conf, add_pooling_layer=False).eval()


def _perturb(module: torch.nn.Module, seed: int = 1) -> None:
    """Give every zero-initialised generator/block random values, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not name.startswith("bert."):
                p.add_(0.3 * torch.randn(p.shape, generator=g))


def _inputs(batch: int = 3, length: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1:
        mask[1, length - 3 :] = 0  # a padded row
    return ids, mask


# ------------------------------------------------------------------------------------------ modules
def test_film_is_identity_at_init_and_modulates_after():
    film = FiLM(cond_dim=4, features=3)
    x = torch.randn(2, 5, 3)
    cond = torch.randn(2, 4)
    assert torch.equal(film(x, cond), x)
    with torch.no_grad():  # gamma = 1, beta = 2 for every feature, whatever the condition
        film.generator.bias.copy_(torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0]))
    assert torch.allclose(film(x, cond), 2 * x + 2)


def test_conditional_layer_norm_equals_pretrained_norm_at_init():
    norm = torch.nn.LayerNorm(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    cln = ConditionalLayerNorm(cond_dim=4, features=6)
    x, cond = torch.randn(2, 3, 6), torch.randn(2, 4)
    assert torch.allclose(cln(norm, x, cond), norm(x), atol=1e-6)
    with torch.no_grad():  # gamma = 1 doubles the weight: y = 2 w ⊙ x̂ + b
        cln.film.generator.bias[:6] = 1.0
    expected = 2 * torch.nn.functional.layer_norm(x, (6,)) * norm.weight + norm.bias
    assert torch.allclose(cln(norm, x, cond), expected, atol=1e-5)


@pytest.mark.parametrize("seq_len", [7, 13])
def test_attention_bias_is_block_diagonal_for_lengths_that_do_not_divide(seq_len):
    bias_mod = BlockDiagonalAttentionBias(cond_dim=4, block_size=4, max_positions=64)
    with torch.no_grad():
        bias_mod.blocks.copy_(torch.arange(bias_mod.blocks.numel(), dtype=torch.float).view_as(bias_mod.blocks) + 1)
        bias_mod.film.generator.bias[4:] = 0.5  # beta = 0.5 everywhere, gamma = 0
    with torch.no_grad():
        bias = bias_mod(torch.randn(2, 4), seq_len)
    assert bias.shape == (2, seq_len, seq_len)
    blocks = bias_mod.blocks.detach()
    # i=5, j=6: both in block 1 (positions 4..7) at offsets 1, 2
    assert bias[0, 5, 6] == pytest.approx(float(blocks[1, 1, 2]) + 0.5)
    # i=3 (block 0), j=4 (block 1): off the diagonal blocks
    assert bias[1, 3, 4] == 0.0
    # the last, partial block: positions 4*(T//4) .. T-1
    last = 4 * (seq_len // 4)
    assert bias[0, seq_len - 1, last] == pytest.approx(float(blocks[seq_len // 4, seq_len - 1 - last, 0]) + 0.5)
    nonzero = (bias[0] != 0).sum().item()
    sizes = [4] * (seq_len // 4) + ([seq_len % 4] if seq_len % 4 else [])
    assert nonzero == sum(s * s for s in sizes)


@pytest.mark.parametrize("seq_len", [7, 13])
def test_encoder_runs_any_length_and_padding_does_not_change_real_tokens(seq_len):
    enc = CaMtlEncoder(_bert(hidden=32), num_tasks=2, settings=ca_mtl_config({"attention_block_size": 5})).eval()
    _perturb(enc)
    ids, _ = _inputs(batch=2, length=seq_len)
    tasks = torch.tensor([0, 1])
    out = enc(ids, torch.ones_like(ids), task_ids=tasks)
    assert out.shape == (2, seq_len, 32) and torch.isfinite(out).all()
    padded = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros(2, 4, dtype=torch.long)], dim=1)
    out_padded = enc(padded, mask, task_ids=tasks)
    assert torch.allclose(out_padded[:, :seq_len], out, atol=1e-5)


# ------------------------------------------------------------------------------------------ encoder
def test_encoder_equals_pretrained_bert_at_init():
    bert = _bert()
    ids, mask = _inputs()
    with torch.no_grad():
        ref = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        out = CaMtlEncoder(bert, num_tasks=3, settings=ca_mtl_config({})).eval()(
            ids, mask, task_ids=torch.tensor([0, 2, 1])
        )
    real = mask.bool()
    assert torch.allclose(out[real], ref[real], atol=1e-5)


def test_outputs_differ_between_task_ids_and_none_is_the_mean_task():
    enc = CaMtlEncoder(_bert(), num_tasks=3, settings=ca_mtl_config({})).eval()
    _perturb(enc)
    ids, mask = _inputs(batch=1)
    ids, mask = ids.expand(3, -1), mask.expand(3, -1)
    with torch.no_grad():
        out = enc(ids, mask, task_ids=torch.tensor([0, 1, 2]))
        out_none = enc(ids, mask, task_ids=None)
        mean_cond = enc.task_embedding.transform(enc.task_embedding.table.mean(0))
        cond_none = enc.conditioning(None, 3)
    assert (out[0] - out[1]).abs().max() > 1e-3
    assert (out[1] - out[2]).abs().max() > 1e-3
    assert torch.allclose(cond_none, mean_cond.expand(3, -1), atol=1e-6)
    assert not torch.allclose(out_none[0], out[0], atol=1e-4)


@pytest.mark.parametrize("bad", [torch.tensor([0, 3, 1]), torch.tensor([-1, 0, 0])])
def test_task_id_out_of_range_raises(bad):
    enc = CaMtlEncoder(_bert(), num_tasks=3, settings=ca_mtl_config({}))
    ids, mask = _inputs()
    with pytest.raises(ValueError, match=r"out of range.*3 task\(s\), ids 0\.\.2"):
        enc(ids, mask, task_ids=bad)
    with pytest.raises(ValueError, match="integer tensor"):
        enc(ids, mask, task_ids=torch.tensor([0.0, 1.0, 2.0]))


@pytest.mark.parametrize(("layers", "fraction", "frozen"), [(4, 0.5, 2), (4, 0.25, 1), (2, 0.0, 0), (4, 1.0, 4)])
def test_frozen_fraction_is_what_config_says(layers, fraction, frozen):
    bert = _bert(layers=layers)
    enc = CaMtlEncoder(bert, num_tasks=2, settings=ca_mtl_config({"freeze_fraction": fraction}))
    assert enc.num_frozen == frozen == frozen_layer_count(layers, fraction)
    flags = [all(p.requires_grad for p in layer.parameters()) for layer in bert.encoder.layer]
    assert flags == [False] * frozen + [True] * (layers - frozen)
    assert not any(p.requires_grad for layer in bert.encoder.layer[:frozen] for p in layer.parameters())
    assert all(p.requires_grad is (frozen == 0) for p in bert.embeddings.parameters())
    new = [p for n, p in enc.named_parameters() if not n.startswith("bert.")]
    assert new and all(p.requires_grad for p in new)
    # conditional layer norms only where the layer trains; one adapter, on the top layer
    assert [c.attention_norm is not None for c in enc.conditional] == [i >= frozen for i in range(layers)]
    assert [c.adapter is not None for c in enc.conditional] == [False] * (layers - 1) + [True]


def test_config_errors_name_the_key():
    unknown = r"method_settings\.ca_mtl\.freeze_fractoin: unknown key; allowed.*freeze_fraction"
    with pytest.raises(ConfigError, match=unknown):
        ca_mtl_config({"freeze_fractoin": 0.5})
    with pytest.raises(ConfigError, match=r"method_settings\.ca_mtl\.freeze_fraction: .*less than or equal to 1"):
        ca_mtl_config({"freeze_fraction": 1.5})
    with pytest.raises(ConfigError, match=r"adapter_layers=3 exceeds the encoder's 2 layers"):
        CaMtlEncoder(_bert(), num_tasks=2, settings=ca_mtl_config({"adapter_layers": 3}))


# ------------------------------------------------------------------------------------------ sampler
def test_normalized_entropy_hand_values():
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)], [50.0, 0.0]])
    u = normalized_entropy(logits)
    # p = (1/4, 3/4): H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.562335; / ln 2 = 0.811278
    assert u.tolist() == pytest.approx([1.0, 0.811278, 0.0], abs=1e-5)
    masked = normalized_entropy(torch.tensor([[1.0, 1.0, 1.0, 9.0]]), torch.tensor([[True, True, True, False]]))
    assert masked.item() == pytest.approx(1.0)
    assert torch.isnan(normalized_entropy(torch.tensor([[0.3]]))).all()  # regression: no distribution
    with pytest.raises(ValueError, match=r"logits \(B, C\)"):
        normalized_entropy(torch.zeros(3))


def test_uncertainty_sampler_keeps_highest_scaled_entropy():
    from cdco_core.samplers import get_sampler

    sampler = get_sampler("uncertainty")
    assert isinstance(sampler, UncertaintySampler) and sampler.batch_level
    sampler.setup([10, 10])
    tasks = np.array([0, 0, 0, 1, 1, 1])
    u = np.array([0.9, 0.3, 0.0, 0.8, 0.7, 0.9])
    # task means 0.4 and 0.8 -> scales 0.5 and 1: s = [0.45, 0.15, 0, 0.8, 0.7, 0.9]
    assert sampler.scaled_scores(tasks, u) == pytest.approx([0.45, 0.15, 0.0, 0.8, 0.7, 0.9])
    assert sampler.select(tasks, u, 3).tolist() == [5, 3, 4]  # row 0 (raw 0.9) loses to its task's low mean
    assert sampler.select(tasks, u, 4).tolist() == [5, 3, 4, 0]
    assert sampler.drawn == [6, 6] and sampler.kept == [1, 6]
    assert sampler.kept_fraction == pytest.approx(7 / 12)
    with pytest.raises(ValueError, match="must match candidates"):
        sampler.select(tasks, u[:5], 3)
    with pytest.raises(ValueError, match=r"k must be in \[1, 6\]"):
        sampler.select(tasks, u, 7)


def test_uncertainty_sampler_regression_rows_and_used_fraction_resume():
    sampler = UncertaintySampler()
    sampler.setup([4, 6])
    # task 1 is regression (NaN): its rows take the classification mean 0.4
    scaled = sampler.scaled_scores([0, 0, 1, 1], np.array([0.6, 0.2, np.nan, np.nan]))
    assert scaled == pytest.approx([0.6, 0.2, 0.4, 0.4])
    sampler.record_ids(0, ["a", "b", "b"])
    sampler.record_ids(1, ["z"])
    assert sampler.used_fraction == pytest.approx(3 / 10)
    with pytest.raises(ValueError, match="task 2 is not one of the 2 set-up tasks"):
        sampler.record_ids(2, ["q"])
    restored = UncertaintySampler()
    restored.load_state_dict(sampler.state_dict())
    assert restored.used_fraction == pytest.approx(3 / 10)
    assert restored.report()["used_fraction"] == pytest.approx(0.3)


# ------------------------------------------------------------------------------ as a method / model
def _tasks():
    from types import SimpleNamespace

    def task(name, kind, n):
        return SimpleNamespace(name=name, spec=SimpleNamespace(type=kind), num_labels=n,
                               class_weights=lambda: None)

    return [task("sent", "classification", 2), task("choice", "multiple_choice", 0), task("score", "regression", 0)]


@pytest.fixture
def ca_model(smoke_cfg):
    from cdco_core.methods import get_method

    method = get_method("ca_mtl")
    assert method.sampler == "uncertainty"
    model, tok = method.build_model(smoke_cfg, _tasks())
    return model, tok


def _batch(tok, task: str, texts: list[str], task_id: int, choices: list[list[str]] | None = None):
    from cdco_core.training.batches import Example, collate

    kind = {"sent": "classification", "choice": "multiple_choice", "score": "regression"}[task]
    examples = [
        Example(
            task,
            task_id,
            kind,
            f"{task}-{i}",
            text,
            choices=choices[i] if choices else None,
            label=0.5 if kind == "regression" else 0,
        )
        for i, text in enumerate(texts)
    ]
    return collate(examples, tok, max_length=24)


def test_model_trains_and_saves_what_ca_mtl_trains(ca_model, smoke_cfg):
    from cdco_core.methods import get_method

    model, tok = ca_model
    trainable = set(model.set_trainable(["all"], train_heads=True))
    # smoke: 2 layers, freeze_fraction 0.5 -> layer 0's own weights and the embeddings frozen
    assert not any(n.startswith(("encoder.bert.embeddings.", "encoder.bert.encoder.layer.0.")) for n in trainable)
    assert "encoder.bert.encoder.layer.1.output.dense.weight" in trainable
    assert {"encoder.task_embedding.table", "encoder.conditional.0.attention_bias.blocks"} <= trainable
    lower = model.group_parameter_names("lower")
    assert lower and all(".0." in n for n in lower)  # layer 0: only its conditional modules
    _perturb(model.encoder)
    batch = _batch(tok, "sent", ["a fine film", "dull and slow"], 0)
    model.eval()
    with torch.no_grad():
        logits = model(batch)["sent"][1]
        with model.adapters_disabled():
            bare = model(batch)["sent"][1]
    assert not torch.allclose(logits, bare, atol=1e-4)
    state = model.trainable_state_dict()
    assert not any(k.startswith("encoder.bert.encoder.layer.0.") for k in state)
    fresh, _ = get_method("ca_mtl").build_model(smoke_cfg, _tasks())
    fresh.load_trainable_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(batch)["sent"][1], logits, atol=1e-5)


def test_multiple_choice_rows_and_uncertainty_scores(ca_model):
    from cdco_core.samplers import get_sampler

    model, tok = ca_model
    mc = _batch(
        tok,
        "choice",
        ["capital of france?", "capital of peru?"],
        1,
        choices=[["paris", "lima", "rome"], ["lima", "oslo", "bern"]],
    )
    pooled = model.encode(mc.input_ids, mc.attention_mask, mc.token_type_ids, mc.task_ids)
    assert pooled.shape == (6, 32)
    sampler = get_sampler("uncertainty")
    sampler.setup([5, 5, 5])
    u = sampler.score_rows(model, mc)
    assert u.shape == (2,) and np.all((u >= 0) & (u <= 1 + 1e-6))
    sampler.select(mc.task_ids.numpy(), u, 1)  # the kept row's example id counts as used
    assert sampler.report()["used_rows"] == [0, 1, 0] and sampler.used_fraction == pytest.approx(1 / 15)
    reg = _batch(tok, "score", ["one", "two"], 2)
    model.train()
    assert np.isnan(sampler.score_rows(model, reg)).all() and model.training  # mode restored


# ---------------------------------------------------------------------------------- shared trainer
def test_training_steps_with_uncertainty_sampling_lower_the_loss(smoke_cfg, tmp_path):
    from cdco_core.config import StageConfig
    from cdco_core.data import load_tasks
    from cdco_core.losses import task_loss
    from cdco_core.methods import get_method
    from cdco_core.samplers import get_sampler
    from cdco_core.training.batches import BatchSource, collate, task_examples
    from cdco_core.training.trainer import StageInputs, run_stage

    tasks = [t for t in load_tasks(smoke_cfg.data) if t.spec.kind == "ID"]
    method = get_method("ca_mtl")
    torch.manual_seed(0)
    model, tok = method.build_model(method.configure(smoke_cfg), tasks)
    examples = [task_examples(t, i)[:8] for i, t in enumerate(tasks)]
    sampler = get_sampler(method.sampler)
    source = BatchSource(examples, sampler, 8, tok, smoke_cfg.model.max_length, seed=0)
    everything = collate([e for ex in examples for e in ex], tok, smoke_cfg.model.max_length)

    def mean_loss() -> float:
        model.eval()
        with torch.no_grad():
            pooled = model.encode(
                everything.input_ids, everything.attention_mask, everything.token_type_ids, everything.task_ids
            )
            out = model.batch_logits(everything, pooled)
        return sum(float(task_loss("classification", lg, everything.labels[r])) for r, lg in out.values()) / 2

    before = mean_loss()
    stage = StageConfig(name="task", groups=["all"], losses={"task": 1.0}, steps=8, lr=2e-2)
    inp = StageInputs(
        cfg=smoke_cfg,
        method=method,
        stage=stage,
        stage_index=0,
        global_offset=0,
        task_types={t.name: t.spec.type for t in tasks},
        work_dir=tmp_path / "work",
    )
    hist = run_stage(model, source, None, inp)["history"]
    assert len(hist) == 8 and mean_loss() < 0.7 * before
    report = sampler.report()  # 8 steps x 16 candidates, 8 kept each
    assert report["drawn"] == [64, 64] and sum(report["kept"]) == 64 and report["kept_fraction"] == 0.5
    assert 0.5 <= report["used_fraction"] <= 1.0


def test_configure_validates_settings_and_keys_them():
    from cdco_core.methods import get_method
    from cdco_core.plan import Node
    from cdco_core.profile import load_profile
    from cdco_core.steps.train import section

    cfg = load_profile("smoke", ["method_settings.ca_mtl.freeze_fraction=0.25"])
    assert cfg.method_settings["ca_mtl"]["freeze_fraction"] == 0.25
    method = get_method("ca_mtl", cfg)
    assert method.settings.freeze_fraction == 0.25
    node = Node("train[ca_mtl/seed0/0-t]", "train", "ca_mtl", {"seed": 0, "stage": 0})
    base = load_profile("smoke")
    assert get_method("ca_mtl", base).settings.freeze_fraction == 0.5
    # the settings are part of the training step's cache key
    assert section(cfg, node)["settings"]["freeze_fraction"] == 0.25
    assert section(cfg, node) != section(base, node)
    with pytest.raises(ConfigError, match=r"method_settings\.ca_mtl\.block: unknown key"):
        load_profile("smoke", ["method_settings.ca_mtl.block=3"])


def test_param_groups_scale_the_pretrained_weights(ca_model):
    from cdco_core.config import StageConfig
    from cdco_core.methods import get_method

    model, _ = ca_model
    model.set_trainable(["all"], train_heads=True)
    params = [p for p in model.parameters() if p.requires_grad]
    stage = StageConfig(name="t", groups=["all"], losses={"task": 1.0}, steps=1, lr=1e-3)
    new, base = get_method("ca_mtl").param_groups(model, params, stage)
    assert new["lr"] == 1e-3 and base["lr"] == pytest.approx(1e-4)  # encoder_lr_scale 0.1
    top = model.encoder.bert.encoder.layer[1].output.dense.weight
    assert any(p is top for p in base["params"]) and not any(p is top for p in new["params"])
    assert len(new["params"]) + len(base["params"]) == len(params)


def test_kept_rows_lose_their_padding_and_the_loss_does_not_change(ca_model, smoke_cfg):
    from cdco_core.config import StageConfig
    from cdco_core.methods import get_method
    from cdco_core.methods.base import StepContext
    from cdco_core.methods.ca_mtl.method import trim_padding

    model, tok = ca_model
    long = "a long review that goes on and on about the plot, the actors and the music " * 2
    batch = _batch(tok, "sent", ["short one", long, "tiny"], 0).select([0, 2])  # keeps the long row's width
    trimmed = trim_padding(batch)
    assert batch.input_ids.shape[1] > trimmed.input_ids.shape[1] == int(batch.attention_mask.sum(1).max())
    assert torch.equal(trimmed.input_ids, batch.input_ids[:, : trimmed.input_ids.shape[1]])
    _perturb(model.encoder)
    model.eval()
    method = get_method("ca_mtl")
    stage = StageConfig(name="t", groups=["all"], losses={"task": 1.0}, steps=1, lr=1e-3)
    ctx = StepContext(cfg=smoke_cfg, stage_index=0, step=0, global_step=0, task_types={"sent": "classification"})
    with torch.no_grad():
        ours = method.loss_terms(model, batch, stage, ctx)["task"]
        pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.task_ids)
        untrimmed = torch.nn.functional.cross_entropy(model.batch_logits(batch, pooled)["sent"][1], batch.labels)
    assert ours.item() == pytest.approx(untrimmed.item(), abs=1e-5)


def test_loss_is_the_mean_of_per_task_losses_on_a_mixed_batch(ca_model, smoke_cfg):
    """The reference's torch.stack(loss_list).mean(): 3 rows of one task and 1 of another weigh 1/2 each."""
    from cdco_core.config import StageConfig
    from cdco_core.methods import get_method
    from cdco_core.methods.base import StepContext, batch_task_loss
    from cdco_core.training.batches import Batch

    model, tok = ca_model
    _perturb(model.encoder)
    model.eval()  # no dropout: the same logits in every pass
    sent = _batch(tok, "sent", ["a fine film", "dull and slow", "not bad at all"], 0)
    sent.labels = torch.tensor([0, 1, 1])
    score = _batch(tok, "score", ["close enough"], 2)
    score.labels = torch.tensor([3.0])
    mixed = Batch.concat([sent, score], pad_token_id=tok.pad_token_id)
    assert mixed.tasks == ["sent", "sent", "sent", "score"]
    method = get_method("ca_mtl")
    stage = StageConfig(name="t", groups=["all"], losses={"task": 1.0}, steps=1, lr=1e-3)
    ctx = StepContext(cfg=smoke_cfg, stage_index=0, step=0, global_step=0,
                      task_types={"sent": "classification", "score": "regression"})
    with torch.no_grad():
        ours = method.loss_terms(model, mixed, stage, ctx)["task"]
        pooled = model.encode(mixed.input_ids, mixed.attention_mask, mixed.token_type_ids, mixed.task_ids)
        by_hand_ce = torch.nn.functional.cross_entropy(model.head_logits("sent", pooled[:3]), torch.tensor([0, 1, 1]))
        by_hand_mse = (model.head_logits("score", pooled[3:])[:, 0] - 3.0).pow(2).mean()
        row_weighted = batch_task_loss(model, mixed, pooled)
    assert ours.item() == pytest.approx(((by_hand_ce + by_hand_mse) / 2).item(), abs=1e-5)
    assert row_weighted.item() == pytest.approx((0.75 * by_hand_ce + 0.25 * by_hand_mse).item(), abs=1e-5)
    assert abs(ours.item() - row_weighted.item()) > 1e-3  # the two weightings differ on this batch


def test_scoring_each_task_at_its_own_length_gives_the_same_entropies(ca_model):
    """score_rows encodes each task's candidates cut to their own longest row: the same u as one padded pass."""
    from cdco_core.samplers import get_sampler
    from cdco_core.samplers.uncertainty import normalized_entropy
    from cdco_core.training.batches import Batch

    model, tok = ca_model
    _perturb(model.encoder)
    long = "a long review that goes on and on about the plot, the actors and the music " * 2
    sent = _batch(tok, "sent", ["short one", "tiny", "a bit longer than that"], 0)
    batch = Batch.concat([sent, _batch(tok, "score", [long, "two"], 2)])
    assert batch.input_ids.shape[1] > sent.input_ids.shape[1]  # the regression row widens the shared batch
    sampler = get_sampler("uncertainty")
    sampler.setup([5, 5, 5])
    u = sampler.score_rows(model, batch)
    model.eval()
    with torch.no_grad():  # the old way: one pass over the whole padded candidate batch
        pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.task_ids)
        rows, logits = model.batch_logits(batch, pooled)["sent"]
        expected = normalized_entropy(logits).numpy()
    assert rows.tolist() == [0, 1, 2] and np.isnan(u[3:]).all()
    assert np.allclose(u[:3], expected, atol=1e-5)
