"""One EGO-PLM step: CoCa's inner adversary, then task + pre-defined + consistency terms under it.

With x the input word embeddings (N, T, H), h(·) the shared encoder's pooled embedding, e_t = G_t(h) the
generator's task-specific embedding and f_t task t's head::

    δ*          = PGD_K( max_{‖δ_i‖ ≤ ε} D(x + δ) )                          (coca.pgd_perturbation)
    task        = CE / MSE of f_t(e_t(x + δ*))                                (the trainer's batch_task_loss)
    consistency = D(x + δ*) = SymKL(f_t(e_t(x + δ*)), f_t(h(x + δ*)))         (coca.prediction_divergence)
    pretext     = MLM on mask(x) + δ*   |   SimCSE(h(x + δ*), h'(x + δ*))    (two dropout draws)

The trainer weights them: L = task + w_pre · pretext + w_c · consistency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from cdco_core.methods.ego_plm.coca import pgd_perturbation, prediction_divergence
from cdco_core.methods.ego_plm.pretext import mask_tokens, mlm_loss, simcse_loss

if TYPE_CHECKING:
    from cdco_core.methods.ego_plm.config import EgoPlmConfig
    from cdco_core.methods.ego_plm.model import EgoPlmModel
    from cdco_core.training.batches import Batch


def view_disagreement(model: EgoPlmModel, batch: Batch, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Row-weighted mean over the batch's tasks of D between the head on e_t (task view) and on h.

    Args:
        h, e: (N, H) pooled shared and generated embeddings of the batch's N sequences.
    """
    total = h.new_zeros(())
    n_opt = batch.choice_mask.shape[1] if batch.choice_mask is not None else 1
    for task in dict.fromkeys(batch.tasks):
        rows = torch.tensor([i for i, t in enumerate(batch.tasks) if t == task], device=h.device)
        seq = (rows[:, None] * n_opt + torch.arange(n_opt, device=h.device)[None]).reshape(-1)  # (R*C,)
        la = model.clean_logits(task, e[seq])  # (R*C, out)
        lb = model.clean_logits(task, h[seq])
        mask = None
        if batch.choice_mask is not None:  # one score per option -> (R, C) over the options
            la, lb, mask = la.view(len(rows), n_opt), lb.view(len(rows), n_opt), batch.choice_mask[rows]
        d = prediction_divergence(la, lb, model.head_specs[task].type, choice_mask=mask)
        total = total + d * (len(rows) / len(batch))
    return total


def ego_plm_terms(model: EgoPlmModel, batch: Batch, settings: EgoPlmConfig, pretext: str,
                  weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """The loss terms of one step (only those ``weights`` gives a positive weight, plus ``task``).

    Args:
        pretext: "mlm" or "contrastive" (already resolved from "auto").
        weights: the stage's loss weights; a zero-weight term is not computed (CoCa's adversary is skipped
            when consistency has no weight).
    """
    from cdco_core.methods.base import batch_task_loss

    mask, tt = batch.attention_mask, batch.token_type_ids
    word = model.word_embeddings()
    x = word(batch.input_ids).detach()  # (N, T, H); the embedding table is frozen
    seq_ids = model.sequence_task_ids(batch.task_ids, x.shape[0])

    def views(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = model.shared_encode(None, mask, tt, inputs_embeds=x + delta)  # (N, H)
        return h, model.generator(h, seq_ids)

    delta = torch.zeros_like(x)
    if weights.get("consistency", 0.0) > 0:
        scale = model.embedding_scale
        delta = pgd_perturbation(lambda d: view_disagreement(model, batch, *views(d)), x.shape, mask,
                                 epsilon=settings.epsilon * scale, step_size=settings.step_size * scale,
                                 steps=settings.adv_steps, init_fraction=settings.init_fraction, dtype=x.dtype)
    h, e = views(delta)
    terms = {"task": batch_task_loss(model, batch, e)}
    if weights.get("consistency", 0.0) > 0:
        terms["consistency"] = view_disagreement(model, batch, h, e)
    if weights.get("pretext", 0.0) > 0:
        if pretext == "mlm":
            masked, labels = mask_tokens(batch.input_ids, mask, model.special_ids, model.mask_token_id,
                                         word.weight.shape[0], settings.mlm_probability)
            states = model.token_states(word(masked).detach() + delta, mask, tt)  # (N, T, H)
            terms["pretext"] = mlm_loss(model.mlm_head, states, labels, word.weight)
        else:
            second = model.shared_encode(None, mask, tt, inputs_embeds=x + delta)  # another dropout draw
            real = slice(None) if batch.choice_mask is None else batch.choice_mask.reshape(-1)  # padded options
            terms["pretext"] = simcse_loss(h[real], second[real], settings.contrastive_temperature)
    return terms
