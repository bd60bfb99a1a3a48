"""Reformer LSH self-attention (Kitaev et al., "Reformer: The Efficient Transformer", ICLR 2020).

Semantics follow HF ``transformers`` 4.57.6 ``LSHSelfAttention`` (``shared/reference/models.md`` §5.1) and are
tested against it (``tests/test_attention_lsh.py``). Per (batch, head):

1. **Shared QK** (``shared_qk: true``, the default and the faithful setting): keys are the queries, RMS-normalised
   (eps 1e-6) and scaled by d^-1/2; logits are ``q · k_norm`` with no further scale. The ``k`` argument is unused
   (see *Shared QK and the K projection* below). ``shared_qk: false`` hashes q and k separately with the same
   rotations, sorts each by its own buckets, pairs query chunk i with key chunk i and its neighbours, scales
   logits by d^-1/2 and applies no self-mask (an extension; HF has no such mode).
2. **Hashing** (angular LSH): random rotations R of shape (H, d, n_hashes, Σfactors/2), per head as in HF;
   bucket = argmax([xR; -xR]) per round. ``num_buckets`` is an even int or a list of even factors (HF's
   factorised buckets: bucket = Σ_i argmax_i · Π_{j<i} f_j). It is required: HF's automatic choice at the first
   forward (≈ 2L/chunk) is not reproduced. Padded tokens go to an extra bucket, sorted after every real one.
3. **Sort** per round by ``bucket · L + position`` (a unique key, so the sort is stable by construction), gather
   q (and k, v) into sorted order. The rounds are concatenated round-major into one sequence of
   ``n_hashes · L`` positions, as in HF and trax.
4. **Chunked attention**: chunks of ``chunk_length`` on that concatenated sorted sequence; each chunk attends to
   itself, ``n_chunks_before`` and ``n_chunks_after`` neighbours, **circularly over the whole concatenated
   sequence** (HF/trax quirk, kept for parity: the first chunk of round r also sees the last chunk of round
   r-1, and round 0 wraps to the last round; with fewer chunks than the window a chunk is seen twice, as in HF).
   Masks: padded keys get -1e9 (HF's fp32 ``mask_value``); with shared QK the query's own position gets -1e5
   (HF's fp32 ``self_mask_value``, applied after the padding mask), so a token attends to itself only when
   nothing else is visible — every row sees at least itself, so no row is ever empty and nothing is NaN.
   HF's encoder default ``lsh_num_chunks_after`` is 0 (a decoder setting); models.md §5.1 says use 1 for
   encoders, which is this backend's default too.
5. **Combine**: each round gives out_r and its logsumexp lse_r; out = Σ_r softmax_r(lse)_r · out_r; undo the sort.

When the (padded) sequence fits in one chunk, HF skips hashing and runs plain attention with the self-mask; so
does this backend (one round, identity order, no neighbours) — the result equals HF's for any ``n_hashes``.
Lengths that are not a multiple of ``chunk_length`` are padded internally with masked positions (what
``ReformerModel`` does with its padding) and sliced back. Memory per round is O(L · chunk · (1 + before + after))
for the logits; no (L, L) tensor is formed. All work (hashing, logits, softmax, combine) is in fp32 whatever the
input dtype (fp64 stays fp64); the output is cast back to v's dtype. There is no causal mode (encoders only).

Randomness: ``hash_seed: int`` draws the rotations once, at construction, from a local ``torch.Generator``
seeded with it (identical numbers to HF's ``torch.manual_seed(hash_seed); torch.randn(...)`` on CPU, without
HF's global-RNG side effect); ``hash_seed: null`` draws fresh rotations on every forward from the global RNG of
the input's device (HF's default behaviour: training and evaluation are then stochastic but seedable).

Shared QK and the K projection: with ``shared_qk`` the backend ignores its ``k`` input (keys are the
normalised queries). The shared block (:class:`models.encoder.MultiHeadAttention`) reads the public
``self.shared_qk`` and builds no K projection at all, passing ``k = q``, so the parameter budget is the
paper's. When the backend is called directly with a separate ``k`` (tests), a zero-gradient tie
(:class:`_ZeroGradTie`) makes autograd report an exact zero for ``k`` instead of ``None``.

Deviations from HF: rotations for ``hash_seed`` are drawn on CPU in fp32 and moved to the device (HF draws on the
device in the input dtype, so CUDA/bf16 draws differ from CPU/fp32 ones); computation is fp32 for every input
dtype (HF computes in the input dtype with fp16-specific mask values); no decoder/caching/causal paths; the
reverse sort is a plain gather (HF uses a custom autograd function for the same permutation).
The last forward's geometry is kept in ``self.last_geometry`` (plain ints, for tests).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from models.attention.base import AttentionBackend, Capabilities, register_attention, zero_fully_masked_rows
from models.attention.base import dropout as cpu_friendly_dropout

MASK_VALUE = -1e9        # HF LSHSelfAttention.mask_value_float32: padded keys
SELF_MASK_VALUE = -1e5   # HF LSHSelfAttention.self_mask_value_float32: a query's own position (shared QK)
LEN_NORM_EPS = 1e-6      # HF LSHSelfAttention._len_norm


def bucket_factors(num_buckets) -> tuple[int, ...]:
    """``num_buckets`` (even int or sequence of even ints) -> tuple of factors; raises on bad values."""
    if isinstance(num_buckets, bool) or num_buckets is None:
        raise ValueError(f"attention.num_buckets={num_buckets!r}: set an even int (or a list of even ints); "
                         "HF's rule of thumb is about 2 * seq_len / chunk_length")
    factors = (num_buckets,) if isinstance(num_buckets, int) else tuple(num_buckets)
    if not factors or any(isinstance(f, bool) or not isinstance(f, int) or f < 2 or f % 2 for f in factors):
        raise ValueError(f"attention.num_buckets={num_buckets!r}: every bucket count must be an even int >= 2")
    return factors


def hash_rotations(num_heads: int, head_dim: int, n_hashes: int, factors: Sequence[int],
                   generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Random rotations R ~ N(0, 1), shape (H, d, n_hashes, Σfactors/2), as HF ``_hash_vectors`` draws them."""
    shape = (num_heads, head_dim, n_hashes, sum(factors) // 2)
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


def lsh_buckets(x: torch.Tensor, rotations: torch.Tensor, factors: Sequence[int],
                mask: torch.Tensor) -> torch.Tensor:
    """Angular-LSH buckets. x (B, H, L, d), rotations (H, d, R, Σf/2), mask (B, L) True = real -> (B, H, R, L).

    Real tokens get buckets in [0, Πf); padded tokens get the extra bucket Πf (HF's pad bucket).
    """
    rotated = torch.einsum("bhtd,hdrk->bhrtk", x.detach(), rotations.to(x.dtype))  # (B, H, R, L, Σf/2)
    buckets, offset, stride = None, 0, 1
    for f in factors:
        part = rotated[..., offset: offset + f // 2]
        idx = torch.argmax(torch.cat([part, -part], dim=-1), dim=-1)  # (B, H, R, L)
        buckets = idx if buckets is None else buckets + stride * idx
        offset, stride = offset + f // 2, stride * f
    return torch.where(mask[:, None, None, :], buckets, torch.full_like(buckets, stride))


def look_adjacent(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """(B, H, N, c, ...) -> (B, H, N, c·(before+1+after), ...): chunk n followed by its neighbours, circular in N."""
    if before == 0 and after == 0:
        return x
    return torch.cat([torch.roll(x, shifts=-i, dims=2) for i in range(-before, after + 1)], dim=3)


class _ZeroGradTie(torch.autograd.Function):
    """Returns ``out`` unchanged; gives ``unused`` an exact zero gradient instead of ``None``."""

    @staticmethod
    def forward(ctx, out, unused):
        ctx.unused_shape, ctx.unused_dtype = unused.shape, unused.dtype
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, grad_out.new_zeros(ctx.unused_shape, dtype=ctx.unused_dtype)


@register_attention("lsh")
class LSHAttention(AttentionBackend):
    """Reformer LSH self-attention with HF semantics. q, k, v (B, H, L, d); key_padding_mask (B, L) True = real."""

    capabilities = Capabilities(exact=False, notes=("computes in fp32 for every input dtype",
                                                    "lengths padded internally to a multiple of chunk_length"))
    reference = "math"

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int, num_buckets, n_hashes: int = 1,
                 chunk_length: int = 64, n_chunks_before: int = 1, n_chunks_after: int = 1,
                 shared_qk: bool = True, hash_seed: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.factors = bucket_factors(num_buckets)
        for key, val, low in (("n_hashes", n_hashes, 1), ("chunk_length", chunk_length, 1),
                              ("n_chunks_before", n_chunks_before, 0), ("n_chunks_after", n_chunks_after, 0)):
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ValueError(f"attention.{key}={val!r}: need an int >= {low}")
        if not isinstance(shared_qk, bool):
            raise ValueError(f"attention.shared_qk={shared_qk!r}: need true or false")
        if hash_seed is not None and (isinstance(hash_seed, bool) or not isinstance(hash_seed, int)):
            raise ValueError(f"attention.hash_seed={hash_seed!r}: need null or an int")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"attention.dropout={dropout!r}: need 0 <= dropout < 1")
        self.num_heads, self.head_dim = num_heads, head_dim
        self.n_hashes, self.chunk_length = n_hashes, chunk_length
        self.n_chunks_before, self.n_chunks_after = n_chunks_before, n_chunks_after
        self.shared_qk, self.hash_seed, self.dropout = shared_qk, hash_seed, dropout
        rotations = None
        if hash_seed is not None:
            g = torch.Generator().manual_seed(hash_seed)  # local: the global RNG is never touched
            rotations = hash_rotations(num_heads, head_dim, n_hashes, self.factors, generator=g)
        self.register_buffer("rotations", rotations, persistent=False)  # (H, d, n_hashes, Σf/2) or None
        self.last_geometry: dict | None = None

    def extra_repr(self) -> str:
        return (f"num_buckets={self.factors}, n_hashes={self.n_hashes}, chunk_length={self.chunk_length}, "
                f"before={self.n_chunks_before}, after={self.n_chunks_after}, shared_qk={self.shared_qk}, "
                f"hash_seed={self.hash_seed}")

    def _rotations(self, device) -> torch.Tensor:
        if self.rotations is not None:
            return self.rotations
        return hash_rotations(self.num_heads, self.head_dim, self.n_hashes, self.factors, device=device)

    def _sort_order(self, x, rotations, mask, Lp: int) -> torch.Tensor:
        """Sorted original positions per round, (B, H, R, Lp): ascending bucket, then position."""
        buckets = lsh_buckets(x, rotations, self.factors, mask)  # (B, H, R, Lp)
        pos = torch.arange(Lp, device=x.device)
        return torch.argsort(buckets * Lp + pos, dim=-1)

    def forward(self, q, k, v, key_padding_mask=None):
        self.check(q)
        B, H, L, d = q.shape
        out_dtype, k_in = v.dtype, k
        work = torch.float64 if q.dtype == torch.float64 else torch.float32
        c = self.chunk_length
        n_chunks = -(-L // c)
        Lp, pad = n_chunks * c, n_chunks * c - L
        mask = (torch.ones(B, L, dtype=torch.bool, device=q.device) if key_padding_mask is None
                else key_padding_mask.to(torch.bool))
        q, v = q.to(work), v.to(work)
        k = q if self.shared_qk else k.to(work)
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))  # (B, H, Lp, d)
            mask = F.pad(mask, (0, pad), value=False)  # (B, Lp)

        chunked = n_chunks > 1  # one chunk: HF's plain-attention path (no hashing, one round)
        R = self.n_hashes if chunked else 1
        before, after = (self.n_chunks_before, self.n_chunks_after) if chunked else (0, 0)
        if chunked:
            rot = self._rotations(q.device)
            q_order = self._sort_order(q, rot, mask, Lp)  # (B, H, R, Lp)
            k_order = q_order if self.shared_qk else self._sort_order(k, rot, mask, Lp)
        else:
            q_order = k_order = torch.arange(Lp, device=q.device).expand(B, H, 1, Lp)
        N = R * n_chunks  # chunks in the round-major concatenation of the sorted rounds

        def gather(x, order):  # (B, H, Lp, e), (B, H, R, Lp) -> (B, H, N, c, e)
            idx = order.reshape(B, H, R * Lp, 1).expand(-1, -1, -1, x.shape[-1])
            return x.gather(2, idx).view(B, H, N, c, x.shape[-1])

        sq = gather(q, q_order)  # (B, H, N, c, d)
        sv = gather(v, k_order)
        if self.shared_qk:
            sk = sq * torch.rsqrt(sq.pow(2).mean(-1, keepdim=True) + LEN_NORM_EPS) / math.sqrt(d)
            scale = 1.0
        else:
            sk, scale = gather(k, k_order), 1.0 / math.sqrt(d)
        q_pos = q_order.reshape(B, H, N, c)
        k_pos = k_order.reshape(B, H, N, c)
        k_real = mask[:, None, :].expand(B, H, Lp).gather(2, k_order.reshape(B, H, R * Lp)).view(B, H, N, c)
        sk, sv, k_pos, k_real = (look_adjacent(t, before, after) for t in (sk, sv, k_pos, k_real))
        # sk, sv: (B, H, N, W, d); k_pos, k_real: (B, H, N, W) with W = c·(1 + before + after)

        logits = torch.matmul(sq, sk.transpose(-1, -2)) * scale  # (B, H, N, c, W)
        logits = logits.masked_fill(~k_real[..., None, :], MASK_VALUE)
        if self.shared_qk:
            logits = logits.masked_fill(q_pos[..., :, None] == k_pos[..., None, :], SELF_MASK_VALUE)
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, H, N, c, 1)
        probs = torch.exp(logits - lse)
        if self.dropout > 0.0 and self.training:
            probs = cpu_friendly_dropout(probs, self.dropout)  # CPU: uniform ≥ p, not serial bernoulli_
        out = torch.matmul(probs, sv).reshape(B, H, R, Lp, d)  # sorted order, per round
        lse = lse.reshape(B, H, R, Lp)

        if chunked:  # undo the sort: undo[order[i]] = i
            pos = torch.arange(Lp, device=q.device).expand(B, H, R, Lp)
            undo = torch.empty_like(q_order).scatter_(-1, q_order, pos)
            out = out.gather(3, undo[..., None].expand(-1, -1, -1, -1, d))  # (B, H, R, Lp, d)
            lse = lse.gather(3, undo)
        if R > 1:
            out = (out * torch.softmax(lse, dim=2)[..., None]).sum(dim=2)  # (B, H, Lp, d)
        else:
            out = out[:, :, 0]
        out = out[:, :, :L]
        self.last_geometry = {"hashed": chunked, "rounds": R, "chunks_per_round": n_chunks, "chunk_length": c,
                              "window": c * (1 + before + after), "padded_length": Lp}
        out = zero_fully_masked_rows(out, key_padding_mask).to(out_dtype)
        if self.shared_qk and k_in.requires_grad and torch.is_grad_enabled():
            out = _ZeroGradTie.apply(out, k_in)
        return out
