"""Task-conditioned building blocks of CA-MTL (Pilault, Elhattami & Pal, ICLR 2021).

Every module reads the same conditioning vector e_t (the transformed task embedding, see :class:`TaskEmbedding`)
and is the identity (or adds zero) at initialisation: all generators are zero-initialised, so a freshly built
CA-MTL encoder computes exactly what the pretrained encoder computes and training starts from it.

The modules hold only the NEW parameters. The pretrained sub-modules they condition (a BertLayer's
query/key/value, dense layers, LayerNorms) are passed in at call time, so the base model's weights live once,
under their usual names, and the Hugging Face code is never edited.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def check_task_ids(task_ids: torch.Tensor, num_tasks: int, batch_size: int) -> None:
    """Raise ValueError unless ``task_ids`` is a (B,) integer tensor with values in [0, num_tasks)."""
    if task_ids.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
        raise ValueError(f"task_ids must be an integer tensor, got dtype {task_ids.dtype}")
    if task_ids.shape != (batch_size,):
        raise ValueError(f"task_ids must have shape ({batch_size},) (one id per row), got {tuple(task_ids.shape)}")
    if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= num_tasks):
        bad = task_ids[(task_ids < 0) | (task_ids >= num_tasks)].unique().tolist()
        raise ValueError(
            f"task id(s) {bad} out of range: this CA-MTL model was built for {num_tasks} task(s), "
            f"ids 0..{num_tasks - 1}; pass task_ids=None for a task the model was not trained on"
        )


class TaskEmbedding(nn.Module):
    """Task embedding with a learned transformation shared by every conditional module.

    e_t = W_e z_t + b_e, with z_t a learned row of a (num_tasks, D) table. For rows without a task
    (``task_ids=None``: OOD/KI evaluation) we use the mean task: e = W_e mean_t(z_t) + b_e, which, W_e being
    affine, is also the mean of the tasks' conditioning vectors.
    """

    def __init__(self, num_tasks: int, dim: int) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"CA-MTL needs at least one task, got num_tasks={num_tasks}")
        self.num_tasks = num_tasks
        # Unit-scale rows: the generators' first gradient is g·z^T, so tiny z (BERT's 0.02 init) would
        # leave them nearly still for many steps.
        self.table = nn.Parameter(torch.randn(num_tasks, dim))
        self.transform = nn.Linear(dim, dim)

    def forward(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """Conditioning vectors (B, D) for ``task_ids`` (B,), or the mean task for every row when None."""
        if task_ids is None:
            z = self.table.mean(dim=0, keepdim=True).expand(batch_size, -1)  # (B, D)
        else:
            check_task_ids(task_ids, self.num_tasks, batch_size)
            z = self.table[task_ids.to(self.table.device).long()]  # (B, D)
        return self.transform(z)


class FiLM(nn.Module):
    """Feature-wise linear modulation: out = (1 + γ(e)) ⊙ x + β(e), with [γ; β] = W e + b.

    W and b start at zero, so the module is the identity until training moves them.
    """

    def __init__(self, cond_dim: int, features: int) -> None:
        super().__init__()
        self.features = features
        self.generator = nn.Linear(cond_dim, 2 * features)
        nn.init.zeros_(self.generator.weight)
        nn.init.zeros_(self.generator.bias)

    def coefficients(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(γ, β), each (B, F), from conditioning vectors (B, D)."""
        gamma, beta = self.generator(cond).chunk(2, dim=-1)
        return gamma, beta

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Modulate x (B, ..., F) row by row with cond (B, D)."""
        gamma, beta = self.coefficients(cond)  # (B, F)
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.features,)
        return (1 + gamma.view(shape)) * x + beta.view(shape)


class ConditionalLayerNorm(nn.Module):
    """Layer norm whose (pretrained) weight is modulated by the task.

    y = (x - μ) / sqrt(σ² + ε) ⊙ w_t + b,  w_t = (1 + γ(e_t)) ⊙ w + β(e_t),
    where w, b, ε belong to the wrapped ``nn.LayerNorm`` (passed at call time). At init w_t = w.
    """

    def __init__(self, cond_dim: int, features: int) -> None:
        super().__init__()
        self.film = FiLM(cond_dim, features)

    def forward(self, norm: nn.LayerNorm, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Normalise x (B, T, H) with ``norm``'s statistics and bias and a per-row modulated weight."""
        gamma, beta = self.film.coefficients(cond)  # (B, H)
        weight = (1 + gamma) * norm.weight + beta  # (B, H)
        y = F.layer_norm(x, norm.normalized_shape, None, None, norm.eps)  # (B, T, H)
        return y * weight.unsqueeze(1) + norm.bias


class BlockDiagonalAttentionBias(nn.Module):
    """Task-conditioned block-diagonal bias for attention scores, for any sequence length.

    Positions are cut into consecutive blocks of ``block_size`` = s tokens; block k has its own learned
    s×s matrix M_k (zero at init), whose columns the task modulates:

        S_t[i, j] = ((1 + γ(e_t)) ⊙ M_{⌊i/s⌋} + β(e_t))[i mod s, j mod s]   if ⌊i/s⌋ = ⌊j/s⌋, else 0,

    with γ, β ∈ R^s. The reference ties the number of blocks to hidden_size / max_seq_length (and so needs
    that division to be exact); here the blocks are fixed-size and a length T uses the first ⌈T/s⌉ of them,
    the last one cut to T - s·⌊T/s⌋ rows and columns. ``max_positions`` (the encoder's position table)
    bounds T, so every length the encoder accepts has its blocks.
    """

    def __init__(self, cond_dim: int, block_size: int, max_positions: int) -> None:
        super().__init__()
        self.block_size = block_size
        self.num_blocks = math.ceil(max_positions / block_size)
        self.blocks = nn.Parameter(torch.zeros(self.num_blocks, block_size, block_size))
        self.film = FiLM(cond_dim, block_size)

    def forward(self, cond: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Bias (B, T, T) for conditioning vectors (B, D) and length T."""
        s = self.block_size
        if seq_len > self.num_blocks * s:
            raise ValueError(
                f"sequence length {seq_len} exceeds the {self.num_blocks * s} positions this attention bias covers"
            )
        used = math.ceil(seq_len / s)
        gamma, beta = self.film.coefficients(cond)  # (B, s)
        blocks = (1 + gamma[:, None, None, :]) * self.blocks[None, :used] + beta[:, None, None, :]  # (B, n, s, s)
        pos = torch.arange(seq_len, device=cond.device)
        blk, off = pos // s, pos % s  # (T,)
        # entry [b, i, j] = blocks[b, blk[i], off[i], off[j]]; meaningful only where blk[i] == blk[j]
        dense = blocks[:, blk[:, None], off[:, None], off[None, :]]  # (B, T, T)
        same_block = blk[:, None] == blk[None, :]  # (T, T)
        return torch.where(same_block, dense, torch.zeros((), dtype=dense.dtype, device=dense.device))


class ConditionalAdapter(nn.Module):
    """Conditional bottleneck adapter (the paper's "hypernetwork adapter"), added to a sub-layer's output.

    A(h, e_t) = U · GELU(D · FiLM(h; e'_t)) + c,  e'_t = W_a e_t + b_a  (the adapter's own view of the task).
    U and c start at zero, so A = 0 at init and the layer computes what it computed before.
    """

    def __init__(self, hidden: int, cond_dim: int, bottleneck: int) -> None:
        super().__init__()
        self.cond_transform = nn.Linear(cond_dim, cond_dim)
        self.film = FiLM(cond_dim, hidden)
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Adapter output (B, T, H) for h (B, T, H) and cond (B, D)."""
        h = self.film(h, self.cond_transform(cond))
        return self.up(F.gelu(self.down(h)))


class ConditionalLayer(nn.Module):
    """The new parameters of one encoder layer, and the layer's forward pass with them.

    For a BertLayer with input x, padding mask P and conditional bias S_t (all optional parts may be off):
        a = CLN_1(x + Dropout(O · Attn(x; P + S_t)))               (self-attention sub-layer)
        f = Dropout(W_2 · GELU(W_1 a));   out = CLN_2(a + f + A(f, e_t))   (feed-forward sub-layer + adapter)
    CLN is the pretrained LayerNorm, task-modulated when ``layer_norm`` is on.
    """

    def __init__(
        self,
        hidden: int,
        cond_dim: int,
        *,
        attention_bias: BlockDiagonalAttentionBias | None,
        layer_norm: bool,
        adapter_size: int | None,
    ) -> None:
        super().__init__()
        self.attention_bias = attention_bias
        self.attention_norm = ConditionalLayerNorm(cond_dim, hidden) if layer_norm else None
        self.output_norm = ConditionalLayerNorm(cond_dim, hidden) if layer_norm else None
        self.adapter = ConditionalAdapter(hidden, cond_dim, adapter_size) if adapter_size else None

    @staticmethod
    def _norm(
        cln: ConditionalLayerNorm | None, norm: nn.LayerNorm, x: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        return norm(x) if cln is None else cln(norm, x, cond)

    def forward(self, layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Run ``layer`` (a transformers BertLayer) on hidden (B, T, H) with additive mask (B, 1, 1, T)."""
        attn = layer.attention.self
        b, t, _ = hidden.shape
        heads, head_dim = attn.num_attention_heads, attn.attention_head_size

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, t, heads, head_dim).transpose(1, 2)  # (B, h, T, d)

        q, k, v = split(attn.query(hidden)), split(attn.key(hidden)), split(attn.value(hidden))
        scores_bias = mask  # (B, 1, 1, T)
        if self.attention_bias is not None:
            scores_bias = mask + self.attention_bias(cond, t).unsqueeze(1)  # (B, 1, T, T), shared by heads
        ctx = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=scores_bias,
            dropout_p=attn.dropout.p if layer.training else 0.0,
            scale=head_dim**-0.5,
        )  # (B, h, T, d)
        ctx = ctx.transpose(1, 2).reshape(b, t, heads * head_dim)  # (B, T, H)

        self_out = layer.attention.output
        a = self._norm(
            self.attention_norm, self_out.LayerNorm, self_out.dropout(self_out.dense(ctx)) + hidden, cond
        )  # (B, T, H)
        out = layer.output
        f = out.dropout(out.dense(layer.intermediate(a)))  # (B, T, H)
        if self.adapter is not None:
            f = f + self.adapter(f, cond)
        return self._norm(self.output_norm, out.LayerNorm, f + a, cond)
