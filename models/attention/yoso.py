"""YOSO attention (Zeng et al., ICML 2021, arXiv:2111.09714): ``yoso_e`` (expectation) and ``yoso`` (LSH).

Both backends, per head (``shared/reference/models.md`` §4):

1. q, k are L2-normalised per row (fp32 whatever the input dtype; fp64 stays fp64);
2. cumulation: ``yoso_e`` computes ``E·V`` with ``E_ij = (1 − arccos(q̂_i·k̂_j)/π)^τ`` (the collision
   probability of a τ-bit SimHash code); ``yoso`` samples it with ``num_hash`` τ-bit fast-hash codes,
   ``out_i = (1/H) Σ_h Σ_{j: code_h(k_j) = code_h(q_i)} v_j`` — an estimate of ``E·V`` (see below).
   Each has ``impl: auto | reference | triton``: ``yoso_e``'s Triton path streams over key tiles without
   forming E (:mod:`kernels.yoso.expectation`), ``yoso``'s hashes and bucket-sums (:mod:`kernels.yoso.kernel`);
3. each output row is L2-normalised (no softmax denominator); optionally ``+ Conv2d(H, H, (w, 1))`` over
   ``V·mask`` (depthwise along the sequence, ``conv_window`` w odd, no bias) — both as HF/mlpen;
4. the result is cast back to v's dtype.

The unnormalised cumulation of step 2 is exposed as ``backend.cumulation(q, k, v, key_padding_mask)`` (tests
check that the LSH estimate converges to ``E·V``).

Deviations from HF transformers 4.57.6 ``YosoSelfAttention`` / mlpen v1, all deliberate:

* **Padding is honoured**: masked keys contribute nothing and masked query rows are 0 before the shared block
  applies its mask mode. HF turns the 0/1 mask into ``int(1 + m/10000) = 1`` and so ignores it (the conv branch
  does see ``V·mask``). On unpadded inputs the two agree (parity test).
* ``q̂·k̂`` is clamped to [−1, 1] before arccos (HF can return NaN when rounding pushes it past 1).
* q, k are normalised in eval mode too (HF/mlpen skip it in LSH eval). Sign hashes are scale-free, so the
  forward output is identical.
* Head dims are not padded to 32 for the cumulation: the hash works in width ``hash_dim(d)`` = next power of
  two ≥ 32 (zero-padded, exactly what HF's padding does to the hash) and the Triton kernels take any value
  width. Head dims that are not powers of two (e.g. 48) are padded to the next power of two; HF's kernel
  requires a power of two. YOSO-E needs no padding at all (arccos of a dot product is width-free).
* The Dmat diagonals come from torch's RNG (seed with ``torch.manual_seed``) instead of ``at::randint`` inside
  the CUDA op; the hash itself is CUDA ``fast_hash`` bit for bit (reference) or up to sign ties (Triton).
* ``yoso`` samples in eval mode as well (HF and mlpen do too: ``use_expectation`` is a static switch, not a
  train/eval one) — evaluation is stochastic; use ``yoso_e`` for a deterministic model.
* Attention dropout: HF builds ``attention_probs_dropout`` but never applies it; there is no attention matrix
  to drop, so ``dropout`` must be 0.0 (refused otherwise rather than silently ignored).
* ``backward: exact`` (``yoso_e`` only) is ours: the analytic derivative of E with ``1 − s²`` clamped at 1e-6.
  mlpen v2 instead multiplies ``s`` by 0.98 before arccos and differentiates with autograd, which also changes
  the forward; we keep the forward of v1/HF.

Is the LSH estimate unbiased for ``E·V``? Exactly so for independent Gaussian hyperplanes (tested). fast_hash
(HF/mlpen, reproduced here) takes the τ bits of a code from *orthogonal* directions of one random Hadamard
rotation, which lowers the collision rate below ``(1 − θ/π)^τ``: measured at d = 32 (400–3000 draws),
τ = 4: −1 to −10 % relative; τ = 8: −10 to −60 % for near-orthogonal pairs (cos ≈ 0: 0.0024 vs 0.0039). A
Haar-random rotation shows the same deficit, so it is the hash family's, not the port's. YOSO-E is therefore
the idealised limit of ``yoso``, not its exact expectation; the gap grows with τ/d.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels.yoso.function import IMPLS, triton_unavailable_reason, yoso_lsh
from kernels.yoso.reference import YosoExpectation, hash_dim, num_parts
from models.attention.base import AttentionBackend, Capabilities, register_attention
from models.attention.nystrom import depthwise_seq_conv

BACKWARD_MODES = ("surrogate", "exact")


def _flat_mask(key_padding_mask: torch.Tensor | None, H: int) -> torch.Tensor | None:
    """(B, L) bool -> (B·H, L) bool (the same mask for every head)."""
    if key_padding_mask is None:
        return None
    B, L = key_padding_mask.shape
    return key_padding_mask[:, None, :].expand(B, H, L).reshape(B * H, L)


class _YosoBase(AttentionBackend):
    """Shared parts: option checks, ``impl`` resolution and refusal, q/k normalisation, output normalisation
    and the optional conv."""

    def __init__(self, *, num_heads: int, head_dim: int, hash_code_len: int, impl: str,
                 conv_window: int | None, dropout: float):
        super().__init__()
        if impl not in ("auto",) + IMPLS:
            raise ValueError(f"impl={impl!r}; choose auto, reference or triton")
        if dropout != 0.0:
            raise ValueError(f"attention={self.name}: YOSO has no attention weights to drop (HF defines the "
                             f"dropout and never applies it); set attention.dropout=0.0, got {dropout}")
        if not isinstance(hash_code_len, int) or hash_code_len < 1:
            raise ValueError(f"hash_code_len must be a positive int, got {hash_code_len!r}")
        self.num_heads, self.head_dim, self.hash_code_len, self.impl = num_heads, head_dim, hash_code_len, impl
        self.impl_used: str | None = None  # which implementation the last forward ran
        self.conv = None
        if conv_window is not None:
            if not isinstance(conv_window, int) or conv_window < 1 or conv_window % 2 == 0:
                raise ValueError(f"conv_window must be a positive odd int or null, got {conv_window!r} "
                                 "(an even window changes the length: HF's padding is window // 2)")
            self.conv = nn.Conv2d(num_heads, num_heads, kernel_size=(conv_window, 1),
                                  padding=(conv_window // 2, 0), bias=False, groups=num_heads)

    @staticmethod
    def _work(q):
        return torch.float64 if q.dtype == torch.float64 else torch.float32

    def _resolve_impl(self, q: torch.Tensor) -> str:
        """``auto``: triton on CUDA when Triton can run there and q is not fp64, else the reference. An
        explicit impl is kept: :meth:`not_supported_reasons` refuses a triton that cannot run."""
        if self.impl != "auto":
            return self.impl
        if q.device.type == "cuda" and q.dtype != torch.float64 and triton_unavailable_reason(q.device) is None:
            return "triton"
        return "reference"

    def not_supported_reasons(self, q):
        reasons = super().not_supported_reasons(q)
        if self._resolve_impl(q) == "triton":
            why = triton_unavailable_reason(q.device)
            if why:
                reasons.append(f"impl=triton: {why}")
            if q.dtype == torch.float64:
                reasons.append("the Triton kernels take fp32/bf16/fp16, not fp64 (use impl=reference)")
        return reasons

    def _unit_qk(self, q, k):
        work = self._work(q)
        return F.normalize(q.to(work), p=2.0, dim=-1), F.normalize(k.to(work), p=2.0, dim=-1)

    def _finish(self, cum: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """Row-L2-normalise the cumulation (B, H, L, dv), add the conv branch, cast to v's dtype."""
        out = F.normalize(cum, p=2.0, dim=-1)
        if self.conv is not None:
            vm = v.to(cum.dtype)
            if key_padding_mask is not None:
                vm = torch.where(key_padding_mask[:, None, :, None], vm, torch.zeros((), dtype=vm.dtype,
                                                                                  device=vm.device))
            w = self.conv.weight.to(vm.dtype)  # (H, 1, w, 1): depthwise over the sequence axis
            out = out + depthwise_seq_conv(vm, w, self.conv.padding)  # CPU: Toeplitz GEMMs (see nystrom)
        return out.to(v.dtype)

    def forward(self, q, k, v, key_padding_mask=None):
        self.check(q)
        cum = self.cumulation(q, k, v, key_padding_mask)
        return self._finish(cum, v, key_padding_mask)


@register_attention("yoso_e")
class YosoEAttention(_YosoBase):
    """YOSO-E: the expectation of YOSO's sampling, ``E·V`` with ``E = (1 − arccos(q̂·k̂)/π)^τ``; O(L²) work.

    ``impl: reference`` (:class:`kernels.yoso.reference.YosoExpectation`): with the surrogate backward, E
    (B·H·L² fp32) is kept for the backward when it fits 256 MiB (HF keeps it always); larger problems and
    ``backward: exact`` work in query chunks and recompute E. ``impl: triton``
    (:mod:`kernels.yoso.expectation`): streaming kernels that never form E (O(L·d) memory), recomputing it
    tile by tile in the backward; fp32 arithmetic, fp32/bf16/fp16 inputs, head dims ≤ 256. ``auto`` picks
    triton on CUDA when Triton is importable (and the input is not fp64), the reference otherwise;
    ``impl_used`` records which one the last forward ran. An explicit ``triton`` that cannot run (CPU without
    TRITON_INTERPRET=1, fp64) is refused with the reason.

    Options: ``hash_code_len`` τ (the exponent), ``backward`` ``surrogate`` (paper/HF: ∂E/∂s ≈ (τ/2)·E) or
    ``exact``, ``impl``, ``conv_window`` (odd int or null), ``dropout`` (must be 0.0).
    """

    capabilities = Capabilities(exact=False, notes=("YOSO-E: deterministic expectation of the LSH sampler",
                                                    "output rows are L2-normalised (no softmax)"))
    reference = None

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int, hash_code_len: int = 12,
                 backward: str = "surrogate", impl: str = "auto", conv_window: int | None = None,
                 dropout: float = 0.0):
        super().__init__(num_heads=num_heads, head_dim=head_dim, hash_code_len=hash_code_len, impl=impl,
                         conv_window=conv_window, dropout=dropout)
        if backward not in BACKWARD_MODES:
            raise ValueError(f"backward={backward!r}; choose one of {BACKWARD_MODES}")
        self.backward_mode = backward

    def not_supported_reasons(self, q):
        reasons = super().not_supported_reasons(q)
        if self._resolve_impl(q) == "triton" and triton_unavailable_reason(q.device) is None:
            from kernels.yoso.expectation import MAX_DIM
            if q.shape[-1] > MAX_DIM:
                reasons.append(f"the YOSO-E Triton kernels take head dims ≤ {MAX_DIM}, got {q.shape[-1]} "
                               "(use impl=reference)")
        return reasons

    def cumulation(self, q, k, v, key_padding_mask=None):
        """Unnormalised ``E·V`` (B, H, L, dv) in fp32 (fp64 for fp64 inputs); masked query rows are 0."""
        self.check(q)
        B, H, L, d = q.shape
        Lk, dv = k.shape[2], v.shape[-1]
        impl = self._resolve_impl(q)
        qn, kn = self._unit_qk(q, k)
        m = _flat_mask(key_padding_mask, H)
        qf, kf, vf = qn.reshape(B * H, L, d), kn.reshape(B * H, Lk, d), v.reshape(B * H, Lk, dv)  # (B·H, L, ·)
        if impl == "triton":
            from kernels.yoso.expectation import yoso_e_triton  # imports Triton and registers lra:: ops
            out = yoso_e_triton(qf, kf, vf, m, m, self.hash_code_len, self.backward_mode)  # v read in its dtype
        else:
            out = YosoExpectation.apply(qf, kf, vf, m, m, self.hash_code_len, self.backward_mode)
        self.impl_used = impl
        return out.reshape(B, H, L, dv)

    def extra_repr(self):
        return (f"hash_code_len={self.hash_code_len}, backward={self.backward_mode}, impl={self.impl}, "
                f"conv={self.conv is not None}")


@register_attention("yoso")
class YosoAttention(_YosoBase):
    """YOSO with LSH sampling: ``num_hash`` τ-bit fast-hash codes per (batch, head), bucket cumulation, the
    surrogate backward of HF/mlpen v1. O(L·num_hash·d) work; bucket tables of ``B·H·2^τ·d_v`` fp32 per hash.

    Options: ``num_hash``, ``hash_code_len`` τ, ``lsh_backward`` (true: LSH-estimated gradients as the LRA
    configs; false: HF's dense YOSO-E surrogate backward, O(L²)), ``impl`` ``auto`` (Triton on CUDA when
    Triton is importable and the input is not fp64, the PyTorch reference otherwise, as ``yoso_e``) |
    ``reference`` | ``triton`` (on CPU only with TRITON_INTERPRET=1; refused with the reason when it cannot run),
    ``hash_group`` (hashes per bucket table; null = as many as fit in 256 MiB), ``conv_window``, ``dropout``.
    ``impl_used`` records which implementation the last forward ran.
    """

    capabilities = Capabilities(exact=False, notes=("stochastic: fresh hash draws every call (eval too)",
                                                    "output rows are L2-normalised (no softmax)"))
    reference = "yoso_e"

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int, num_hash: int = 32,
                 hash_code_len: int = 12, lsh_backward: bool = True, impl: str = "auto",
                 hash_group: int | None = None, conv_window: int | None = None, dropout: float = 0.0):
        super().__init__(num_heads=num_heads, head_dim=head_dim, hash_code_len=hash_code_len, impl=impl,
                         conv_window=conv_window, dropout=dropout)
        if not isinstance(num_hash, int) or num_hash < 1:
            raise ValueError(f"num_hash must be a positive int, got {num_hash!r}")
        if hash_code_len > 24:
            raise ValueError(f"hash_code_len={hash_code_len} > 24: the bucket table has 2^τ rows per hash")
        if hash_code_len > hash_dim(head_dim):
            raise ValueError(f"hash_code_len={hash_code_len} exceeds the hash width {hash_dim(head_dim)}")
        if hash_group is not None and (not isinstance(hash_group, int) or hash_group < 1):
            raise ValueError(f"hash_group must be a positive int or null, got {hash_group!r}")
        self.num_hash, self.lsh_backward, self.hash_group = num_hash, lsh_backward, hash_group
        self.num_parts = num_parts(num_hash, hash_code_len, hash_dim(head_dim))

    def cumulation(self, q, k, v, key_padding_mask=None, *, dmat=None, codes=None):
        """Unnormalised LSH cumulation (B, H, L, dv), fp32 (fp64 for fp64 inputs on the reference path).

        ``dmat`` (B·H, 3, parts, hash_dim) fixes the hash draw; ``codes`` ((B·H, L, num_hash) int32 twice)
        skips hashing. By default a fresh Dmat is drawn from torch's RNG.
        """
        self.check(q)
        B, H, L, d = q.shape
        Lk, dv = k.shape[2], v.shape[-1]
        impl = self._resolve_impl(q)
        qn, kn = self._unit_qk(q, k)
        m = _flat_mask(key_padding_mask, H)
        vv = v if impl == "triton" and v.dtype != torch.float64 else v.to(self._work(q))
        out, _ = yoso_lsh(qn.reshape(B * H, L, d), kn.reshape(B * H, Lk, d), vv.reshape(B * H, Lk, dv), m, m,
                          num_hash=self.num_hash, hash_code_len=self.hash_code_len, impl=impl, dmat=dmat,
                          codes=codes, lsh_backward=self.lsh_backward, hash_group=self.hash_group)
        self.impl_used = impl
        return out.reshape(B, H, L, dv)

    def extra_repr(self):
        return (f"num_hash={self.num_hash}, hash_code_len={self.hash_code_len}, impl={self.impl}, "
                f"lsh_backward={self.lsh_backward}, conv={self.conv is not None}")
