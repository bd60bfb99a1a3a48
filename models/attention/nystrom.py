"""Nyströmformer attention: segment-mean landmarks, an iterative pseudo-inverse, a depthwise conv skip.

Xiong et al., "Nyströmformer" (arXiv:2102.03902); semantics of ``mlpen/Nystromformer:LRA/code/
attention_nystrom.py`` and HF ``NystromformerSelfAttention`` (``shared/reference/models.md`` §3).

With Q, K, V (B, H, N, d) and m landmarks Q̃, K̃ (B, H, m, d) (segment means), logits q·k/√d (mlpen/HF
scale Q and K by d^-1/4 each; segment means commute with that scaling, so we scale the logits instead)::

    F  = softmax(Q K̃ᵀ)              (N, m)  landmark keys
    A  = softmax(Q̃ K̃ᵀ)              (m, m)
    Bm = softmax(Q̃ Kᵀ + key mask)    (m, N)  the only key-masked kernel (as LRA/HF)
    out = F · pinv(A) · (Bm · V)  [+ depthwise conv over V·mask]

Computed as two attention calls (models.md §3.3): ``Bm·V = SDPA(Q̃, K, V, key mask)`` and, with
``W = pinv(A)·(Bm·V)`` (m, d), ``out = SDPA(Q, K̃, W)``: no (N, N) tensor is ever built and, on GPU with a
fused SDPA kernel, no (N, m) one either. The whole core runs in fp32 (fp64 stays fp64) with autocast off,
as mlpen's LRA harness does; the (m, m) Newton–Schulz pseudo-inverse diverges easily in bf16.

CPU-specific choices (profiled on 2 cores, L 1K-4K, H 2, d 32; on GPU these keep the original calls): the
depthwise conv runs as block-Toeplitz GEMMs instead of oneDNN's slow (K, 1) depthwise kernel
(:func:`depthwise_seq_conv`); an all-True mask is dropped on entry (:func:`_drop_if_all`), so the mask-free
path runs (no mask multiplies, fills or SDPA masks; same values). SDPA itself stays: on CPU it is as fast as
or faster than matmul + softmax for both (m, N) and (N, m) shapes (fwd + bwd at N 4K: 2.0 / 1.8 ms against
3.3 / 2.6 ms). The pseudo-inverse iteration uses half the ops (:func:`iterative_pinv`) on every device; in
eager CPU training the landmark kernel, the pseudo-inverse and W are one autograd node with a hand-written
backward (:class:`_LandmarkCore`: the same values and gradients). Those (m, m) ops remain the largest single
cost of the attention at L 1K (~1.3 ms of ~4 ms per layer, forward + backward, within a training step): the
pseudo-inverse alone is 72 dependent GEMMs of 64 x 64 x 64 (B·H = 2; 75 MFLOP) per layer.

Options (``conf/attention/nystrom.yaml``):

* ``num_landmarks`` m (64). Any length N works: the sequence is padded internally to a multiple of m
  (segments of s = ceil(N/m)·m / m tokens); internal pads never enter a landmark.
* ``segment_means``: ``masked`` (default) — each landmark is the mean over the *real* tokens of its segment
  (sum / count), and landmarks whose segment holds no real token are dropped (masked out of F and A; A's
  rows for them are zero, which the Newton–Schulz iteration keeps block-diagonal, so the result equals
  Nyström over the non-empty landmarks only). Real tokens' outputs then do not depend on what the padded
  positions contain. ``lra`` — mlpen's rule: Q·mask and K·mask, plain mean over the s positions (pads count
  as zeros in the divisor) and every landmark kept (pads-only segments give zero landmarks).
* ``pinv_iterations`` (6) and ``pinv_init``: ``exact`` (default; c = max column sum per (batch, head) =
  ‖A‖₁, T2T-ViT) or ``original`` (c = max column sum over the *whole* batch tensor, as mlpen/HF: an
  example's output then depends on the rest of the batch). Z₀ = Aᵀ/c; Z ← ¼Z(13I − AZ(15I − AZ(7I − AZ))).
* ``conv_kernel`` (35; ``null`` disables): ``Conv2d(H, H, (K, 1), padding=(K//2, 0), groups=H, bias=False)``
  over V·mask (LRA; HF convolves unmasked V), added to the output. K must be odd (same length out).
* ``exact_if_short`` (false): when true and m ≥ N, run exact masked softmax (+ conv) instead, as HF/mlpen
  do when ``num_landmarks == seq_len``. By default the Nyström formula always runs: with m ≥ N every
  non-empty segment holds one token, so the landmarks *are* the tokens and the output equals softmax up
  to the pseudo-inverse iteration error (the exactness test relies on this). ``self.last_path`` records
  ``"nystrom"`` or ``"exact"`` so tests can assert which branch ran.

There is no attention-weight dropout (mlpen and HF apply none in the Nyström branch either).
Mask convention: ``key_padding_mask`` (B, N) bool, True = real token. A batch element with no real token
outputs zeros. :func:`nystrom_attention_ref` is the dense, readable version the tests compare against.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.attention.base import (AttentionBackend, Capabilities, register_attention, unmask_empty_rows,
                                   zero_fully_masked_rows)
from models.attention.math import softmax_attention_ref

PINV_INITS = ("exact", "original")
SEGMENT_MEANS = ("masked", "lra")
_NEG = -1e10  # finite mask value, as LRA


def _drop_if_all(mask: torch.Tensor | None) -> torch.Tensor | None:
    """CPU: None for an all-True mask (same result; the CPU SDPA kernel is ~10 % faster without one). On GPU
    the mask is kept: the check would synchronise."""
    if (mask is not None and mask.device.type == "cpu" and not torch.compiler.is_compiling()
            and bool(mask.all())):
        return None
    return mask


def _pinv_init(a: torch.Tensor, init: str) -> torch.Tensor:
    """Z₀ = Aᵀ / c for the Newton–Schulz pseudo-inverse (see :func:`iterative_pinv`)."""
    if init not in PINV_INITS:
        raise ValueError(f"pinv_init={init!r}; choose one of {PINV_INITS}")
    col_sums = a.sum(dim=-2)  # (..., m)
    if init == "original":
        c = col_sums.max()
    else:
        c = col_sums.amax(dim=-1)[..., None, None]  # (..., 1, 1)
    return a.transpose(-1, -2) / c.clamp_min(torch.finfo(a.dtype).tiny)  # all-zero A (no landmark) -> Z = 0


def iterative_pinv(a: torch.Tensor, iterations: int = 6, init: str = "exact") -> torch.Tensor:
    """Newton–Schulz-type pseudo-inverse of a batch of (m, m) matrices ``a`` (..., m, m) with nonnegative
    entries (softmax rows). ``init``: ``exact`` = per-matrix max column sum, ``original`` = one max over the
    whole tensor (mlpen/HF). Run it in fp32 or fp64. Differentiated by autograd (the readable reference;
    the eager CPU backend runs the same iteration inside :class:`_LandmarkCore`, with a hand-written backward)."""
    z = _pinv_init(a, init)
    # Z <- ¼ Z (13I − AZ(15I − AZ(7I − AZ))) on (batch, m, m) with the "kI − AZ·X" steps as one baddbmm each
    # and ¼ applied after the product (exact: a power of two): 5 ops per iteration instead of 10. The
    # matrices are tiny (m = 64): per-op overhead, not FLOPs, is what this costs.
    lead, m = a.shape[:-2], a.shape[-1]
    eye = torch.eye(m, dtype=a.dtype, device=a.device)
    e7, e13, e15 = 7 * eye, 13 * eye, 15 * eye
    a3, z = a.reshape(-1, m, m), z.reshape(-1, m, m)
    for _ in range(iterations):
        az = torch.bmm(a3, z)
        t = torch.baddbmm(e13, az, torch.baddbmm(e15, az, e7 - az, alpha=-1), alpha=-1)
        z = torch.bmm(z, t) * 0.25
    return z.reshape(*lead, m, m)


def _ns_forward(a: torch.Tensor, z: torch.Tensor, iterations: int):
    """The :func:`iterative_pinv` iterations on (n, m, m) from Z₀ = ``z``, keeping what the backward needs.

    Per iteration (X = A·Zₖ; ¼ folded into the last GEMM's alpha and the kI into beta, exact as powers of two
    and small integers)::

        U = 7I − X;  P = 15I − X·U;  T = ¼(13I − X·P);  Zₖ₊₁ = Zₖ·T

    Returns (Z, [Zₖ, X, U, P, T per iteration])."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    e7 = 7 * eye
    saved = []
    for _ in range(iterations):
        x = torch.bmm(a, z)
        u = e7 - x
        p = torch.baddbmm(eye, x, u, beta=15, alpha=-1)  # 15I − X·U
        t = torch.baddbmm(eye, x, p, beta=3.25, alpha=-0.25)  # ¼(13I − X·P)
        saved += [z, x, u, p, t]
        z = torch.bmm(z, t)
    return z, saved


def _ns_backward(a: torch.Tensor, saved: list, g: torch.Tensor):
    """Reverse mode of :func:`_ns_forward`: G = ∂/∂Z -> (∂A, ∂Z₀). With G = ∂/∂Zₖ₊₁, D = ¼·Zₖᵀ·G, S = Xᵀ·D::

        ∂X = S·Uᵀ − D·Pᵀ − Xᵀ·S;   ∂A += ∂X·Zₖᵀ;   ∂Zₖ = G·Tᵀ + Aᵀ·∂X

    8 GEMMs per iteration; ∂A is None when there are no iterations."""
    da = None
    for i in range(len(saved) - 5, -1, -5):
        z, x, u, p, t = saved[i:i + 5]
        d = torch.bmm(z.mT, g).mul_(0.25)  # ¼ ∂T
        s = torch.bmm(x.mT, d)  # −∂P
        dx = torch.bmm(s, u.mT)
        dx.baddbmm_(d, p.mT, alpha=-1)
        dx.baddbmm_(x.mT, s, alpha=-1)  # ∂U = Xᵀ·S enters ∂X with a minus sign
        da = torch.bmm(dx, z.mT) if da is None else da.baddbmm_(dx, z.mT)
        g = torch.bmm(g, t.mT).baddbmm_(a.mT, dx)
    return da, g


class _LandmarkCore(torch.autograd.Function):
    """W = pinv(A)·(Bm·V) with A = :func:`_landmark_kernel` and the :func:`iterative_pinv` iteration, as one
    autograd node with a hand-written backward (the eager CPU path of :class:`NystromAttention`).

    The forward runs the same ops as the readable path (kernel -> init -> iterations -> GEMM); the backward is
    the exact reverse-mode derivative of those ops (of the 6 iterations, not of the true pseudo-inverse):
    Newton–Schulz by :func:`_ns_backward`, then the init Z₀ = Aᵀ/c (c = max column sum, its gradient split
    evenly over tied maxima as autograd does), the landmark masks, the softmax and the 1/√d logits. Gradients
    equal autograd's up to fp rounding (fp64: 1e-10 relative); forward values are the same (fp32 CPU runs
    matched bitwise). Why: at m = 64, B·H = 2 these are ~120 ops on (m, m) matrices whose cost is per-op and
    per-autograd-node overhead; one node and a leaner backward cut kernel + pseudo-inverse + W forward +
    backward from 1.12 to 1.00 ms (pseudo-inverse alone: 1.02 -> 0.91 ms; 2 threads). Not twice differentiable.

    q_l, k_l, bm_v: (B, H, m, d); lm_ok: (B, m) bool or None (every landmark non-empty) -> (B, H, m, d).
    """

    @staticmethod
    def forward(ctx, q_l, k_l, bm_v, lm_ok, iterations: int, init: str):
        B, H, m, d = q_l.shape
        ql, kl, bv = q_l.reshape(-1, m, d), k_l.reshape(-1, m, d), bm_v.reshape(-1, m, d)
        logits = torch.bmm(ql, kl.mT).div_(math.sqrt(d))  # (n, m, m), n = B·H
        okf = masked = None
        if lm_ok is not None:
            masked = ~lm_ok[:, None, None, :].expand(B, H, 1, m).reshape(-1, 1, m)  # (n, 1, m) empty landmark keys
            logits.masked_fill_(masked, _NEG)
            okf = (lm_ok[:, None, :] & lm_ok[:, :, None]).to(q_l.dtype)  # (B, m, m): row and column non-empty
            okf = okf[:, None].expand(B, H, m, m).reshape(-1, m, m)
        sm = torch.softmax(logits, dim=-1)
        a = sm if okf is None else sm * okf
        col_sums = a.sum(dim=-2)  # (n, m)
        mx = col_sums.max() if init == "original" else col_sums.amax(dim=-1)[:, None, None]
        c = mx.clamp_min(torch.finfo(a.dtype).tiny)
        z0 = a.mT / c
        z, saved = _ns_forward(a, z0, iterations)
        ctx.init, ctx.shape = init, (B, H, m, d)
        ctx.save_for_backward(ql, kl, bv, sm, a, col_sums, mx, c, z0, z, okf, masked, *saved)
        return torch.bmm(z, bv).view(B, H, m, d)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gw):
        ql, kl, bv, sm, a, col_sums, mx, c, z0, z, okf, masked, *saved = ctx.saved_tensors
        B, H, m, d = ctx.shape
        gw = gw.reshape(-1, m, d)
        dbv = torch.bmm(z.mT, gw)
        da, g = _ns_backward(a, saved, torch.bmm(gw, bv.mT))  # g: ∂Z₀
        da = g.mT / c if da is None else da.add_(g.mT / c)  # Z₀ = Aᵀ / c
        dc = -(g * z0).sum(dim=(-2, -1)) / c.reshape(-1)  # (n,) ∂c per matrix
        dc = dc.sum() if ctx.init == "original" else dc  # one c for the whole tensor
        dc = dc * (mx.reshape(-1) >= torch.finfo(a.dtype).tiny)  # clamp_min
        ties = col_sums == mx.reshape(-1, 1)  # (n, m): max column sums
        cnt = ties.sum() if ctx.init == "original" else ties.sum(dim=-1)
        da.add_((ties * (dc / cnt).reshape(-1, 1))[:, None, :])  # amax, then the column sum
        if okf is not None:
            da.mul_(okf)
        dlog = torch._softmax_backward_data(da, sm, -1, sm.dtype)
        if masked is not None:  # as autograd's masked_fill backward (also clears inf·0 of an example without landmarks)
            dlog.masked_fill_(masked, 0.0)
        dlog.div_(math.sqrt(d))
        return (torch.bmm(dlog, kl).view(B, H, m, d), torch.bmm(dlog.mT, ql).view(B, H, m, d),
                dbv.view(B, H, m, d), None, None, None)


def _landmark_core(q_l, k_l, bm_v, lm_ok, iterations: int, init: str) -> torch.Tensor:
    """W = pinv(A)·(Bm·V) (B, H, m, d), A = :func:`_landmark_kernel`. Eager CPU: :class:`_LandmarkCore` (same
    values, leaner backward). GPU and torch.compile: the plain ops (launch counts there are untested; Inductor
    fuses the loop itself)."""
    if q_l.device.type != "cpu" or torch.compiler.is_compiling():
        return iterative_pinv(_landmark_kernel(q_l, k_l, lm_ok), iterations, init) @ bm_v
    return _LandmarkCore.apply(q_l, k_l, bm_v, _drop_if_all(lm_ok), iterations, init)


_CONV_BLOCK_MIN = 16  # CPU depthwise conv: output rows per Toeplitz block are max(K − 1, this)


def depthwise_seq_conv(x: torch.Tensor, weight: torch.Tensor, padding) -> torch.Tensor:
    """``Conv2d(H, H, (K, 1), padding=(K//2, 0), groups=H, bias=False)`` of x (B, H, N, d), K odd: each head's
    K-tap filter along the sequence, the same for every feature column. Returns (B, H, N, d).

    GPU: that ``F.conv2d`` call (cuDNN). CPU: the same sums as block-Toeplitz matmuls (:func:`_banded_conv`).
    oneDNN's depthwise kernel for (K, 1) filters is slow on this layout (forward + backward at N = 4K, H 2,
    d 32, K 35, 2 threads: NCHW 10 ms, channels-last 3.8 ms, Toeplitz GEMMs 1.7 ms) and its NCHW fp32 weight
    gradient accumulates badly (1.4e-2 relative error against fp64 at that size, 0.2 at K 65, N 300; the
    GEMMs: 4e-7). Values agree with conv2d to fp32 rounding otherwise (only the summation order differs).
    """
    K = weight.shape[2]
    if tuple(padding) != (K // 2, 0) or K % 2 == 0 or tuple(weight.shape[1:]) != (1, K, 1):
        raise ValueError(f"depthwise_seq_conv: odd (K, 1) depthwise weight and padding (K//2, 0) expected, got "
                         f"{tuple(weight.shape)} and {tuple(padding)}")
    if x.device.type != "cpu":
        return F.conv2d(x, weight, padding=padding, groups=weight.shape[0])
    return _banded_conv(x, weight)


def _banded_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise same-length conv along N as one GEMM per head.

    Output rows come in blocks of s ≥ K − 1; block j needs the s + K − 1 padded input rows starting at j·s,
    i.e. padded block j and the first K − 1 rows of block j + 1 (two slices, one cat). With the (s, s + K − 1)
    Toeplitz slab ``T_h[r, c] = w_h[c − r]`` (0 outside the K taps), shared by every block, ``out = T_h ·
    [windows of all blocks side by side]``: (s, s + K − 1) @ (s + K − 1, B·blocks·d) per head.

    s = max(K − 1, 16): the slab's zeros make the GEMM (s + K − 1)/K times the conv's FLOPs, so the smallest
    block the two-slice window allows is fastest (fwd + bwd, H 2, d 32, 2 threads, N 1K / 4K: K 35, s 34 vs 64:
    0.40 / 1.42 ms vs 0.46 / 1.53 ms; K 3, s 16 vs 64: 0.28 / 0.69 vs 0.37 / 1.10 ms). The slab is built as
    [w_h, 0 × s] tiled s times and cut to rows of length s + K − 1 (a shift of one per row), which is cheaper
    forward and backward than gathering taps by index.
    """
    B, H, N, d = x.shape
    K = weight.shape[2]
    s = max(_CONV_BLOCK_MIN, K - 1)
    nb = -(-N // s)
    win = s + K - 1
    xp = F.pad(x, (0, 0, K // 2, (nb + 1) * s - N - K // 2)).view(B, H, nb + 1, s, d)
    xw = torch.cat([xp[:, :, :nb], xp[:, :, 1:, :K - 1]], dim=3)  # (B, H, nb, win, d): block windows
    cols = xw.permute(1, 3, 0, 2, 4).reshape(H, win, B * nb * d)
    # row r of the tiled [w, 0 × s] (period win + 1) read with stride win is w shifted right by r
    slab = F.pad(weight.reshape(H, K), (0, s)).repeat(1, s)[:, :s * win].view(H, s, win)  # (H, s, win)
    out = torch.bmm(slab, cols).view(H, s, B, nb, d).permute(2, 0, 3, 1, 4)  # (B, H, nb, s, d)
    return out.reshape(B, H, nb * s, d)[:, :, :N]


def segment_landmarks(x: torch.Tensor, valid: torch.Tensor | None, num_landmarks: int, mode: str = "masked"):
    """Segment means of ``x`` (B, H, N, d) over m = ``num_landmarks`` contiguous segments.

    ``valid`` (B, N) bool marks real tokens (None: all N are real). The sequence is padded with invalid
    positions to a multiple of m. Returns ``(landmarks (B, H, m, d), landmark_ok (B, m) bool)``; see the module
    docstring for ``mode``.
    """
    B, H, N, d = x.shape
    m = num_landmarks
    Np = -(-N // m) * m
    s = Np // m
    xp = F.pad(x, (0, 0, 0, Np - N))  # (B, H, Np, d); the internal pads are zeros
    if valid is None:
        sums = xp.view(B, H, m, s, d).sum(dim=-2)  # (B, H, m, d)
        counts = torch.tensor([min(max(N - s * j, 0), s) for j in range(m)], device=x.device).expand(B, m)
    else:
        vp = F.pad(valid, (0, Np - N), value=False)  # (B, Np)
        w = vp.to(x.dtype)[:, None, :, None]  # (B, 1, Np, 1)
        sums = (xp * w).view(B, H, m, s, d).sum(dim=-2)  # (B, H, m, d)
        counts = vp.view(B, m, s).sum(dim=-1)  # (B, m)
    if mode == "lra":
        return sums / s, torch.ones(B, m, dtype=torch.bool, device=x.device)
    if mode != "masked":
        raise ValueError(f"segment_means={mode!r}; choose one of {SEGMENT_MEANS}")
    return sums / counts.clamp_min(1).to(x.dtype)[:, None, :, None], counts > 0


def _landmark_kernel(q_l, k_l, lm_ok):
    """A = softmax(Q̃ K̃ᵀ/√d) over non-empty landmarks; rows and columns of empty landmarks are zero."""
    logits = (q_l @ k_l.transpose(-1, -2)) / math.sqrt(q_l.shape[-1])  # (B, H, m, m)
    ok = lm_ok[:, None, None, :]
    a = torch.softmax(logits.masked_fill(~ok, _NEG), dim=-1)
    return a * ok * lm_ok[:, None, :, None].to(a.dtype)


def nystrom_attention_ref(q, k, v, key_padding_mask=None, *, num_landmarks: int, pinv_iterations: int = 6,
                          pinv_init: str = "exact", segment_means: str = "masked", pinv: str = "iterative"):
    """Dense reference of the Nyström formula (no conv): builds F (N, m), A, Bm (m, N) explicitly.

    ``pinv``: ``iterative`` (the same Newton–Schulz iteration) or ``exact`` (``torch.linalg.pinv`` of the
    non-empty block). Work dtype fp32 (fp64 stays fp64). (B, H, N, d) -> (B, H, N, d) in v's dtype.
    """
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v = (t.to(work) for t in (q, k, v))
    B, H, N, d = q.shape
    valid = key_padding_mask if key_padding_mask is not None else torch.ones(B, N, dtype=torch.bool,
                                                                              device=q.device)
    q_l, lm_ok = segment_landmarks(q, valid, num_landmarks, segment_means)
    k_l, _ = segment_landmarks(k, valid, num_landmarks, segment_means)
    scale = 1.0 / math.sqrt(d)
    f = torch.softmax((q @ k_l.transpose(-1, -2) * scale).masked_fill(~lm_ok[:, None, None, :], _NEG), -1)
    f = f * lm_ok[:, None, None, :]  # (B, H, N, m)
    a = _landmark_kernel(q_l, k_l, lm_ok)  # (B, H, m, m)
    bm = torch.softmax((q_l @ k.transpose(-1, -2) * scale).masked_fill(~valid[:, None, None, :], _NEG), -1)
    z = iterative_pinv(a, pinv_iterations, pinv_init) if pinv == "iterative" else torch.linalg.pinv(a)
    out = f @ z @ (bm @ v)  # (B, H, N, d)
    return zero_fully_masked_rows(out, key_padding_mask).to(v.dtype)


@register_attention("nystrom")
class NystromAttention(AttentionBackend):
    """Nyström approximation of softmax attention with m landmarks; see the module docstring."""

    capabilities = Capabilities(exact=False, dtypes=("fp32", "bf16", "fp16"),
                                notes=("core in fp32 with autocast off (fp64 stays fp64)",
                                       "any length: padded internally to a multiple of num_landmarks",
                                       "no attention-weight dropout"))
    reference = "math"

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int, num_landmarks: int = 64,
                 pinv_iterations: int = 6, pinv_init: str = "exact", conv_kernel: int | None = 35,
                 segment_means: str = "masked", exact_if_short: bool = False):
        super().__init__()
        if int(num_landmarks) < 1:
            raise ValueError(f"attention.num_landmarks={num_landmarks} must be >= 1")
        if int(pinv_iterations) < 0:
            raise ValueError(f"attention.pinv_iterations={pinv_iterations} must be >= 0")
        if pinv_init not in PINV_INITS:
            raise ValueError(f"attention.pinv_init={pinv_init!r}; choose one of {PINV_INITS}")
        if segment_means not in SEGMENT_MEANS:
            raise ValueError(f"attention.segment_means={segment_means!r}; choose one of {SEGMENT_MEANS}")
        if conv_kernel is not None and (int(conv_kernel) < 1 or int(conv_kernel) % 2 == 0):
            raise ValueError(f"attention.conv_kernel={conv_kernel} must be a positive odd integer or null "
                             "(an even kernel with padding K//2 changes the sequence length)")
        self.num_heads, self.head_dim = num_heads, head_dim
        self.num_landmarks, self.pinv_iterations, self.pinv_init = int(num_landmarks), int(pinv_iterations), pinv_init
        self.segment_means, self.exact_if_short = segment_means, bool(exact_if_short)
        self.conv = None
        if conv_kernel is not None:
            K = int(conv_kernel)
            self.conv = nn.Conv2d(num_heads, num_heads, kernel_size=(K, 1), padding=(K // 2, 0), groups=num_heads,
                                  bias=False)
        self.last_path: str | None = None

    def extra_repr(self) -> str:
        return (f"num_landmarks={self.num_landmarks}, pinv_iterations={self.pinv_iterations}, "
                f"pinv_init={self.pinv_init}, segment_means={self.segment_means}")

    def _nystrom(self, q, k, v, key_padding_mask):
        q_l, lm_ok = segment_landmarks(q, key_padding_mask, self.num_landmarks, self.segment_means)  # (B, H, m, d)
        k_l, _ = segment_landmarks(k, key_padding_mask, self.num_landmarks, self.segment_means)  # lm_ok: (B, m)
        # Bm·V: the m landmark queries attend over all real keys.
        key_mask = _drop_if_all(unmask_empty_rows(key_padding_mask))
        bm_v = F.scaled_dot_product_attention(
            q_l, k, v, attn_mask=None if key_mask is None else key_mask[:, None, None, :])  # (B, H, m, d)
        w = _landmark_core(q_l, k_l, bm_v, lm_ok, self.pinv_iterations, self.pinv_init)  # pinv(A)·Bm·V (B, H, m, d)
        # F·W: the N queries attend over the non-empty landmark keys, with W as values.
        lm_mask = _drop_if_all(lm_ok if key_padding_mask is None else unmask_empty_rows(lm_ok))  # None: no empty row
        lm_mask = None if lm_mask is None else lm_mask[:, None, None, :]  # (B, 1, 1, m)
        return F.scaled_dot_product_attention(q, k_l, w, attn_mask=lm_mask)  # (B, H, N, d)

    def forward(self, q, k, v, key_padding_mask=None):
        # q, k, v: (B, H, N, d); key_padding_mask: (B, N) bool, True = real token -> (B, H, N, d)
        self.check(q)
        key_padding_mask = _drop_if_all(key_padding_mask)  # CPU, no padding: the mask-free path, same values
        work = torch.float64 if q.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=q.device.type, enabled=False):
            qw, kw, vw = (t.to(work) for t in (q, k, v))
            if self.exact_if_short and self.num_landmarks >= q.shape[-2]:
                self.last_path = "exact"
                out = softmax_attention_ref(qw, kw, vw, key_padding_mask)
            else:
                self.last_path = "nystrom"
                out = self._nystrom(qw, kw, vw, key_padding_mask)
            if self.conv is not None:
                vm = vw if key_padding_mask is None else vw * key_padding_mask[:, None, :, None].to(work)
                out = out + depthwise_seq_conv(vm, self.conv.weight.to(work), self.conv.padding)
            out = zero_fully_masked_rows(out, key_padding_mask)
        return out.to(v.dtype)
