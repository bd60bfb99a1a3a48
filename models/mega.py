"""MEGA and Mega-chunk (Ma et al., "Mega: Moving Average Equipped Gated Attention", ICLR 2023).

A port of the LRA encoder of ``facebookresearch/mega`` (fairseq, ``models/lra/mega_lra_encoder.py``)
into the harness's :class:`models.encoder.SequenceEncoder`; ``shared/reference/models.md`` §2. Read top
to bottom: norms -> EMA -> relative position bias -> gated attention -> NFFN -> block -> config ->
builder. Layout is batch-first ``(B, L, D)`` everywhere (fairseq is time-major); ``mask`` is ``(B, L)``
bool with **True = real token** (fairseq: True = pad; HF: 1 = keep).

What is supported and tested (``tests/test_mega.py``):

* :class:`MultiHeadEMA`: bidirectional (or causal) multi-dimensional damped EMA as an FFT convolution
  in at least fp32 (bf16/fp16 inputs are cast up, autocast is disabled inside), optional kernel
  truncation, pads zeroed before the EMA, kernel cached in eval under ``no_grad``. Equal to a direct
  fp64 recurrence for both directions and for a truncation shorter than L.
* :class:`MovingAverageGatedAttention`: single-head gated attention with ``softmax`` (fp32 softmax),
  ``laplace`` or ``relu2`` scores, ``simple`` (Toeplitz) or ``rotary`` relative bias; Mega-chunk when
  ``chunk_size > 0``: a length that is not a multiple of the chunk is padded (masked) inside the layer
  and sliced back, so callers never pad. Parity with HF ``transformers==4.57.6``
  (``models/deprecated/mega``) for full and chunked attention.
* Norms ``layernorm``, ``scalenorm``, ``rmsnorm`` (fairseq's, not HF's no-op), ``batchnorm``.
  ``batchnorm`` is **mask-aware**: in training its statistics use real tokens only (fairseq's
  ``BatchNorm1d`` counts pads too); with no pads the two are identical. Path-X's ``syncbatchnorm``
  (8 GPUs) is ``batchnorm`` over the local batch here.

Padding contract: outputs at real positions do not depend on the content of padded positions (pads are
zeroed before the EMA, masked as keys, excluded from batchnorm statistics and from pooling). A chunk that
holds only padding is left unmasked, as in fairseq, so its rows stay finite; it only feeds padded rows.

Known limits: no incremental (recurrent) decoding; no fused kernels (``models.md`` §2.5); the quadratic
attention materialises (B, L/c, c, c) scores in fp32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models.encoder import POOLINGS, Dropout, SequenceEncoder
from models.registry import parse_config, register_model

ATTENTION_FNS = ("softmax", "laplace", "relu2")
NORM_TYPES = ("layernorm", "scalenorm", "rmsnorm", "batchnorm")
REL_POS_BIASES = ("simple", "rotary")


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """At least fp32: fp16/bf16 go up to fp32, fp64 stays fp64."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


# ----------------------------------------------------------------------------------------- norms
class ScaleNorm(nn.Module):
    """x * s / sqrt(mean(x^2) + eps) with one learned scalar s (fairseq ``scale_norm.py``)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scalar = nn.Parameter(torch.ones(1))

    def forward(self, x):  # statistics in at least fp32 (the output stays in that dtype, as LayerNorm's under autocast)
        x = x.to(_compute_dtype(x, self.scalar))
        mean_square = x.square().mean(dim=-1, keepdim=True)
        return self.scalar * x * torch.rsqrt(mean_square + self.eps)


class RMSNorm(nn.Module):
    """x * w / sqrt(mean(x^2) + eps) (fairseq ``root_mean_square_norm.py``; HF 4.57.6's copy drops the
    normalisation by a discarded assignment, so it is not used as a reference)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x = x.to(_compute_dtype(x, self.weight))
        mean_square = x.square().mean(dim=-1, keepdim=True)
        return x * self.weight * torch.rsqrt(mean_square + self.eps)


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over (batch, time) per channel whose training statistics skip padded tokens.

    (B, L, D) -> (B, L, D). Eval uses the running statistics (per token, so pads cannot leak).
    Computed and returned in at least fp32 (as ``nn.BatchNorm1d`` under autocast). Same parameters and buffers as ``nn.BatchNorm1d``; with
    every token real it equals fairseq's ``BatchNorm1d`` on (B, D, L).
    """

    def forward(self, x, mask=None):
        dtype = _compute_dtype(x, self.weight)
        xf = x.to(dtype)
        if self.training:
            m = (torch.ones_like(xf[..., :1]) if mask is None else mask[..., None].to(dtype))  # (B, L, 1)
            n = m.sum().clamp_min(1.0)
            mean = (xf * m).sum(dim=(0, 1)) / n  # (D,)
            var = ((xf - mean).square() * m).sum(dim=(0, 1)) / n  # biased, used to normalise
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                unbiased = var * n / (n - 1).clamp_min(1.0)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean.to(dtype), self.running_var.to(dtype)
        return (xf - mean) * torch.rsqrt(var + self.eps) * self.weight.to(dtype) + self.bias.to(dtype)


class SequenceNorm(nn.Module):
    """The norm choice of fairseq's ``SequenceNorm``; ``forward(x (B, L, D), mask) -> (B, L, D)``.

    Also used as the encoder's final norm (pre-norm configs), appended to the layer list so that batchnorm
    sees the mask.
    """

    def __init__(self, norm_type: str, dim: int, eps: float = 1e-5):
        super().__init__()
        if norm_type == "layernorm":
            self.norm = nn.LayerNorm(dim, eps=eps)
        elif norm_type == "scalenorm":
            self.norm = ScaleNorm(eps)
        elif norm_type == "rmsnorm":
            self.norm = RMSNorm(dim, eps)
        elif norm_type == "batchnorm":
            self.norm = MaskedBatchNorm(dim, eps=eps)
        else:
            raise ValueError(f"model.norm_type={norm_type!r}; choose one of {NORM_TYPES}")
        self.is_batchnorm = norm_type == "batchnorm"

    def forward(self, x, mask=None):
        return self.norm(x, mask) if self.is_batchnorm else self.norm(x)


# ----------------------------------------------------------------------------------------- EMA
def fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: a length every FFT library transforms without a slow prime-size path."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


class MultiHeadEMA(nn.Module):
    """Multi-dimensional damped EMA (fairseq ``exponential_moving_average.py``). (B, L, D) -> (B, L, D).

    Per channel d and EMA dimension n: h_t = q * h_{t-1} + p * beta * x_t, y_t = scale * sum_n gamma_n h_t[n],
    with p = sigmoid(delta), q = 1 - p * sigmoid(alpha), scale = N^{-1/2}; output SiLU(y + omega * x).
    Bidirectional: channels [0, D) run forward and [D, 2D) backward in time; both include lag 0.
    Computed as one FFT convolution with kernel k[d, l] = scale * sum_n gamma p beta q^l for l < K,
    K = L or min(truncation, L). The rFFT length is the smallest 5-smooth n >= L + 2K - 2 (causal: L + K - 1),
    the least for which the L outputs kept see no circular wrap-around; fairseq's 2(L + K - 1) is often a
    prime times 2 (10238 = 2 x 5119 at L = 4096, K = 1024) and is several times slower to transform.
    """

    def __init__(self, embed_dim: int, ndim: int = 16, bidirectional: bool = True, truncation: int | None = None):
        super().__init__()
        if truncation is not None and truncation < 1:
            raise ValueError(f"model.truncation={truncation}; use null (full length) or a positive int")
        self.embed_dim, self.ndim, self.bidirectional, self.truncation = embed_dim, ndim, bidirectional, truncation
        self.scale = math.sqrt(1.0 / ndim)
        kernel_dim = 2 * embed_dim if bidirectional else embed_dim
        self.delta = nn.Parameter(torch.empty(kernel_dim, ndim, 1))
        self.alpha = nn.Parameter(torch.empty(kernel_dim, ndim, 1))
        self.beta = nn.Parameter(torch.empty(kernel_dim, ndim, 1))
        self.gamma = nn.Parameter(torch.empty(kernel_dim, ndim))
        self.omega = nn.Parameter(torch.empty(embed_dim))
        self._cache: tuple | None = None  # (key, kernel) in eval under no_grad
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        nn.init.normal_(self.delta, std=0.2)
        nn.init.normal_(self.alpha, std=0.2)
        sign = torch.ones(self.ndim, 1)
        sign[1::2] = -1.0  # beta ~ N(0, 0.02) + (1, -1, 1, -1, ...)
        self.beta.normal_(std=0.02).add_(sign)
        nn.init.normal_(self.gamma, std=1.0)
        nn.init.normal_(self.omega, std=1.0)

    def kernel_length(self, length: int) -> int:
        return length if self.truncation is None else min(self.truncation, length)

    def compute_kernel(self, length: int) -> torch.Tensor:
        """(kernel_dim, K) taps for lags 0..K-1, in the parameters' dtype (fp32).

        With lag l = a S + b, q^l = q^(a S) q^b, so the sum over the N EMA dimensions is one batched matmul
        (kd, A, N) @ (kd, N, S) -> (kd, A, S) = (kd, K) that never builds fairseq's (kd, N, K) Vandermonde
        tensor (which, with its backward, cost more than the FFT convolution on CPU; scripts/profile_mega.py).
        """
        p = torch.sigmoid(self.delta)  # (kd, N, 1)
        log_q = torch.log(1.0 - p * torch.sigmoid(self.alpha))  # (kd, N, 1)
        S = math.isqrt(length - 1) + 1  # block of lags, ~sqrt(K)
        A = -(-length // S)
        steps = torch.arange(max(A, S), device=p.device, dtype=p.dtype)
        q_inner = torch.exp(steps[:S] * log_q)  # (kd, N, S): q^b
        q_outer = torch.exp(steps[:A] * (S * log_q))  # (kd, N, A): q^(a S)
        coef = (p * self.beta).squeeze(-1) * (self.gamma * self.scale)  # (kd, N)
        kernel = torch.bmm((q_outer * coef[..., None]).transpose(1, 2), q_inner)  # (kd, A, S)
        return kernel.flatten(1)[:, :length]

    def kernel(self, length: int) -> torch.Tensor:
        K = self.kernel_length(length)
        if self.training or torch.is_grad_enabled():
            return self.compute_kernel(K)
        params = (self.delta, self.alpha, self.beta, self.gamma)
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        if self._cache is None or self._cache[0] != key or self._cache[1].shape[-1] < K:
            self._cache = (key, self.compute_kernel(K))
        return self._cache[1][:, :K]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        residual = x * self.omega  # (B, L, D)
        with torch.autocast(device_type=x.device.type, enabled=False):
            dtype = _compute_dtype(x, self.delta)
            u = x.to(dtype)
            if mask is not None:
                u = u * mask[..., None].to(dtype)  # pads -> 0 before the EMA
            u = rearrange(u, "b l d -> b d l")
            k = self.kernel(L).to(dtype)  # (kd, K)
            K = k.shape[-1]
            if self.bidirectional:
                k_fwd, k_bwd = k.split(D, dim=0)
                k = F.pad(k_fwd, (K - 1, 0)) + F.pad(k_bwd.flip(-1), (0, K - 1))  # (D, 2K-1), lag 0 at K-1
                u = F.pad(u, (K - 1, 0))  # (B, D, L+K-1)
                n, start = fft_size(L + 2 * K - 2), 2 * K - 2  # kept outputs [2K-2, 2K-2+L) free of wrap-around
            else:
                n, start = fft_size(L + K - 1), 0
            y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)
            y = rearrange(y[..., start:start + L], "b d l -> b l d")
        return F.silu(y.to(residual.dtype) + residual)  # not rounded back to x's dtype (fairseq: type_as(x))


# ----------------------------------------------------------------------------------------- positions
class SimpleRelativePositionalBias(nn.Module):
    """A learned vector w of length 2P-1 laid out as bias[i, j] = w[P-1 + j - i] (fairseq/HF index).

    P = max positions (the chunk size when chunking); forward(L) -> (L, L), L <= P.
    """

    def __init__(self, max_positions: int):
        super().__init__()
        self.max_positions = max_positions
        self.weight = nn.Parameter(torch.empty(2 * max_positions - 1))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, length: int) -> torch.Tensor:
        if length > self.max_positions:
            raise ValueError(f"sequence/chunk length {length} exceeds the relative-bias table "
                             f"({self.max_positions}); raise model.max_positions")
        P = self.max_positions
        r = self.weight[P - length: P + length - 1]  # (2L-1,): r[L-1 + j - i] = w[P-1 + j - i]
        return r.unfold(0, length, 1).flip(0)  # (L, L); no (L, L) index tensor kept for backward


class RotaryRelativePositionalBias(nn.Module):
    """bias = rot(a) rot(b)^T with learned a, b in R^z rotated by position (fairseq's rotary bias).

    The sinusoid table is computed for the length asked (fairseq grows its table the same way), so there
    is no length limit. forward(L) -> (L, L).
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary relative bias needs an even model.zdim, got {dim}")
        self.dim = dim
        self.alpha = nn.Parameter(torch.empty(1, dim))
        self.beta = nn.Parameter(torch.empty(1, dim))
        nn.init.normal_(self.alpha, std=0.02)
        nn.init.normal_(self.beta, std=0.02)

    def _rotate(self, x, sin, cos):  # x (L, z)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def forward(self, length: int) -> torch.Tensor:
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, device=self.alpha.device, dtype=torch.float32)
                         * -(math.log(10000) / half))
        angle = torch.arange(length, device=self.alpha.device, dtype=torch.float32)[:, None] * freq[None]
        sin, cos = torch.sin(angle), torch.cos(angle)  # (L, z/2)
        with torch.autocast(device_type=self.alpha.device.type, enabled=False):
            a = self._rotate(self.alpha.expand(length, -1), sin, cos)
            b = self._rotate(self.beta.expand(length, -1), sin, cos)
            return a @ b.T  # (L, L)


# ----------------------------------------------------------------------------------------- attention
def laplace(x, mu: float = 0.707107, sigma: float = 0.282095):
    """0.5 (1 + erf((x - mu) / (sigma sqrt 2))): mu = sqrt(1/2), sigma = sqrt(1/(4 pi)), fairseq's literals."""
    return 0.5 * (1.0 + torch.erf((x - mu) / (sigma * math.sqrt(2.0))))


def relu2(x):
    return F.relu(x).square()


class MovingAverageGatedAttention(nn.Module):
    """The Mega layer (fairseq ``moving_average_gated_attention.py``). (B, L, D), mask -> (B, L, D).

        residual = x; x = Norm(x) if norm_first
        v = SiLU(v_proj(x))                                  (h)
        mx = Dropout(EMA(x))
        u, zr, hx = split(mx_proj(mx), [D, z + h, D]); u = sigmoid(u); z, r = split(SiLU(zr), [z, h])
        q = z * g0 + b0; k = z * g1 + b1                       (single head, dim z)
        A = softmax(q k^T / sqrt(z) + bias) | f(q k^T / n + bias) * key_mask   per chunk
        out = SiLU(hx + h_proj(AttnDropout(A) HiddenDropout(v) * r)); out = Dropout(out)
        y = residual + u * (out - residual); y = Norm(y) if not norm_first

    Chunking (``chunk_size > 0``): the sequence is cut into chunks of c tokens attended independently; a
    length that is not a multiple of c (and longer than c) is padded inside the layer; a sequence no longer
    than c is one chunk, so chunk = length reproduces full attention exactly.
    """

    def __init__(self, d_model: int, zdim: int, hdim: int, ndim: int, *, attention_fn: str = "softmax",
                 chunk_size: int = -1, truncation: int | None = None, rel_pos_bias: str = "simple",
                 max_positions: int = 1024, norm_type: str = "layernorm", norm_first: bool = False,
                 norm_eps: float = 1e-5, bidirectional: bool = True, dropout: float = 0.0,
                 attn_dropout: float = 0.0, hidden_dropout: float = 0.0):
        super().__init__()
        if attention_fn not in ATTENTION_FNS:
            raise ValueError(f"model.attention_fn={attention_fn!r}; choose one of {ATTENTION_FNS}")
        self.d_model, self.zdim, self.hdim = d_model, zdim, hdim
        self.attention_fn, self.chunk_size, self.norm_first = attention_fn, chunk_size, norm_first
        self.scaling = zdim ** -0.5
        self.norm = SequenceNorm(norm_type, d_model, norm_eps)
        self.ema = MultiHeadEMA(d_model, ndim, bidirectional, truncation)
        self.v_proj = nn.Linear(d_model, hdim)
        self.mx_proj = nn.Linear(d_model, zdim + hdim + 2 * d_model)
        self.h_proj = nn.Linear(hdim, d_model)
        self.qk_weight = nn.Parameter(torch.empty(2, zdim))  # fairseq gamma
        self.qk_bias = nn.Parameter(torch.zeros(2, zdim))  # fairseq beta
        positions = chunk_size if chunk_size > 0 else max_positions
        if rel_pos_bias == "simple":
            self.rel_pos_bias = SimpleRelativePositionalBias(positions)
        elif rel_pos_bias == "rotary":
            self.rel_pos_bias = RotaryRelativePositionalBias(zdim)
        else:
            raise ValueError(f"model.rel_pos_bias={rel_pos_bias!r}; choose one of {REL_POS_BIASES}")
        # encoder.Dropout: nn.Dropout with a CPU mask drawn as uniform ≥ p (same distribution, faster on CPU)
        self.dropout = Dropout(dropout)
        self.hidden_dropout = Dropout(hidden_dropout)
        self.attn_dropout = Dropout(attn_dropout)
        for lin in (self.v_proj, self.mx_proj, self.h_proj):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        nn.init.normal_(self.qk_weight, std=0.02)

    def attention_weights(self, q, k, mask):
        """q, k (B, K, C, z); mask (B, K, C) bool True = real -> weights (B, K, C, C), at least fp32."""
        C, dt = k.shape[2], _compute_dtype(q)
        bias = self.rel_pos_bias(C).to(dt)  # (C, C)
        any_real = mask.any(dim=-1, keepdim=True)  # (B, K, 1): chunks of pads only stay unmasked
        if self.attention_fn == "softmax":
            scores = torch.matmul(q * self.scaling, k.transpose(-1, -2)).to(dt) + bias
            drop = ~mask & any_real
            scores = scores.masked_fill(drop[:, :, None, :], float("-inf"))
            return torch.softmax(scores, dim=-1, dtype=dt)
        lengths = mask.sum(dim=-1).clamp_min(1).to(dt)[..., None, None]  # (B, K, 1, 1)
        scores = torch.matmul(q, k.transpose(-1, -2)).to(dt) / lengths + bias
        weights = laplace(scores) if self.attention_fn == "laplace" else relu2(scores)
        return weights * mask[:, :, None, :].to(weights.dtype)

    def attend(self, q, k, v, mask):
        """q, k (B, L, z), v (B, L, h), mask (B, L) -> (B, L, h), chunked when chunk_size > 0."""
        B, L, _ = q.shape
        C = self.chunk_size if 0 < self.chunk_size < L else L
        pad = (-L) % C
        if mask is None:
            mask = torch.ones(B, L, dtype=torch.bool, device=q.device)
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
            mask = F.pad(mask, (0, pad), value=False)
        q, k, v = (rearrange(t, "b (n c) e -> b n c e", c=C) for t in (q, k, v))  # (B, K, C, .)
        mask = rearrange(mask, "b (n c) -> b n c", c=C)
        weights = self.attn_dropout(self.attention_weights(q, k, mask))
        out = torch.matmul(weights.to(v.dtype), v)  # (B, K, C, h)
        return rearrange(out, "b n c e -> b (n c) e")[:, :L]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        residual = x
        if self.norm_first:
            x = self.norm(x, mask)
        v = F.silu(self.v_proj(x))  # (B, L, h)
        mx = self.dropout(self.ema(x, mask))  # (B, L, D)
        u, zr, hx = self.mx_proj(mx).split([self.d_model, self.zdim + self.hdim, self.d_model], dim=-1)
        u = torch.sigmoid(u)
        z, r = F.silu(zr).split([self.zdim, self.hdim], dim=-1)
        qk = z.unsqueeze(-2) * self.qk_weight + self.qk_bias  # (B, L, 2, z)
        q, k = qk.unbind(dim=-2)
        h = self.attend(q, k, self.hidden_dropout(v), mask)  # (B, L, h)
        h = self.dropout(F.silu(hx + self.h_proj(h * r)))
        out = residual + u * (h - residual)
        if not self.norm_first:
            out = self.norm(out, mask)
        return out


# ----------------------------------------------------------------------------------------- block
class NormalizedFeedForwardNetwork(nn.Module):
    """x + Dropout(fc2(HiddenDropout(SiLU(fc1(Norm(x)))))) (pre-norm) or Norm(x + ...) (post-norm)."""

    def __init__(self, d_model: int, ffn_dim: int, *, norm_type: str = "layernorm", norm_first: bool = False,
                 norm_eps: float = 1e-5, dropout: float = 0.0, hidden_dropout: float = 0.0):
        super().__init__()
        self.norm_first = norm_first
        self.norm = SequenceNorm(norm_type, d_model, norm_eps)
        self.fc1, self.fc2 = nn.Linear(d_model, ffn_dim), nn.Linear(ffn_dim, d_model)
        for lin in (self.fc1, self.fc2):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        self.dropout, self.hidden_dropout = Dropout(dropout), Dropout(hidden_dropout)

    def forward(self, x, mask=None):
        residual = x
        if self.norm_first:
            x = self.norm(x, mask)
        x = self.dropout(self.fc2(self.hidden_dropout(F.silu(self.fc1(x)))))
        x = x + residual
        if not self.norm_first:
            x = self.norm(x, mask)
        return x


class MegaBlock(nn.Module):
    """fairseq ``MegaSentenceEncoderLayer``: Mega layer then NFFN (skipped when ffn_hidden_dim = 0)."""

    def __init__(self, mega: MovingAverageGatedAttention, nffn: NormalizedFeedForwardNetwork | None):
        super().__init__()
        self.mega, self.nffn = mega, nffn

    def forward(self, x, mask=None):
        x = self.mega(x, mask)
        return x if self.nffn is None else self.nffn(x, mask)


# ----------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class MegaConfig:
    """Every key of ``conf/model/mega.yaml``; fairseq argument names in brackets."""

    name: str
    d_model: int  # D [encoder_embed_dim]
    num_layers: int  # [encoder_layers]
    hidden_dim: int  # h, value / expanded dim [encoder_hidden_dim]
    ffn_hidden_dim: int  # NFFN width, 0 = no NFFN [encoder_ffn_embed_dim]
    zdim: int  # z, shared query/key dim [z_dim]
    ndim: int = 16  # N, EMA dimension [n_dim]
    attention_fn: str = "softmax"  # softmax | laplace | relu2 [attention_activation_fn]
    chunk_size: int = -1  # <= 0: full attention (Mega); > 0: Mega-chunk [chunk_size]
    truncation: int | None = None  # EMA kernel taps, null = sequence length [truncation_length]
    rel_pos_bias: str = "simple"  # simple | rotary [rel_pos_bias]
    max_positions: int | None = None  # simple-bias table when unchunked; null = task length [max_positions]
    norm_type: str = "layernorm"  # layernorm | scalenorm | rmsnorm | batchnorm [norm_type]
    norm_first: bool = False  # pre-norm + final norm [encoder_normalize_before]
    norm_eps: float = 1e-5
    bidirectional: bool = True  # the LRA encoder's EMA is bidirectional
    dropout: float = 0.1  # embeddings, EMA output, layer outputs [dropout]
    attn_dropout: float = 0.0  # attention weights [attention_dropout]
    hidden_dropout: float = 0.0  # attention values and NFFN hidden [act_dropout]
    pos_emb: str = "none"  # Mega relies on the EMA and the relative bias
    pooling: str = "masked_mean"  # fairseq sen_rep_type 'mp' = mean over non-pad tokens
    use_mask: bool = True  # false: every position is real (pixel tasks: no black-pixel padding)
    head: dict = field(default_factory=dict)

    def __post_init__(self):
        problems = []
        if self.attention_fn not in ATTENTION_FNS:
            problems.append(f"attention_fn={self.attention_fn!r} not in {ATTENTION_FNS}")
        if self.norm_type not in NORM_TYPES:
            problems.append(f"norm_type={self.norm_type!r} not in {NORM_TYPES}")
        if self.rel_pos_bias not in REL_POS_BIASES:
            problems.append(f"rel_pos_bias={self.rel_pos_bias!r} not in {REL_POS_BIASES}")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling={self.pooling!r} not in {POOLINGS}")
        if self.truncation is not None and self.truncation < 1:
            problems.append(f"truncation={self.truncation} must be null or >= 1")
        if problems:
            raise ValueError("conf/model/mega.yaml: " + "; ".join(problems))


class MegaEncoder(SequenceEncoder):
    """SequenceEncoder whose mask can be ignored (``use_mask: false``) for pixel tasks."""

    def __init__(self, *args, use_mask: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.use_mask = use_mask

    def forward(self, input_ids, mask, all_real: bool = False):
        if not self.use_mask:  # every position counts as real: the layers take their unmasked paths
            return super().forward(input_ids, torch.ones_like(mask, dtype=torch.bool), all_real=True)
        return super().forward(input_ids, mask, all_real=all_real)


def build_mega_layers(c: MegaConfig, max_positions: int) -> nn.ModuleList:
    norm = dict(norm_type=c.norm_type, norm_first=c.norm_first, norm_eps=c.norm_eps)
    layers = nn.ModuleList()
    for _ in range(c.num_layers):
        mega = MovingAverageGatedAttention(
            c.d_model, c.zdim, c.hidden_dim, c.ndim, attention_fn=c.attention_fn, chunk_size=c.chunk_size,
            truncation=c.truncation, rel_pos_bias=c.rel_pos_bias, max_positions=max_positions,
            bidirectional=c.bidirectional, dropout=c.dropout, attn_dropout=c.attn_dropout,
            hidden_dropout=c.hidden_dropout, **norm)
        nffn = (NormalizedFeedForwardNetwork(c.d_model, c.ffn_hidden_dim, dropout=c.dropout,
                                             hidden_dropout=c.hidden_dropout, **norm)
                if c.ffn_hidden_dim > 0 else None)
        layers.append(MegaBlock(mega, nffn))
    if c.norm_first:
        layers.append(SequenceNorm(c.norm_type, c.d_model, c.norm_eps))  # fairseq final_norm
    return layers


@register_model("mega", uses_attention=False)
def build_mega(model_cfg: dict, attention_cfg: dict, spec) -> MegaEncoder:
    """The Mega LRA encoder; ``attention_cfg`` is unused (Mega owns its attention)."""
    c = parse_config(MegaConfig, model_cfg, "conf/model/mega.yaml")
    max_len = spec.seq_len + int(c.pooling == "cls")
    max_positions = c.max_positions or max_len
    if c.chunk_size <= 0 and c.rel_pos_bias == "simple" and max_positions < max_len:
        raise ValueError(f"model.max_positions={max_positions} < sequence length {max_len}")
    encoder = MegaEncoder(spec.vocab_size, c.d_model, spec.seq_len, build_mega_layers(c, max_positions),
                          pos_emb=c.pos_emb, pooling=c.pooling, dropout=c.dropout, final_norm=None,
                          use_mask=c.use_mask)
    nn.init.normal_(encoder.embed.weight, std=c.d_model ** -0.5)  # fairseq LRA Embedding init
    return encoder
