"""EGO-PLM: generator, pre-defined tasks (MLM / SimCSE), CoCa adversary, and the method on the shared trainer."""

from __future__ import annotations

import math

import pytest
import torch

from cdco_core.errors import ConfigError
from cdco_core.methods.ego_plm.coca import pgd_perturbation, prediction_divergence, project_to_ball
from cdco_core.methods.ego_plm.config import load_ego_plm_config
from cdco_core.methods.ego_plm.model import TaskEmbeddingGenerator
from cdco_core.methods.ego_plm.pretext import MlmHead, detect_pretext, mask_tokens, mlm_loss, simcse_loss


# ------------------------------------------------------------------------------------------- config
def test_config_defaults_and_errors():
    c = load_ego_plm_config({})
    assert (c.pretext, c.adv_steps, c.epsilon) == ("auto", 1, 0.1)
    with pytest.raises(ConfigError, match=r"methods\.ego_plm\.epsilonn: unknown key; allowed: .*epsilon"):
        load_ego_plm_config({"epsilonn": 0.1})
    with pytest.raises(ConfigError, match=r"methods\.ego_plm\.adv_steps"):
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
