"""The LRA encoder, top to bottom: positions -> attention -> MLP -> block -> encoder -> heads.

A faithful port of ``lra_benchmarks/models/transformer/transformer.py`` (see
``shared/reference/models.md`` §1.1) with the deviations listed in the README:

* token embedding N(0, 1); optional CLS vector (zero init) prepended, its mask copying the first
  token's mask; positions sinusoidal (interleaved sin/cos), learned (N(0, 0.02)), axial or none;
* pre-LN blocks (post-LN optional), LayerNorm eps 1e-6, tanh-GELU, Xavier-uniform kernels;
* Q/K/V/O projections without bias in :class:`MultiHeadAttention`, which owns them for every backend;
* pooling ``cls`` (position 0), ``mean`` (unmasked, as LRA), ``masked_mean`` (a deviation, named);
* classifier Dense(mlp) -> ReLU -> Dense(classes); the dual (retrieval) head is in :mod:`models.heads`.

Mask convention: ``mask`` (B, L) bool, True = real token.
``mask_mode``: ``lra`` — a padded query row outputs the plain mean of all value vectors (what LRA's
finite -1e10 query x key bias gives); ``keys`` — padded query rows output zeros.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.attention import build_attention
from models.attention.base import dropout as cpu_friendly_dropout

MASK_MODES = ("lra", "keys")
POOLINGS = ("cls", "mean", "masked_mean")


# ----------------------------------------------------------------------------------------- positions
def sinusoidal_table(max_len: int, dim: int) -> torch.Tensor:
    """LRA's fixed table, channels interleaved: even = sin, odd = cos, freq exp(-2i ln 1e4 / d). (L, D)"""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return table.float()


class SinusoidalPositions(nn.Module):
    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, x):  # x: (B, L, D)
        return x + self.table[: x.shape[1]].to(x.dtype)


class LearnedPositions(nn.Module):
    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(max_len, dim) * 0.02)

    def forward(self, x):
        if x.shape[1] > self.table.shape[0]:
            raise ValueError(f"sequence length {x.shape[1]} exceeds the learned position table "
                             f"({self.table.shape[0]}); raise task.max_length")
        return x + self.table[: x.shape[1]]


class NoPositions(nn.Module):
    def forward(self, x):
        return x


def build_positions(kind: str, max_len: int, dim: int, axial_shape=None) -> nn.Module:
    if kind == "sinusoidal":
        return SinusoidalPositions(max_len, dim)
    if kind == "learned":
        return LearnedPositions(max_len, dim)
    if kind == "none":
        return NoPositions()
    if kind == "axial":
        from models.axial import AxialPositions  # issue 4 family; imported lazily to keep this file short
        return AxialPositions(max_len, dim, axial_shape)
    raise ValueError(f"model.pos_emb={kind!r}; choose sinusoidal, learned, axial or none")


# ----------------------------------------------------------------------------------------- attention
class MultiHeadAttention(nn.Module):
    """Q/K/V/O projections shared by every backend; the backend only mixes tokens. (B, L, D) -> (B, L, D)"""

    def __init__(self, d_model: int, qkv_dim: int, num_heads: int, max_len: int, attention: dict,
                 mask_mode: str = "lra"):
        super().__init__()
        if qkv_dim % num_heads:
            raise ValueError(f"model.qkv_dim={qkv_dim} is not divisible by model.num_heads={num_heads}")
        if mask_mode not in MASK_MODES:
            raise ValueError(f"model.mask_mode={mask_mode!r}; choose one of {MASK_MODES}")
        self.num_heads, self.head_dim, self.mask_mode = num_heads, qkv_dim // num_heads, mask_mode
        opts = {k: v for k, v in attention.items() if k != "name"}
        self.backend = build_attention(attention["name"], num_heads=num_heads, head_dim=self.head_dim,
                                       max_len=max_len, **opts)
        # Backends with shared query/key (Reformer) get no K projection: k = q, as in the paper.
        self.shared_qk = bool(getattr(self.backend, "shared_qk", False))
        self.q_proj = nn.Linear(d_model, qkv_dim, bias=False)
        self.k_proj = None if self.shared_qk else nn.Linear(d_model, qkv_dim, bias=False)
        self.v_proj = nn.Linear(d_model, qkv_dim, bias=False)
        self.o_proj = nn.Linear(qkv_dim, d_model, bias=False)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
            if lin is not None:
                nn.init.xavier_uniform_(lin.weight)

    def _heads(self, x):  # (B, L, H*d) -> (B, H, L, d)
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, mask=None):
        q, v = self._heads(self.q_proj(x)), self._heads(self.v_proj(x))
        k = q if self.shared_qk else self._heads(self.k_proj(x))
        out = self.backend(q, k, v, key_padding_mask=mask)  # (B, H, L, d)
        if mask is not None:  # SequenceEncoder passes None for unpadded batches, so this runs only with padding
            qmask = mask[:, None, :, None]  # (B, 1, L, 1)
            if self.mask_mode == "lra":
                fill = v.mean(dim=2, keepdim=True).to(out.dtype)  # (B, H, 1, d): uniform weights over all keys
            else:
                fill = torch.zeros((), dtype=out.dtype, device=out.device)
            out = torch.where(qmask, out, fill)
        B, H, L, d = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(B, L, H * d))


# ----------------------------------------------------------------------------------------- block
class Dropout(nn.Dropout):
    """``nn.Dropout`` (inverted: keep with probability 1 − p, survivors scaled by 1/(1 − p)) whose CPU training
    path draws the mask as ``uniform ≥ p`` (:func:`models.attention.base.dropout`) instead of ATen's serial
    CPU ``bernoulli_``, which costs ~2.2x a (also serial) ``uniform_`` per element. The encoder draws
    B·L·(D + layers·(2D + mlp)) mask elements per step (embeddings, then per block attention output, MLP
    activation and MLP output, as LRA); at D 64, MLP 128, 2 layers, batch 1 ``bernoulli_`` was 15 % (L 1K) to
    25 % (L 4K) of a CPU Nyströmformer training step. Same distribution, seedable by ``torch.manual_seed``;
    which elements drop for a given seed differs from ``nn.Dropout``. GPU: ``F.dropout`` as before. Eval or
    p = 0: identity (as ``F.dropout``)."""

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        return cpu_friendly_dropout(x, self.p)


class MLP(nn.Module):
    """Dense(mlp) -> tanh-GELU -> Dropout -> Dense(D) -> Dropout, Xavier kernels, bias N(0, 1e-6)."""

    def __init__(self, d_model: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, mlp_dim), nn.Linear(mlp_dim, d_model)
        for lin in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.normal_(lin.bias, std=1e-6)
        self.drop = Dropout(dropout)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x), approximate="tanh"))))


class TransformerBlock(nn.Module):
    """x + Dropout(Attn(LN(x))); x + MLP(LN(x)) (pre-LN, LRA) or the post-LN arrangement."""

    def __init__(self, d_model, qkv_dim, num_heads, mlp_dim, dropout, max_len, attention, mask_mode,
                 norm_first=True, layer_norm_eps=1e-6):
        super().__init__()
        self.norm_first = norm_first
        self.ln1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.ln2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.attn = MultiHeadAttention(d_model, qkv_dim, num_heads, max_len, attention, mask_mode)
        self.mlp = MLP(d_model, mlp_dim, dropout)
        self.drop = Dropout(dropout)

    def forward(self, x, mask=None):
        if self.norm_first:
            x = x + self.drop(self.attn(self.ln1(x), mask))
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.drop(self.attn(x, mask)))
        return self.ln2(x + self.mlp(x))


# ----------------------------------------------------------------------------------------- encoder
class SequenceEncoder(nn.Module):
    """Tokens (B, L) -> pooled features (B, D). Model families plug in their own ``layers``.

    Each layer is called as ``layer(x, mask) -> x`` with x (B, L', D) and mask (B, L') bool (L' = L+1
    with CLS), or ``mask=None`` when the caller says the batch has no padding (``all_real=True``, a Python bool
    computed on the host from the CPU mask: see :meth:`models.module.LRAModule.on_before_batch_transfer`), so
    the layers take their unmasked paths (SDPA can pick FlashAttention, no query fill) with the same result.
    ``final_norm`` is applied before pooling (LRA's ``encoder_norm``).
    """

    def __init__(self, vocab_size: int, d_model: int, max_len: int, layers: nn.ModuleList, *,
                 pos_emb: str = "sinusoidal", pooling: str = "cls", dropout: float = 0.1,
                 final_norm: nn.Module | None = None, axial_shape=None, embed_scale: float = 1.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling={pooling!r}; choose one of {POOLINGS}")
        self.pooling, self.d_model = pooling, d_model
        self.use_cls = pooling == "cls"
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=1.0)
        self.embed_scale = embed_scale
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if self.use_cls else None
        self.positions = build_positions(pos_emb, max_len + int(self.use_cls), d_model, axial_shape)
        self.drop = Dropout(dropout)
        self.layers = layers
        self.final_norm = final_norm if final_norm is not None else nn.Identity()

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, all_real: bool = False) -> torch.Tensor:
        x = self.embed(input_ids) * self.embed_scale  # (B, L, D)
        if self.use_cls:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # (B, L+1, D)
            mask = torch.cat([mask[:, :1], mask], dim=1)  # CLS copies the first token's mask (LRA)
        x = self.drop(self.positions(x))
        if not all_real and mask.device.type == "cpu" and not torch.compiler.is_compiling():
            all_real = bool(mask.all())  # free on the host; on GPU the flag comes from the host (LRAModule)
        layer_mask = None if all_real else mask
        for layer in self.layers:
            x = layer(x, layer_mask)
        x = self.final_norm(x)
        if self.pooling == "cls":
            return x[:, 0]
        if self.pooling == "mean" or all_real:
            return x.mean(dim=1)  # "mean": unmasked, as LRA's jnp.mean(axis=1); masked mean = mean without padding
        m = mask.to(x.dtype)[..., None]
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def build_transformer_layers(cfg: dict, attention: dict, max_len: int) -> nn.ModuleList:
    return nn.ModuleList(
        TransformerBlock(cfg["d_model"], cfg["qkv_dim"], cfg["num_heads"], cfg["mlp_dim"], cfg["dropout"],
                         max_len, attention, cfg["mask_mode"], cfg["norm_first"], cfg["layer_norm_eps"])
        for _ in range(cfg["num_layers"]))
