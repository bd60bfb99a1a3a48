"""Longformer (sliding window + global tokens) and local attention, in O(L·w) memory.

Beltagy et al., "Longformer" (arXiv:2004.05150); HF ``LongformerSelfAttention`` semantics;
``shared/reference/models.md`` §6 (Longformer) and §7 (Local attention).

Pattern (``attention=longformer``):

* **local rows**: query i sees the keys j with -left <= j - i <= right (the band includes i itself) plus every
  global key, in **one** softmax over [global keys ‖ band]. A global key inside the band is counted once
  (HF removes global positions from the windowed scores too).
* **global rows** (``global_tokens``, indices into the sequence; ``[0]`` = the CLS/first token): attend to
  every real key.
* ``window`` w is the full window. ``window_convention: hf`` (default): left = right = w/2, so w + 1 keys
  including self, w even (HF ``attention_window``). ``lra``: the LRA JAX dense-mask variant, left = w - w//2 - 1
  keys before self, right = w//2 after (w keys including self).
* Global rows use the same Q/K/V as local rows: the shared :class:`models.encoder.MultiHeadAttention` owns
  one set of projections, so the global projections are *tied* to the local ones (mlpen's LRA wrapper does
  the same; HF and LRA JAX learn separate ``query_global``/``key_global``/``value_global``). Not supported.
* Padding: masked keys never receive weight; a query that sees no real key outputs zeros.

``attention=local`` (:class:`LocalAttention`, a subclass) has no global tokens and one of two patterns:
``block_size`` b — LRA's local attention, softmax inside contiguous non-overlapping blocks of b tokens
(LRA's JAX code reshapes blocks strided, see ``lra-spec.md`` pitfall 23; we use contiguous blocks) — or
``window`` — the Longformer band without global tokens.

Implementations (``impl``; the one that ran is kept in ``self.impl_used``):

* ``chunked`` — pure PyTorch, O(L·w) memory: queries are cut into blocks of c = max(left, right)/r tokens
  (r = 1..4 so that c ≥ 64 where possible; c = b for local blocks); query block n attends to the key blocks
  that cover its band, gathered on the K/V side together with the G global keys, so one matmul gives the
  (B, H, L/c, c, G + span) scores (span ≈ (1 + 1/(2r))·w: 1.125·w for w = 512, 1.5·w for w < 256), masked
  in place outside the band, one fp32 softmax. Global rows are recomputed densely, O(G·L).
* ``flex`` — :func:`models.attention.flex.masked_attention` with ``mask_mod = keep[b, kv] & (band(q, kv) |
  global[kv] | global[q])``: one FlexAttention call (compiled on CUDA; eager on CPU is forward-only and
  materialises the scores). FlexAttention has no attention-weight dropout, so ``flex`` refuses to train
  with ``dropout > 0``.
* ``reference`` — the same mask_mod evaluated densely (an (L, L) mask) and the fp32 math reference: tests only.
* ``auto`` — ``flex`` on CUDA unless attention-weight dropout is active (training with dropout > 0), then
  ``chunked``; ``chunked`` on CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models.attention.base import (AttentionBackend, BackendUnsupported, Capabilities, register_attention,
                                   unmask_empty_rows, zero_fully_masked_rows)
from models.attention.base import dropout as cpu_friendly_dropout
from models.attention.flex import dense_mask, masked_attention
from models.attention.math import softmax_attention_ref

IMPLS = ("auto", "chunked", "flex", "reference")
WINDOW_CONVENTIONS = ("hf", "lra")
_NEG = -1e10
# Chunked band geometry: with m = max(left, right), query blocks of c = ceil(m / r) tokens, r = min(_BAND_SPLIT,
# m // _MIN_BLOCK) (at least 1). A row then scores about (1 + 1/(2r))·w keys instead of 1.5·w for c = m
# (w = 512: 576 instead of 768), a quarter less score/softmax/dropout work, while blocks of ≥ 64 rows keep the
# batched matmuls efficient. Measured on CPU (r 1/2/4/8, min block 32/64/128; L 1K and 4K): r = 4, 64 best.
_BAND_SPLIT = 4
_MIN_BLOCK = 64


def band_sides(window: int, convention: str = "hf") -> tuple[int, int]:
    """Full window w -> (keys before self, keys after self)."""
    window = int(window)
    if window < 1:
        raise ValueError(f"attention.window={window} must be >= 1")
    if convention == "hf":
        if window % 2:
            raise ValueError(f"attention.window={window} must be even with window_convention=hf "
                             "(HF attention_window: w/2 keys each side of the query)")
        return window // 2, window // 2
    if convention == "lra":
        return window - window // 2 - 1, window // 2
    raise ValueError(f"attention.window_convention={convention!r}; choose one of {WINDOW_CONVENTIONS}")


def _global_index(global_tokens: tuple[int, ...], L: int, device) -> torch.Tensor:
    bad = [g for g in global_tokens if g >= L]
    if bad:
        raise BackendUnsupported(f"global_tokens {bad} out of range for a sequence of length {L}")
    return torch.tensor(global_tokens, dtype=torch.long, device=device)


class LongformerAttentionBase(AttentionBackend):
    """Shared machinery of ``longformer`` and ``local``: a pattern plus optional global tokens."""

    capabilities = Capabilities(exact=False, notes=("exact softmax over a sparse pattern (band/blocks + global)",
                                                    "chunked: O(L·w) memory, pure PyTorch",
                                                    "global projections tied to the local ones"))
    reference = "math"

    def _setup(self, *, pattern: tuple, global_tokens, dropout: float, impl: str, compile):
        if impl not in IMPLS:
            raise ValueError(f"attention.impl={impl!r}; choose one of {IMPLS}")
        if compile not in (True, False, "auto"):
            raise ValueError(f"attention.compile={compile!r}; choose true, false or auto")
        g = sorted({int(i) for i in (global_tokens or ())})
        if any(i < 0 for i in g):
            raise ValueError(f"attention.global_tokens={list(global_tokens)}: indices must be >= 0")
        self.pattern, self.global_tokens = pattern, tuple(g)
        self.dropout, self.impl, self.compile = float(dropout), impl, compile
        self.impl_used: str | None = None

    # ------------------------------------------------------------------ pattern
    def _geometry(self, L: int) -> tuple[int, int, int]:
        """(query block size c, key blocks before, key blocks after) for the chunked path."""
        if self.pattern[0] == "blocks":
            return max(1, min(self.pattern[1], L)), 0, 0
        _, left, right = self.pattern
        m = max(left, right)
        r = max(1, min(_BAND_SPLIT, m // _MIN_BLOCK))
        c = max(1, min(-(-m // r), L))
        nb = -(-L // c)
        return c, min(-(-left // c), nb - 1), min(-(-right // c), nb - 1)

    def _pattern_ok(self, qi, ki):
        """Band/block visibility from broadcastable index tensors (no global tokens, no padding)."""
        if self.pattern[0] == "blocks":
            return (qi // self.pattern[1]) == (ki // self.pattern[1])
        _, left, right = self.pattern
        rel = ki - qi
        return (rel >= -left) & (rel <= right)

    def mask_mod(self, keep: torch.Tensor, is_global: torch.Tensor | None):
        """FlexAttention mask_mod: True = query q_idx may attend key kv_idx of batch element b."""
        def mod(b, h, q_idx, kv_idx):
            vis = self._pattern_ok(q_idx, kv_idx)
            if is_global is not None:
                vis = vis | is_global[kv_idx] | is_global[q_idx]
            return vis & keep[b, kv_idx]
        return mod

    # ------------------------------------------------------------------ dispatch
    def resolve_impl(self, q, k, v) -> str:
        dropout_active = self.training and self.dropout > 0.0
        impl = self.impl
        if impl == "auto":
            impl = "flex" if (q.device.type == "cuda" and not dropout_active) else "chunked"
        if impl == "flex":
            if dropout_active:
                raise BackendUnsupported(f"attention={self.name} impl=flex has no attention-weight dropout; set "
                                         "attention.dropout=0.0 or use impl=chunked|auto")
            if q.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
                raise BackendUnsupported(f"attention={self.name} impl=flex: FlexAttention has no backward pass on "
                                         "CPU in this torch; use impl=chunked (or auto) on CPU")
        return impl

    def forward(self, q, k, v, key_padding_mask=None):
        # q, k, v: (B, H, L, d); key_padding_mask: (B, L) bool, True = real token -> (B, H, L, d)
        self.check(q)
        impl = self.resolve_impl(q, k, v)
        self.impl_used = impl
        B, H, L, d = q.shape
        gidx = _global_index(self.global_tokens, L, q.device) if self.global_tokens else None
        p = self.dropout if self.training else 0.0
        if impl == "chunked":
            out = self._chunked(q, k, v, key_padding_mask, gidx, p)
        else:
            keep = key_padding_mask if key_padding_mask is not None else torch.ones(B, L, dtype=torch.bool,
                                                                                    device=q.device)
            is_global = None
            if gidx is not None:
                is_global = torch.zeros(L, dtype=torch.bool, device=q.device).index_fill(0, gidx, True)
            if impl == "reference":
                out = self._dense(q, k, v, self.mask_mod(keep, is_global), p)
            else:
                keep = unmask_empty_rows(keep)  # a fully padded element is zeroed below
                compiled = (q.device.type == "cuda") if self.compile == "auto" else bool(self.compile)
                out = masked_attention(q, k, v, self.mask_mod(keep, is_global), impl="flex", compiled=compiled)
        return zero_fully_masked_rows(out, key_padding_mask)

    @staticmethod
    def _dense(q, k, v, mask_mod, p):
        """Dense (L, L) mask + fp32 math reference; rows that see no key give zeros."""
        B, H, L, _ = q.shape
        allowed = dense_mask(mask_mod, B, L, L, q.device)  # (B, 1, L, L)
        bias = torch.zeros(allowed.shape, dtype=torch.float32, device=q.device).masked_fill(~allowed, _NEG)
        out = softmax_attention_ref(q, k, v, dropout_p=p, training=p > 0, bias=bias)
        return torch.where(allowed.any(-1, keepdim=True), out, torch.zeros((), dtype=out.dtype, device=out.device))

    # ------------------------------------------------------------------ chunked
    def _chunked(self, q, k, v, key_padding_mask, gidx, p):
        B, H, L, d = q.shape
        work = torch.float64 if q.dtype == torch.float64 else torch.float32
        scale = d ** -0.5
        c, nbefore, nafter = self._geometry(L)
        nb = -(-L // c)
        Lp = nb * c
        front, back = nbefore * c, Lp - L + nafter * c
        span = (nbefore + 1 + nafter) * c
        dev = q.device
        G = 0 if gidx is None else gidx.numel()

        # keys/values of query block n: [the G global keys ‖ key blocks n - nbefore .. n + nafter], gathered
        # once per block on the (small) K/V side so that the scores come out of one matmul already in their
        # final (B, H, nb, c, G + span) layout (no concatenation of score tensors).
        nw = nbefore + 1 + nafter  # key blocks per query block

        def gather(x):  # (B, H, L, d) -> (B, H, nb, G + span, d); slices + one cat (cheaper than unfold's backward)
            xp = F.pad(x, (0, 0, front, back)).view(B, H, nb + nw - 1, c, d)
            parts = [xp[:, :, j:j + nb] for j in range(nw)]
            if G:
                parts.insert(0, x.index_select(2, gidx)[:, :, None].expand(B, H, nb, G, d))
            return torch.cat(parts, dim=3) if len(parts) > 1 else parts[0]

        qb = F.pad(q, (0, 0, 0, Lp - L)).view(B, H, nb, c, d)  # (B, H, nb, c, d)
        kb, vb = gather(k), gather(v)
        logits = torch.matmul(qb, kb.transpose(-1, -2))  # (B, H, nb, c, G + span)
        logits = logits.to(work).mul_(scale) if logits.dtype != work else logits.mul_(scale)

        # hidden[b, n, r, t]: key t is not visible to the query at n*c + r. The band relation depends on
        # (row r, column t) only (query n*c + r, key n*c - front + t); key validity on (b, block n, t).
        r = torch.arange(c, device=dev)[:, None]
        t = torch.arange(span, device=dev)[None, :]
        band_off = ~self._pattern_ok(r, t - front)  # (c, span)
        keep = key_padding_mask if key_padding_mask is not None else torch.ones(B, L, dtype=torch.bool, device=dev)
        key_ok = keep
        if gidx is not None:
            key_ok = key_ok.index_fill(1, gidx, False)  # global keys enter through the global part (once)
        key_off = ~F.pad(key_ok, (front, back), value=False).unfold(1, span, c)  # (B, nb, span)
        hidden = band_off[None, None] | key_off[:, :, None, :]  # (B, nb, c, span)
        if G:
            hidden_g = (~keep.index_select(1, gidx))[:, None, None, :].expand(B, nb, c, G)
            hidden = torch.cat([hidden_g, hidden], dim=-1)  # (B, nb, c, G + span)
        hidden = hidden[:, None]  # (B, 1, nb, c, G + span)
        # Hidden keys get exp(-1e10 - max) = 0 exactly, so the softmax needs no "* allowed" pass over the
        # scores; only a row that sees no key at all (softmax uniform over hidden keys) must output zeros,
        # which is done on the (L, d) output below.
        probs = torch.softmax(logits.masked_fill_(hidden, _NEG), dim=-1)
        if p > 0.0:
            probs = cpu_friendly_dropout(probs, p)
        out = torch.matmul(probs.to(v.dtype), vb)  # (B, H, nb, c, d)
        row_ok = ~hidden.all(dim=-1, keepdim=True)  # (B, 1, nb, c, 1)
        out = torch.where(row_ok, out, torch.zeros((), dtype=out.dtype, device=dev))
        out = out.reshape(B, H, Lp, d)[:, :, :L]  # (B, H, L, d)

        if gidx is not None:
            # global rows attend to every real key: (G, L) dense, then overwrite those rows
            out_g = softmax_attention_ref(q.index_select(2, gidx), k, v, key_padding_mask, dropout_p=p,
                                          training=p > 0)  # (B, H, G, d)
            out = out.index_copy(2, gidx, out_g.to(out.dtype))
        return out


@register_attention("longformer")
class LongformerAttention(LongformerAttentionBase):
    """Sliding window of ``window`` tokens plus ``global_tokens`` (tied projections); see the module docstring."""

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int, dropout: float = 0.0, window: int = 512,
                 global_tokens=(0,), window_convention: str = "hf", impl: str = "auto", compile="auto"):
        super().__init__()
        left, right = band_sides(window, window_convention)
        self.window, self.window_convention = int(window), window_convention
        self._setup(pattern=("band", left, right), global_tokens=global_tokens, dropout=dropout, impl=impl,
                    compile=compile)

    def extra_repr(self) -> str:
        return (f"window={self.window} ({self.window_convention}), global_tokens={list(self.global_tokens)}, "
                f"impl={self.impl}")


@register_attention("local")
class LocalAttention(LongformerAttention):
    """Local attention without global tokens: contiguous blocks of ``block_size`` (LRA) or a ``window`` band.

    Exactly one of ``block_size`` and ``window`` is set (the other null)."""

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int, dropout: float = 0.0,
                 block_size: int | None = 50, window: int | None = None, window_convention: str = "hf",
                 impl: str = "auto", compile="auto"):
        AttentionBackend.__init__(self)
        if (block_size is None) == (window is None):
            raise ValueError(f"attention=local needs exactly one of block_size and window (got block_size="
                             f"{block_size}, window={window}); set the other to null")
        if block_size is not None:
            if int(block_size) < 1:
                raise ValueError(f"attention.block_size={block_size} must be >= 1")
            pattern = ("blocks", int(block_size))
        else:
            pattern = ("band", *band_sides(window, window_convention))
        self.window, self.window_convention, self.block_size = window, window_convention, block_size
        self._setup(pattern=pattern, global_tokens=(), dropout=dropout, impl=impl, compile=compile)

    def extra_repr(self) -> str:
        what = (f"block_size={self.block_size}" if self.block_size is not None
                else f"window={self.window} ({self.window_convention})")
        return f"{what}, impl={self.impl}"
