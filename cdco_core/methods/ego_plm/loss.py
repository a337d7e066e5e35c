"""One EGO-PLM step: CoCa's inner adversary, then task + pre-defined + consistency terms under it.

With x the input word embeddings (N, T, H), h(·) the shared encoder's pooled embedding, e_t = G_t(h) the
generator's task-specific embedding and f_t task t's head::

    δ*          = PGD_K( max_{‖δ_i‖ ≤ ε} D(x + δ) )                          (coca.pgd_perturbation)
    task        = CE / MSE of f_t(e_t(x + δ*))                                (the trainer's batch_task_loss)
    consistency = D(x + δ*) = SymKL(f_t(e_t(x + δ*)), f_t(h(x + δ*)))         (coca.prediction_divergence)
    pretext     = MLM on mask(x) + δ*   |   SimCSE(h(x + δ*), h'(x + δ*))    (two dropout draws)

The trainer weights them: L = task + w_pre · pretext + w_c · consistency. ``step_scheme: fast`` (default) takes SimCSE's
second view from the adversary's last pass (another dropout draw at δ^{K-1}, as a stop-gradient target) instead of
a third pass, and runs the adversary under bf16 autocast where the hardware has native bf16; ``exact`` is the
float32 step with SimCSE's own differentiated second pass at x + δ* (docs/methods.md, "EGO-PLM", cost).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import torch

from cdco_core.methods.ego_plm.coca import pgd_perturbation, prediction_divergence
from cdco_core.methods.ego_plm.pretext import mask_tokens, mlm_loss, simcse_loss

if TYPE_CHECKING:
    from cdco_core.methods.ego_plm.config import EgoPlmConfig
    from cdco_core.methods.ego_plm.model import EgoPlmModel
    from cdco_core.training.batches import Batch


def _bf16_autocast(device_type: str, wanted: bool) -> Callable[[], AbstractContextManager[Any]]:
    """A context factory: bfloat16 autocast when ``wanted`` and the device runs bf16 natively, else a no-op."""
    from cdco_core.odms.embed import resolve_dtype

    on = wanted and resolve_dtype("auto", device_type) == torch.bfloat16
    return lambda: torch.autocast(device_type, dtype=torch.bfloat16, enabled=on)


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

    fast = settings.step_scheme == "fast"
    low = _bf16_autocast(x.device.type, fast)  # no-op context unless "fast" on native-bf16 hardware
    delta = torch.zeros_like(x)
    seen: dict[str, torch.Tensor] = {}
    if weights.get("consistency", 0.0) > 0:
        scale = model.embedding_scale

        def objective(d: torch.Tensor) -> torch.Tensor:
            h_adv, e_adv = views(d)
            seen["h"] = h_adv.detach()  # "fast": the last ascent pass's h is SimCSE's second view (no 3rd pass)
            return view_disagreement(model, batch, h_adv, e_adv)

        with low():  # δ stays float32; only the encoder's matmuls inside the ascent run in bf16
            delta = pgd_perturbation(objective, x.shape, mask,
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
            if fast and "h" in seen:  # another dropout draw, at the ascent's last point: a stop-gradient target
                second = seen["h"].float()
            elif fast:  # no adversary ran (consistency weight 0): one forward pass without a graph
                with torch.no_grad(), low():
                    second = model.shared_encode(None, mask, tt, inputs_embeds=x + delta).float()
            else:
                second = model.shared_encode(None, mask, tt, inputs_embeds=x + delta)  # another dropout draw
            real = slice(None) if batch.choice_mask is None else batch.choice_mask.reshape(-1)  # padded options
            terms["pretext"] = simcse_loss(h[real], second[real], settings.contrastive_temperature)
    return terms
