"""The fresh head for OOD and KI tasks: a linear probe on frozen features with a fixed, seeded budget.

Every method gets the same head, budget and seed, so differences come from the features alone:

    features    z = (x - mu) / sigma            mu, sigma per dimension from the task's train split
    classification / pair / boolean_qa:  logits = W z + b,  loss = cross-entropy
    regression:                          yhat = w.z + b,    loss = MSE on the standardised target
    multiple choice (option j of item i): s_ij = w.z_ij + b, p_i = softmax_j(s_ij) over the item's options,
                                         loss = cross-entropy of the true option

Optimiser: Adam (lr = ``eval.head_lr``) for ``eval.head_epochs`` passes in mini-batches of ``eval.head_batch_size``.
The weights start at zero (the problem is convex, so no random init is needed) and the only randomness is the
shuffling order, drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_TYPES = ("classification", "pair_classification", "boolean_qa")
HEAD_TYPES = (*CLASS_TYPES, "regression", "multiple_choice")


@dataclass
class HeadBudget:
    """The fixed training budget of every fresh head (from ``cfg.eval``)."""

    epochs: int
    lr: float
    batch_size: int

    @classmethod
    def from_eval(cls, ev) -> HeadBudget:
        return cls(epochs=ev.head_epochs, lr=ev.head_lr, batch_size=ev.head_batch_size)


@dataclass
class FittedHead:
    """A trained linear head plus the standardisation it was trained with."""

    task_type: str
    weight: np.ndarray  # (H, O): O = classes, or 1 for regression / multiple-choice scorers
    bias: np.ndarray  # (O,)
    mu: np.ndarray  # (H,)
    sigma: np.ndarray  # (H,)
    y_mu: float = 0.0
    y_sigma: float = 1.0

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Raw head outputs: (N, O) for features (N, H), (N, C) for multiple choice (N, C, H)."""
        z = (x.astype(np.float64) - self.mu) / self.sigma
        out = z @ self.weight + self.bias  # (..., O)
        return out[..., 0] if self.task_type == "multiple_choice" else out

    def predict(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Class ids (N,), real values (N,) for regression, or chosen option indices (N,)."""
        s = self.scores(x)
        if self.task_type == "regression":
            return s[:, 0] * self.y_sigma + self.y_mu
        if self.task_type == "multiple_choice" and mask is not None:
            s = np.where(mask, s, -np.inf)
        return s.argmax(axis=1)


def _check(task_type: str, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None, num_labels: int) -> None:
    if task_type not in HEAD_TYPES:
        raise ValueError(f"no fresh head for task type {task_type!r}; known: {', '.join(HEAD_TYPES)}")
    want = 3 if task_type == "multiple_choice" else 2
    if x.ndim != want or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"{task_type}: features must be {want}-d with one row per label; got {x.shape}, {len(y)} labels"
        )
    if mask is not None and mask.shape != x.shape[:2]:
        raise ValueError(f"option mask {mask.shape} does not match features {x.shape[:2]}")
    if task_type in CLASS_TYPES and (num_labels < 2 or y.min() < 0 or y.max() >= num_labels):
        raise ValueError(f"labels must lie in [0, {num_labels}) with num_labels >= 2; got {y.min()}..{y.max()}")


def train_head(task_type: str, x: np.ndarray, y: np.ndarray, *, budget: HeadBudget, seed: int,
               num_labels: int = 0, mask: np.ndarray | None = None) -> FittedHead:
    """Fit the fresh linear head on frozen features (formulas in the module docstring).

    Args:
        task_type: classification | pair_classification | boolean_qa | regression | multiple_choice.
        x: (N, H) features, or (N, C, H) for multiple choice (one row per option).
        y: (N,) class ids, real targets, or true option indices.
        budget: epochs, learning rate and batch size.
        seed: seeds the shuffling order.
        num_labels: number of classes (classification types).
        mask: (N, C) True where an option exists (multiple choice with ragged option counts).

    Returns:
        The fitted head (numpy weights).
    """
    import torch

    x, y = np.asarray(x), np.asarray(y)
    _check(task_type, x, y, mask, num_labels)
    flat = x.reshape(-1, x.shape[-1]) if mask is None or x.ndim == 2 else x[mask]  # rows that are real
    mu, sigma = flat.mean(axis=0), flat.std(axis=0)
    sigma = np.where(sigma > 1e-8, sigma, 1.0)  # constant dimensions stay put instead of dividing by 0
    y_mu, y_sigma = (float(y.mean()), float(y.std()) or 1.0) if task_type == "regression" else (0.0, 1.0)

    out_dim = num_labels if task_type in CLASS_TYPES else 1
    xt = torch.as_tensor((x - mu) / sigma, dtype=torch.float32)  # (N, H) or (N, C, H)
    mt = torch.as_tensor(mask if mask is not None else np.ones(x.shape[:2], bool)) if x.ndim == 3 else None
    yt = torch.as_tensor((y - y_mu) / y_sigma, dtype=torch.float32 if task_type == "regression" else torch.long)
    lin = torch.nn.Linear(x.shape[-1], out_dim, dtype=torch.float32)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.Adam(lin.parameters(), lr=budget.lr)
    rng = np.random.default_rng(seed)
    for _ in range(budget.epochs):
        for idx in np.array_split(rng.permutation(len(x)), max(1, -(-len(x) // budget.batch_size))):
            i = torch.as_tensor(idx)
            out = lin(xt[i])  # (b, O) or (b, C, 1)
            if task_type == "regression":
                loss = torch.nn.functional.mse_loss(out[:, 0], yt[i])
            elif task_type == "multiple_choice":
                logits = out[..., 0].masked_fill(~mt[i], float("-inf"))  # (b, C)
                loss = torch.nn.functional.cross_entropy(logits, yt[i])
            else:
                loss = torch.nn.functional.cross_entropy(out, yt[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    w = lin.weight.detach().double().numpy().T  # (H, O)
    return FittedHead(task_type, w, lin.bias.detach().double().numpy(), mu, sigma, y_mu, y_sigma)
