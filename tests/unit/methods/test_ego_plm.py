"""EGO-PLM: generator, pre-defined tasks (MLM / SimCSE), CoCa adversary, and the method on the shared trainer."""

from __future__ import annotations

import math

import pytest
import torch

from cdco_core.errors import ConfigError
from cdco_core.methods import METHODS
from cdco_core.methods.ego_plm.coca import pgd_perturbation, prediction_divergence, project_to_ball
from cdco_core.methods.ego_plm.model import TaskEmbeddingGenerator
from cdco_core.methods.ego_plm.pretext import MlmHead, detect_pretext, mask_tokens, mlm_loss, simcse_loss


# ------------------------------------------------------------------------------------------- config
def load_ego_plm_config(raw: dict):
    """``method_settings.ego_plm`` validated as a profile load does it (the registry's config class)."""
    return METHODS.validate_settings("ego_plm", raw)


def test_config_defaults_and_errors():
    c = load_ego_plm_config({})
    assert (c.pretext, c.adv_steps, c.epsilon) == ("auto", 1, 0.1)
    with pytest.raises(ConfigError, match=r"method_settings\.ego_plm\.epsilonn: unknown key; allowed.*epsilon"):
        load_ego_plm_config({"epsilonn": 0.1})
    with pytest.raises(ConfigError, match=r"method_settings\.ego_plm\.adv_steps"):
        load_ego_plm_config({"adv_steps": 0})
    with pytest.raises(ConfigError, match="step_size 0.5 is more than twice epsilon 0.1"):
        load_ego_plm_config({"step_size": 0.5})


# ------------------------------------------------------------------------------------------ pretext
def test_detect_pretext_by_backbone(smoke_cfg, tmp_path):
    assert detect_pretext(smoke_cfg.model) == "mlm"  # tiny-random: BERT-style, no folder
    minilm = smoke_cfg.model.model_copy(update={"source": "minilm"})
    assert detect_pretext(minilm) == "contrastive"  # ships modules.json (sentence-transformers)
    (tmp_path / "config.json").write_text("{}")
    plain = smoke_cfg.model.model_copy(update={"source": str(tmp_path)})
    assert detect_pretext(plain) == "mlm"


def test_mask_tokens_skips_special_and_padding():
    torch.manual_seed(0)
    ids = torch.tensor([[101, 5, 6, 7, 8, 102, 0, 0]] * 64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]] * 64)
    masked, labels = mask_tokens(ids, mask, special_ids=[0, 101, 102], mask_id=103, vocab_size=200, probability=0.5)
    picked = labels != -100
    assert not picked[:, [0, 5, 6, 7]].any()  # [CLS], [SEP], padding never predicted
    assert torch.equal(labels[picked], ids[picked])
    assert torch.equal(masked[~picked], ids[~picked])  # unchosen tokens untouched
    share_mask_token = (masked[picked] == 103).float().mean().item()
    assert 0.65 < share_mask_token < 0.95  # 80% of chosen -> [MASK]
    # a probability too small to pick anything still masks one token, so the loss is defined
    _, labels = mask_tokens(ids[:1], mask[:1], [0, 101, 102], 103, 200, probability=1e-9)
    assert (labels != -100).sum() == 1


def test_mlm_head_is_tied_and_loads_checkpoint_weights(tmp_path):
    from safetensors.torch import save_file

    head = MlmHead(hidden=4, vocab_size=6)
    emb = torch.randn(6, 4)
    hidden = torch.randn(3, 4)
    logits = head(hidden, emb)
    assert logits.shape == (3, 6)
    emb2 = emb.clone()
    emb2[2] += 1.0
    changed = (head(hidden, emb2) - logits).abs().sum(0)
    assert changed[2] > 0 and changed[[0, 1, 3, 4, 5]].abs().max() == 0  # only the edited word's logit moves
    assert not head.load_from_checkpoint(None)
    assert not head.load_from_checkpoint(tmp_path)  # no weights file
    state = {
        "cls.predictions.transform.dense.weight": torch.eye(4),
        "cls.predictions.transform.dense.bias": torch.zeros(4),
        "cls.predictions.transform.LayerNorm.weight": torch.full((4,), 2.0),
        "cls.predictions.transform.LayerNorm.bias": torch.zeros(4),
        "cls.predictions.bias": torch.arange(6.0),
    }
    save_file(state, str(tmp_path / "model.safetensors"))
    assert head.load_from_checkpoint(tmp_path)
    assert torch.equal(head.bias.data, torch.arange(6.0)) and head.transform.norm.weight[0] == 2.0
    with pytest.raises(ValueError, match="no position is masked"):
        mlm_loss(head, hidden.unsqueeze(0), torch.full((1, 3), -100), emb)


def test_simcse_loss_hand_value():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cos = I, tau = 1: each row -log(e / (e + 1)) = log(1 + e^-1)
    assert simcse_loss(z, z, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        simcse_loss(z[:1], z[:1], 0.05)
    with pytest.raises(ValueError, match="both be"):
        simcse_loss(z, z[:, :1], 0.05)


# --------------------------------------------------------------------------------------------- CoCa
def test_divergence_zero_for_identical_and_hand_values():
    a = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    assert prediction_divergence(a, a.clone(), "classification").item() == 0.0
    # p = (.5, .5), q = (.75, .25): ½ Σ (p - q)(log p - log q) = ⅛ (log 1.5 + log 2)
    p, q = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.125 * (math.log(1.5) + math.log(2.0))
    assert prediction_divergence(p, q, "pair_classification").item() == pytest.approx(expected, abs=1e-6)
    assert prediction_divergence(q, p, "pair_classification").item() == pytest.approx(expected, abs=1e-6)
    # excluded multiple-choice options (-inf) stay finite
    mc = torch.tensor([[1.0, 0.0, -math.inf]])
    assert prediction_divergence(mc, mc, "multiple_choice").item() == 0.0
    # an absent option's logit does not count
    opts = torch.tensor([[True, True, False]])
    other = torch.tensor([[1.0, 0.0, 9.0]])
    assert prediction_divergence(mc, other, "multiple_choice", choice_mask=opts).item() == 0.0
    assert prediction_divergence(mc, other, "multiple_choice").item() > 0.0
    assert prediction_divergence(torch.tensor([[1.0]]), torch.tensor([[3.0]]), "regression").item() == 4.0
    with pytest.raises(ValueError, match="shapes differ"):
        prediction_divergence(a, a[:, :1], "classification")


def test_projection_and_pgd_stay_in_ball_and_find_the_maximiser():
    mask = torch.tensor([[1, 1, 0]])
    delta = torch.tensor([[[3.0, 4.0], [0.03, 0.04], [1.0, 1.0]]])
    out = project_to_ball(delta, 0.5, mask)
    assert torch.allclose(out[0, 0], torch.tensor([0.3, 0.4]))  # norm 5 -> 0.5, same direction
    assert torch.allclose(out[0, 1], delta[0, 1])  # inside: unchanged
    assert out[0, 2].abs().sum() == 0  # padding never perturbed
    # linear objective Σ w·δ from δ = 0: the maximiser in the per-token ball is ε w_i / ‖w_i‖
    torch.manual_seed(0)
    w = torch.randn(2, 3, 4)
    m = torch.ones(2, 3)
    star = pgd_perturbation(lambda d: (w * d).sum(), w.shape, m, epsilon=0.2, step_size=0.4, steps=2, init_fraction=0.0)
    assert torch.allclose(star, 0.2 * torch.nn.functional.normalize(w, dim=-1), atol=1e-5)
    star = pgd_perturbation(lambda d: (d**3).sum(), w.shape, m, epsilon=0.2, step_size=0.05, steps=4)
    assert star.norm(dim=-1).max() <= 0.2 + 1e-6
    with pytest.raises(ValueError, match="steps >= 1"):
        pgd_perturbation(lambda d: d.sum(), w.shape, m, epsilon=0.2, step_size=0.1, steps=0)


# ---------------------------------------------------------------------------------------- generator
def test_generator_identity_at_start_then_task_specific():
    torch.manual_seed(0)
    gen = TaskEmbeddingGenerator(n_tasks=2, hidden=8, reduction=4)
    h = torch.randn(3, 8)
    ids = torch.tensor([0, 1, 1])
    assert torch.equal(gen(h, ids), h)  # U_t = 0: identity
    with torch.no_grad():
        gen.up.normal_()
    e = gen(h, ids)
    assert e.shape == (3, 8)
    assert not torch.allclose(gen(h[:1], torch.tensor([0])), gen(h[:1], torch.tensor([1])))  # tasks differ
    assert torch.equal(gen(h, None), h)  # agnostic view for OOD/KI
    mean = gen(h, None, "task_mean")
    zeros, ones = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
    assert torch.allclose(mean, 0.5 * (gen(h, zeros) + gen(h, ones)))
    with pytest.raises(ValueError, match="task id 2 out of range"):
        gen(h, torch.tensor([0, 2, 1]))


# ------------------------------------------------------------------------------ the method, on a tiny BERT
TEXTS = ["a gripping, funny film", "dull and far too long", "win a free prize now", "see you at lunch"]


def _tasks():
    """Stand-ins for TaskData: build_model reads only name, spec.type, num_labels and class_weights()."""
    from types import SimpleNamespace as NS

    return [NS(name="sent", spec=NS(type="classification"), num_labels=2, class_weights=lambda: None),
            NS(name="quiz", spec=NS(type="multiple_choice"), num_labels=0, class_weights=lambda: None)]


def _build(cfg, overrides: dict | None = None):
    from cdco_core.methods import get_method

    cfg = cfg.model_copy(update={"method_settings": {**cfg.method_settings, "ego_plm": overrides or {}}})
    method = get_method("ego_plm", cfg)
    cfg = method.configure(cfg)
    torch.manual_seed(0)
    model, tok = method.build_model(cfg, _tasks())
    stage = method.stages(cfg)[0]
    model.set_trainable(stage.groups, stage.train_heads)
    return method, cfg, model, tok, stage


def _batch(tok, task="sent"):
    from cdco_core.training.batches import Example, collate

    if task == "sent":
        rows = [Example("sent", 0, "classification", f"s:{i}", t, label=i % 2) for i, t in enumerate(TEXTS)]
    else:
        rows = [Example("quiz", 1, "multiple_choice", f"q:{i}", "capital of France?", choices=c, label=0)
                for i, c in enumerate([["Paris", "Rome", "Oslo"], ["Paris", "Lima"]])]
    return collate(rows, tok, 16)


def _terms(method, cfg, model, batch, stage):
    from cdco_core.methods.base import StepContext

    ctx = StepContext(cfg=cfg, stage_index=0, step=0, global_step=0, task_types={"sent": "classification"})
    return method.loss_terms(model, batch, stage, ctx)


def _perturb_generator(model, scale: float = 0.5) -> None:
    with torch.no_grad():
        model.generator.up.normal_(0.0, scale)


def test_method_schedule_and_cache_key_follow_config(smoke_cfg):
    from cdco_core.methods import get_method
    from cdco_core.profile import load_profile

    cfg = load_profile("smoke", ["method_settings.ego_plm.epsilon=0.2"])
    method = get_method("ego_plm", cfg)
    assert method.settings.epsilon == 0.2  # enters the training step's cache key (next test)
    cfg = method.configure(cfg)
    (stage,) = method.stages(cfg)
    assert stage.losses == {"task": 1.0, "pretext": 0.1, "consistency": 1.0}
    assert stage.steps == sum(s.steps for s in smoke_cfg.train.stages) and stage.groups == ["all"]
    with pytest.raises(ConfigError, match=r"method_settings\.ego_plm\.K: unknown key"):
        load_profile("smoke", ["method_settings.ego_plm.K=2"])
    bad = smoke_cfg.model_copy(update={"method_settings": {"ego_plm": {"K": 2}}})
    with pytest.raises(ConfigError, match=r"method_settings\.ego_plm\.K: unknown key"):
        get_method("ego_plm", bad)


def _train_keys(cfg) -> list[str]:
    """The cache keys of ego_plm's training nodes for seed 0 (inputs left out: only the config varies here)."""
    from cdco_core.plan import build_plan
    from cdco_core.steps import get_step

    plan = build_plan(cfg, ["ego_plm"], [0])
    return [get_step("train").key(plan.config_for(n), n, {}) for n in plan.of_step("train")]


def test_settings_enter_the_training_cache_key(smoke_cfg):
    from cdco_core.profile import load_profile

    base = _train_keys(smoke_cfg)
    assert base and _train_keys(load_profile("smoke")) == base
    assert _train_keys(load_profile("smoke", ["method_settings.ego_plm.epsilon=0.2"])) != base


def test_consistency_zero_for_identical_views_then_positive(smoke_cfg):
    method, cfg, model, tok, stage = _build(smoke_cfg)
    model.train()  # dropout on: the views share one encoder pass, so it cannot make them differ
    batch = _batch(tok)
    terms = _terms(method, cfg, model, batch, stage)
    assert set(terms) == {"task", "pretext", "consistency"}
    assert terms["consistency"].item() == 0.0  # generator starts as the identity: e_t = h
    _perturb_generator(model)
    assert _terms(method, cfg, model, batch, stage)["consistency"].item() > 1e-4
    mc = _terms(method, cfg, model, _batch(tok, "quiz"), stage)  # options view (R, C) with a padded option
    assert mc["consistency"].item() > 0 and torch.isfinite(mc["task"])


def test_perturbation_stays_in_ball_and_raises_disagreement(smoke_cfg):
    from cdco_core.methods.ego_plm.loss import view_disagreement

    method, cfg, model, tok, stage = _build(smoke_cfg, {"epsilon": 0.3, "step_size": 0.3, "adv_steps": 3})
    _perturb_generator(model)
    model.eval()  # deterministic forward, so D(x + δ) is a fixed function of δ
    batch = _batch(tok)
    x = model.word_embeddings()(batch.input_ids).detach()

    def disagreement(d):
        h = model.shared_encode(None, batch.attention_mask, batch.token_type_ids, inputs_embeds=x + d)
        return view_disagreement(model, batch, h, model.generator(h, batch.task_ids))

    eps = 0.3 * model.embedding_scale
    torch.manual_seed(1)
    star = pgd_perturbation(disagreement, x.shape, batch.attention_mask, eps, eps, 3)
    norms = star.norm(dim=-1)  # (B, T)
    assert norms.max() <= eps * (1 + 1e-5)
    pad = batch.attention_mask == 0
    assert pad.any() and norms[pad].max() == 0  # the texts differ in length: padding exists, never perturbed
    assert disagreement(star) > disagreement(torch.zeros_like(x))


def test_gradients_reach_generator_adapters_and_mlm_head(smoke_cfg):
    method, cfg, model, tok, stage = _build(smoke_cfg)
    assert model.pretext == "mlm" and model.mlm_head is not None
    assert model.mlm_head_from_checkpoint is False  # the tiny random BERT has no MLM head: fresh init
    _perturb_generator(model)
    terms = _terms(method, cfg, model, _batch(tok), stage)
    assert 8.0 < terms["pretext"].item() < 12.0  # MLM over MiniLM's 30,522 words, untrained: ~log V = 10.3
    sum(stage.losses[k] * v for k, v in terms.items()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads["generator.up"].abs().sum() > 0 and grads["generator.down"].abs().sum() > 0
    assert grads["mlm_head.transform.dense.weight"].abs().sum() > 0
    lora_b = [g for n, g in grads.items() if "lora_B" in n]
    assert lora_b and all(g.abs().sum() > 0 for g in lora_b)  # every shared adapter layer learns
    model.zero_grad()
    _terms(method, cfg, model, _batch(tok), stage)["consistency"].backward()  # CoCa alone reaches both too
    assert model.generator.up.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_encode_views_and_checkpoint_roundtrip(smoke_cfg):
    method, cfg, model, tok, stage = _build(smoke_cfg)
    _perturb_generator(model)
    model.eval()
    b = _batch(tok)
    args = (b.input_ids, b.attention_mask, b.token_type_ids)
    shared = model.shared_encode(*args)
    assert torch.equal(model.encode(*args), shared)  # task_ids=None: the agnostic view (OOD/KI)
    assert not torch.allclose(model.encode(*args, task_ids=b.task_ids), shared)
    model.untasked_view = "task_mean"
    assert not torch.allclose(model.encode(*args), shared)
    state = model.trainable_state_dict()
    assert {"generator.up", "mlm_head.bias"} <= set(state)
    assert not any(k.endswith("word_embeddings.weight") for k in state)  # tied, frozen: not saved twice
    _, _, fresh, _, _ = _build(smoke_cfg)
    fresh.load_trainable_state_dict(state)
    fresh.eval()
    assert torch.allclose(fresh.encode(*args, task_ids=b.task_ids), model.encode(*args, task_ids=b.task_ids))


def test_contrastive_pretext_on_real_minilm(smoke_cfg):
    """all-MiniLM-L6-v2 ships sentence-transformers files -> SimCSE; its dropout gives two distinct views."""
    cfg = smoke_cfg.model_copy(update={"model": smoke_cfg.model.model_copy(update={"source": "minilm"})})
    method, cfg, model, tok, stage = _build(cfg, {"consistency_weight": 0.0})  # pretext path only: faster
    assert model.pretext == "contrastive" and model.mlm_head is None
    assert 0.9 < model.embedding_scale < 1.3  # ε is relative to this (MiniLM: ~1.07)
    model.train()
    terms = _terms(method, cfg, model, _batch(tok), stage)
    assert set(terms) == {"task", "pretext"}
    # a pre-trained sentence encoder already ranks each sentence's other view first: loss well below log 4
    assert 0.0 < terms["pretext"].item() < math.log(4)
    terms["pretext"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    # multiple choice: only the 5 real (question, option) sequences take part, the padded option does not
    mc = _terms(method, cfg, model, _batch(tok, "quiz"), stage)
    assert torch.isfinite(mc["pretext"]) and mc["pretext"].item() > 0


def test_shared_trainer_steps_lower_the_loss(smoke_cfg, tmp_path):
    from cdco_core.training.trainer import StageInputs, run_stage

    method, cfg, model, tok, stage = _build(smoke_cfg)
    stage = stage.model_copy(update={"steps": 12, "lr": 5e-2})
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"checkpoint_every": 100})})
    batch = _batch(tok)

    class SameBatch:  # the trainer's batch source, reduced to one fixed batch so the loss curve is clean
        def next_batch(self, model):
            return batch

    torch.manual_seed(0)
    inp = StageInputs(cfg=cfg, method=method, stage=stage, stage_index=0, global_offset=0,
                      task_types={"sent": "classification"}, work_dir=tmp_path / "work")
    hist = run_stage(model, SameBatch(), None, inp)["history"]
    assert len(hist) == 12 and {"task", "pretext", "consistency"} <= set(hist[0])
    assert sum(r["loss"] for r in hist[-3:]) / 3 < 0.9 * hist[0]["loss"]
    assert sum(r["task"] for r in hist[-3:]) / 3 < 0.7 * hist[0]["task"]


def test_generator_moves_with_module_to():
    """``nn.Module.to`` walks every submodule's ``_apply``: the generator must not shadow it (it once did,
    and the trainer's ``model.to(device)`` then failed for EGO-PLM only)."""
    gen = TaskEmbeddingGenerator(n_tasks=2, hidden=8)
    moved = gen.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in moved.parameters())


def test_fast_scheme_reuses_the_adversary_pass_as_simcse_view(smoke_cfg):
    """"fast": 2 encoder passes (adversary + outer) instead of 3; same task and consistency terms as "exact" for
    the same RNG (no native bf16 here, or both would differ by rounding), SimCSE's second view without gradient."""
    from cdco_core.odms.embed import resolve_dtype

    out = {}
    for scheme in ("exact", "fast"):
        method, cfg, model, tok, stage = _build(smoke_cfg, {"pretext": "contrastive", "step_scheme": scheme})
        _perturb_generator(model)
        model.train()
        calls = []
        encode = model.shared_encode

        def counted(*a, _encode=encode, _calls=calls, **k):
            _calls.append(torch.is_grad_enabled())
            return _encode(*a, **k)

        model.shared_encode = counted
        torch.manual_seed(3)
        terms = _terms(method, cfg, model, _batch(tok), stage)
        out[scheme] = ({k: v.item() for k, v in terms.items()}, len(calls))
        if scheme == "fast":
            model.zero_grad()
            terms["pretext"].backward()
            assert any(p.grad is not None and p.grad.abs().sum() > 0
                       for n, p in model.named_parameters() if "lora_B" in n)  # through the first view
    (exact, n_exact), (fast, n_fast) = out["exact"], out["fast"]
    assert (n_exact, n_fast) == (3, 2)  # K = 1: adversary + outer (+ SimCSE's own pass in "exact")
    if resolve_dtype("auto") == torch.float32:
        assert fast["task"] == exact["task"] and fast["consistency"] == exact["consistency"]
    assert fast["pretext"] != exact["pretext"] and 0 < fast["pretext"] < math.log(4) + 1


def test_step_scheme_is_validated():
    with pytest.raises(ConfigError, match="step_scheme"):
        load_ego_plm_config({"step_scheme": "quick"})
