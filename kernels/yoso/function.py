"""YOSO's documented functional API: hashing, LSH cumulation with the surrogate backward, and dispatch
between the PyTorch reference (``impl="reference"``) and the Triton kernels (``impl="triton"``).

Layout: q, k (BH, L, d) unit rows, v (BH, Lk, dv), masks (BH, L) bool (True = real) or None, codes
(BH, L, num_hash) int32 (int64 accepted). The cumulation is returned in fp32 (fp64 for fp64 inputs on the
reference path) and unnormalised; the attention backend (:mod:`models.attention.yoso`) normalises rows
afterwards.

Registered ``torch.library`` custom ops (namespace ``lra``; none mutates its inputs, each returns a new
tensor, one implementation for every device that picks reference or Triton from ``impl``):

* ``lra::yoso_fast_hash(Tensor x, Tensor dmat, int num_hash, int hash_code_len, Tensor? mask, str impl,
  Tensor? rotations) -> Tensor`` — int32 codes (BH, L, num_hash) with CUDA ``fast_hash`` semantics and an
  explicit ``dmat`` (see :func:`kernels.yoso.reference.draw_dmat`), so the reference and the kernel can be
  given the same draw; ``rotations`` (Triton only) reuses one :func:`~kernels.yoso.reference.rotation_matrices`
  composition for q and k. No autograd formula (codes are integers).
* ``lra::yoso_lsh_cumulation(Tensor q_codes, Tensor k_codes, Tensor? q_mask, Tensor? k_mask, Tensor v,
  int hash_code_len, str impl, int? hash_group) -> Tensor`` — ``out_i = (1/H) Σ_h Σ_{j collides, real} v_j``.
  Linear in v; its autograd formula is the exact one (the cumulation with q and k roles swapped).
* ``lra::yoso_lsh_weighted_cumulation(Tensor? q_mask, Tensor q_codes, Tensor q_weight, Tensor? k_mask,
  Tensor k_codes, Tensor k_weight, Tensor value, int hash_code_len, str impl, int? hash_group) -> Tensor`` —
  ``out_i = (1/H) Σ_h Σ_{j collides, real} ⟨qw_i, kw_j⟩ value_j`` (CUDA argument order). Trilinear; exact
  autograd formulas, each another weighted cumulation.
* ``lra::yoso_lsh_cumulation_qkv(Tensor q, Tensor k, Tensor v, Tensor? q_mask, Tensor? k_mask,
  Tensor q_codes, Tensor k_codes, int hash_code_len, str impl, bool lsh_backward, int? hash_group) -> Tensor``
  — the forward of ``lra::yoso_lsh_cumulation`` (q, k enter only through their codes) with YOSO's surrogate
  backward, as HF / mlpen v1: with ``lsh_backward=True`` dV = cumulation with roles swapped, dQ = (τ/2)·weighted
  cumulation of K with weights ⟨G_i, V_j⟩, dK symmetric (all through the two ops above); with
  ``lsh_backward=False`` HF's dense backward, the YOSO-E surrogate gradient in plain PyTorch, O(L²)
  (:func:`kernels.yoso.reference.expectation_backward`). Gradients come back in the inputs' dtypes; codes and
  masks get none.

Each op has a fake (shape-only) kernel that checks shapes and ``impl`` like the real one, so ``torch.compile``
sees each call as one opaque node in the forward graph (and the backward's op calls in the backward graph)
instead of breaking the graph: ``torch.compile(fullgraph=True)`` of :func:`yoso_lsh` with explicit codes or an
explicit ``dmat`` traces forward and backward, and so does the whole ``yoso`` attention backend (tests; the
former autograd.Function broke the graph there, Dynamo refusing one mask tensor passed as both q_mask and
k_mask). Drawing the Dmat (``dmat=None``) is a ``torch.randint`` inside the graph: the same draw as eager
under ``aot_eager``; inductor matched eager in a CPU check, but only ``torch._inductor.config.fallback_random``
promises it.

Python API (same signatures and semantics as before the ops were registered):

* :func:`fast_hash`, :func:`lsh_cumulation`, :func:`lsh_weighted_cumulation` — the first three ops.
* :class:`LSHCumulation` — ``LSHCumulation.apply(q, k, v, q_mask, k_mask, q_codes, k_codes, hash_code_len,
  impl, lsh_backward, hash_group)`` calls ``lra::yoso_lsh_cumulation_qkv`` (formerly an autograd.Function).
* :func:`yoso_lsh` — hash (unless codes are given) + ``lra::yoso_lsh_cumulation_qkv``.

Codes given by the caller (these functions, ``yoso_lsh(codes=...)``) are checked eagerly to lie in
``[0, 2**hash_code_len)`` (ValueError otherwise; skipped while torch.compile traces); the ops themselves do
not check values (a host sync per call).

Tested in ``tests/kernels/test_yoso.py`` (kernel = reference with shared codes, forward and gradients),
``tests/kernels/test_yoso_ops.py`` (``torch.library.opcheck`` of every op with both impls, gradcheck of the
exact formulas, gradients equal to the former autograd.Function, ``torch.compile(fullgraph=True)`` against
eager) and ``tests/test_attention_yoso.py`` (sampling converges to YOSO-E).
"""
from __future__ import annotations

import os

import torch
from torch._subclasses.fake_tensor import is_fake  # no public equivalent

from kernels.yoso import reference as ref

IMPLS = ("reference", "triton")


def triton_unavailable_reason(device: torch.device | str) -> str | None:
    """Why the Triton kernels cannot run on ``device`` (None when they can)."""
    device = torch.device(device)
    try:
        import triton  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the install
        return f"triton is not importable ({e})"
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "Triton kernels need CUDA, or TRITON_INTERPRET=1 for the (slow) CPU interpreter"
    if device.type not in ("cpu", "cuda"):
        return f"no Triton path for device {device.type}"
    return None


def _check_impl(impl: str, device) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r}; choose one of {IMPLS}")
    if impl == "triton":
        reason = triton_unavailable_reason(device)
        if reason:
            raise RuntimeError(reason)


def _check_codes(codes: torch.Tensor, bh: int, length: int, name: str) -> None:
    if codes.dim() != 3 or codes.shape[0] != bh or codes.shape[1] != length:
        raise ValueError(f"{name} must be (BH={bh}, L={length}, num_hash), got {tuple(codes.shape)}")
    if codes.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be int32/int64, got {codes.dtype}")


def _check_code_range(q_codes: torch.Tensor, k_codes: torch.Tensor, hash_code_len: int) -> None:
    """Caller-given codes must lie in [0, 2**τ): the kernels index bucket tables with them unchecked (an
    out-of-range code reads and atomically writes another bucket or past the table). A data-dependent
    check (one host sync per tensor), so eager only: skipped while torch.compile traces and for fake tensors,
    which have no values (explicit codes are a testing feature; hashed codes are in range by construction and
    are not checked)."""
    if torch.compiler.is_compiling():
        return
    for name, codes in (("q_codes", q_codes), ("k_codes", k_codes)):
        if codes.numel() == 0 or is_fake(codes):
            continue
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= 1 << hash_code_len:
            raise ValueError(f"{name} must lie in [0, 2**hash_code_len) = [0, {1 << hash_code_len}) for "
                             f"hash_code_len={hash_code_len}, got values in [{lo}, {hi}]")


def _out_dtype(impl: str, *floats: torch.Tensor) -> torch.dtype:
    """Cumulation output dtype: fp64 when an input is fp64 on the reference path, else fp32."""
    return torch.float64 if impl == "reference" and any(t.dtype == torch.float64 for t in floats) else torch.float32


def _cast_grads(grads, inputs):
    """Gradients in their inputs' dtypes (None stays None)."""
    return tuple(None if g is None else g.to(x.dtype) for g, x in zip(grads, inputs))


# ----------------------------------------------------------------------------------------- lra::yoso_fast_hash
def _check_hash_args(x, dmat, num_hash, hash_code_len, impl):
    if x.dim() != 3 or dmat.dim() != 4 or dmat.shape[0] != x.shape[0] or dmat.shape[1] != 3:
        raise ValueError(f"x (BH, L, d) and dmat (BH, 3, parts, D) expected, got {tuple(x.shape)}, "
                         f"{tuple(dmat.shape)}")
    if dmat.shape[2] * (dmat.shape[3] // hash_code_len) < num_hash or x.shape[2] > dmat.shape[3]:
        raise ValueError(f"dmat {tuple(dmat.shape)} too small for num_hash={num_hash}, τ={hash_code_len}, "
                         f"d={x.shape[2]}")
    _check_impl(impl, x.device)


@torch.library.custom_op("lra::yoso_fast_hash", mutates_args=())
def _fast_hash_op(x: torch.Tensor, dmat: torch.Tensor, num_hash: int, hash_code_len: int,
                  mask: torch.Tensor | None, impl: str, rotations: torch.Tensor | None) -> torch.Tensor:
    _check_hash_args(x, dmat, num_hash, hash_code_len, impl)
    if impl == "triton":
        from kernels.yoso.kernel import fast_hash_triton
        return fast_hash_triton(x, dmat, num_hash, hash_code_len, mask, rotations)
    return ref.fast_hash_ref(x, dmat, num_hash, hash_code_len, mask)


@_fast_hash_op.register_fake
def _(x, dmat, num_hash, hash_code_len, mask, impl, rotations):
    _check_hash_args(x, dmat, num_hash, hash_code_len, impl)
    return x.new_empty((x.shape[0], x.shape[1], num_hash), dtype=torch.int32)


def fast_hash(x: torch.Tensor, dmat: torch.Tensor, num_hash: int, hash_code_len: int,
              mask: torch.Tensor | None = None, *, impl: str = "reference",
              rotations: torch.Tensor | None = None) -> torch.Tensor:
    """int32 codes (BH, L, num_hash) of x (BH, L, d) under dmat (BH, 3, parts, D ≥ d). Masked rows get 0."""
    return torch.ops.lra.yoso_fast_hash(x, dmat, num_hash, hash_code_len, mask, impl, rotations)


# ----------------------------------------------------------------------------------------- lra::yoso_lsh_cumulation
def _check_cumulation_args(q_codes, k_codes, v, impl):
    if v.dim() != 3:
        raise ValueError(f"v must be (BH, Lk, dv), got {tuple(v.shape)}")
    _check_codes(k_codes, v.shape[0], v.shape[1], "k_codes")
    _check_codes(q_codes, v.shape[0], q_codes.shape[1], "q_codes")
    if q_codes.shape[2] != k_codes.shape[2]:
        raise ValueError("q_codes and k_codes need the same num_hash")
    _check_impl(impl, v.device)


def _cumulate(q_codes, k_codes, q_mask, k_mask, v, hash_code_len, impl, hash_group):
    if impl == "triton":
        from kernels.yoso.kernel import lsh_cumulation_triton
        return lsh_cumulation_triton(q_codes, k_codes, q_mask, k_mask, v, hash_code_len, hash_group)
    return ref.lsh_cumulation_ref(q_codes, k_codes, q_mask, k_mask, v, hash_code_len)


@torch.library.custom_op("lra::yoso_lsh_cumulation", mutates_args=())
def _lsh_cumulation_op(q_codes: torch.Tensor, k_codes: torch.Tensor, q_mask: torch.Tensor | None,
                       k_mask: torch.Tensor | None, v: torch.Tensor, hash_code_len: int, impl: str,
                       hash_group: int | None) -> torch.Tensor:
    _check_cumulation_args(q_codes, k_codes, v, impl)
    return _cumulate(q_codes, k_codes, q_mask, k_mask, v, hash_code_len, impl, hash_group)


@_lsh_cumulation_op.register_fake
def _(q_codes, k_codes, q_mask, k_mask, v, hash_code_len, impl, hash_group):
    _check_cumulation_args(q_codes, k_codes, v, impl)
    return v.new_empty((v.shape[0], q_codes.shape[1], v.shape[2]), dtype=_out_dtype(impl, v))


def _lsh_cumulation_setup(ctx, inputs, output):
    q_codes, k_codes, q_mask, k_mask, v, hash_code_len, impl, hash_group = inputs
    ctx.save_for_backward(q_codes, k_codes, q_mask, k_mask)
    ctx.cfg = (hash_code_len, impl, hash_group)
    ctx.v_dtype = v.dtype


def _lsh_cumulation_backward(ctx, grad):
    """Exact: out = C·V with C the masked collision rate, so dV = Cᵀ·G = the cumulation with roles swapped."""
    q_codes, k_codes, q_mask, k_mask = ctx.saved_tensors
    tau, impl, hash_group = ctx.cfg
    dv = None
    if ctx.needs_input_grad[4]:
        dv = torch.ops.lra.yoso_lsh_cumulation(k_codes, q_codes, k_mask, q_mask, grad.contiguous(), tau, impl,
                                               hash_group).to(ctx.v_dtype)
    return None, None, None, None, dv, None, None, None


_lsh_cumulation_op.register_autograd(_lsh_cumulation_backward, setup_context=_lsh_cumulation_setup)


def lsh_cumulation(q_codes, k_codes, q_mask, k_mask, v, hash_code_len: int, *, impl: str = "reference",
                   hash_group: int | None = None) -> torch.Tensor:
    """``(1/H) Σ_h Σ_{j real, colliding} v_j`` per real query; (BH, Lq, dv). Differentiable in v (exactly)."""
    _check_code_range(q_codes, k_codes, hash_code_len)
    return torch.ops.lra.yoso_lsh_cumulation(q_codes, k_codes, q_mask, k_mask, v, hash_code_len, impl, hash_group)


# --------------------------------------------------------------------------- lra::yoso_lsh_weighted_cumulation
def _check_weighted_args(q_codes, q_weight, k_codes, k_weight, value, impl):
    _check_cumulation_args(q_codes, k_codes, value, impl)
    if (q_weight.dim() != 3 or k_weight.dim() != 3 or q_weight.shape[:2] != q_codes.shape[:2]
            or k_weight.shape[:2] != k_codes.shape[:2] or q_weight.shape[2] != k_weight.shape[2]):
        raise ValueError(f"q_weight (BH, Lq, dw) and k_weight (BH, Lk, dw) expected, got "
                         f"{tuple(q_weight.shape)}, {tuple(k_weight.shape)}")


@torch.library.custom_op("lra::yoso_lsh_weighted_cumulation", mutates_args=())
def _lsh_weighted_cumulation_op(q_mask: torch.Tensor | None, q_codes: torch.Tensor, q_weight: torch.Tensor,
                                k_mask: torch.Tensor | None, k_codes: torch.Tensor, k_weight: torch.Tensor,
                                value: torch.Tensor, hash_code_len: int, impl: str,
                                hash_group: int | None) -> torch.Tensor:
    _check_weighted_args(q_codes, q_weight, k_codes, k_weight, value, impl)
    if impl == "triton":
        from kernels.yoso.kernel import lsh_weighted_cumulation_triton
        return lsh_weighted_cumulation_triton(q_mask, q_codes, q_weight, k_mask, k_codes, k_weight, value,
                                              hash_code_len, hash_group)
    return ref.lsh_weighted_cumulation_ref(q_mask, q_codes, q_weight, k_mask, k_codes, k_weight, value,
                                           hash_code_len)


@_lsh_weighted_cumulation_op.register_fake
def _(q_mask, q_codes, q_weight, k_mask, k_codes, k_weight, value, hash_code_len, impl, hash_group):
    _check_weighted_args(q_codes, q_weight, k_codes, k_weight, value, impl)
    return value.new_empty((value.shape[0], q_codes.shape[1], value.shape[2]),
                           dtype=_out_dtype(impl, q_weight, k_weight, value))


def _lsh_weighted_setup(ctx, inputs, output):
    q_mask, q_codes, q_weight, k_mask, k_codes, k_weight, value, hash_code_len, impl, hash_group = inputs
    ctx.save_for_backward(q_mask, q_codes, q_weight, k_mask, k_codes, k_weight, value)
    ctx.cfg = (hash_code_len, impl, hash_group)


def _lsh_weighted_backward(ctx, grad):
    """Exact, each a weighted cumulation (c_ij = masked collision rate): d qw_i = Σ_j c_ij ⟨g_i, val_j⟩ kw_j;
    d kw_j = Σ_i c_ij ⟨val_j, g_i⟩ qw_i; d val_j = Σ_i c_ij ⟨kw_j, qw_i⟩ g_i."""
    q_mask, q_codes, qw, k_mask, k_codes, kw, val = ctx.saved_tensors
    tau, impl, hash_group = ctx.cfg
    need_qw, need_kw, need_val = (ctx.needs_input_grad[i] for i in (2, 5, 6))
    op = torch.ops.lra.yoso_lsh_weighted_cumulation
    g = grad.contiguous()
    dqw = op(q_mask, q_codes, g, k_mask, k_codes, val, kw, tau, impl, hash_group) if need_qw else None
    dkw = op(k_mask, k_codes, val, q_mask, q_codes, g, qw, tau, impl, hash_group) if need_kw else None
    dval = op(k_mask, k_codes, kw, q_mask, q_codes, qw, g, tau, impl, hash_group) if need_val else None
    dqw, dkw, dval = _cast_grads((dqw, dkw, dval), (qw, kw, val))
    return None, None, dqw, None, None, dkw, dval, None, None, None


_lsh_weighted_cumulation_op.register_autograd(_lsh_weighted_backward, setup_context=_lsh_weighted_setup)


def lsh_weighted_cumulation(q_mask, q_codes, q_weight, k_mask, k_codes, k_weight, value, hash_code_len: int, *,
                            impl: str = "reference", hash_group: int | None = None) -> torch.Tensor:
    """``(1/H) Σ_h Σ_{j real, colliding} ⟨qw_i, kw_j⟩ value_j`` per real query; (BH, Lq, dv). Differentiable
    (exactly) in the weights and the value."""
    _check_code_range(q_codes, k_codes, hash_code_len)
    return torch.ops.lra.yoso_lsh_weighted_cumulation(q_mask, q_codes, q_weight, k_mask, k_codes, k_weight, value,
                                                      hash_code_len, impl, hash_group)


# ----------------------------------------------------------------------------------------- lra::yoso_lsh_cumulation_qkv
def _check_qkv_args(q, k, v, q_codes, k_codes, impl):
    if (q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0]
            or v.shape[1] != k.shape[1] or k.shape[2] != q.shape[2]):
        raise ValueError(f"q (BH, Lq, d), k (BH, Lk, d), v (BH, Lk, dv) expected, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    _check_codes(q_codes, q.shape[0], q.shape[1], "q_codes")
    _check_cumulation_args(q_codes, k_codes, v, impl)


@torch.library.custom_op("lra::yoso_lsh_cumulation_qkv", mutates_args=())
def _lsh_cumulation_qkv_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_mask: torch.Tensor | None,
                           k_mask: torch.Tensor | None, q_codes: torch.Tensor, k_codes: torch.Tensor,
                           hash_code_len: int, impl: str, lsh_backward: bool,
                           hash_group: int | None) -> torch.Tensor:
    _check_qkv_args(q, k, v, q_codes, k_codes, impl)
    return _cumulate(q_codes, k_codes, q_mask, k_mask, v, hash_code_len, impl, hash_group)


@_lsh_cumulation_qkv_op.register_fake
def _(q, k, v, q_mask, k_mask, q_codes, k_codes, hash_code_len, impl, lsh_backward, hash_group):
    _check_qkv_args(q, k, v, q_codes, k_codes, impl)
    return v.new_empty((q.shape[0], q.shape[1], v.shape[2]), dtype=_out_dtype(impl, v))


def _lsh_qkv_setup(ctx, inputs, output):
    q, k, v, q_mask, k_mask, q_codes, k_codes, hash_code_len, impl, lsh_backward, hash_group = inputs
    ctx.save_for_backward(q, k, v, q_mask, k_mask, q_codes, k_codes)
    ctx.cfg = (hash_code_len, impl, lsh_backward, hash_group)


def _lsh_qkv_backward(ctx, grad):
    """YOSO's surrogate backward (module docstring), computed in fp32 (fp64 for an fp64 gradient)."""
    q, k, v, q_mask, k_mask, q_codes, k_codes = ctx.saved_tensors
    tau, impl, lsh_backward, hash_group = ctx.cfg
    need_q, need_k, need_v = ctx.needs_input_grad[:3]
    work = torch.float64 if grad.dtype == torch.float64 else torch.float32
    g = grad.to(work).contiguous()
    dq = dk = dv = None
    if not lsh_backward:
        # HF's lsh_backward=False: the dense YOSO-E surrogate gradient (O(L²) memory per query chunk).
        dq, dk, dv = ref.expectation_backward(ref._masked(q, q_mask, work), ref._masked(k, k_mask, work),
                                              ref._masked(v, k_mask, work), q_mask, k_mask,
                                              ref._masked(g, q_mask, work), tau, "surrogate",
                                              needs=(need_q, need_k, need_v))
    else:
        cum, wcum = torch.ops.lra.yoso_lsh_cumulation, torch.ops.lra.yoso_lsh_weighted_cumulation
        if need_v:
            dv = cum(k_codes, q_codes, k_mask, q_mask, g, tau, impl, hash_group)
        if need_q:
            dq = (tau / 2.0) * wcum(q_mask, q_codes, g, k_mask, k_codes, v, k, tau, impl, hash_group)
        if need_k:
            dk = (tau / 2.0) * wcum(k_mask, k_codes, v, q_mask, q_codes, g, q, tau, impl, hash_group)
    dq, dk, dv = _cast_grads((dq, dk, dv), (q, k, v))
    return dq, dk, dv, None, None, None, None, None, None, None, None


_lsh_cumulation_qkv_op.register_autograd(_lsh_qkv_backward, setup_context=_lsh_qkv_setup)


class LSHCumulation:
    """LSH cumulation of v given codes, with the surrogate backward: ``LSHCumulation.apply(q, k, v, q_mask,
    k_mask, q_codes, k_codes, hash_code_len, impl="reference", lsh_backward=True, hash_group=None)`` calls
    ``lra::yoso_lsh_cumulation_qkv`` (this was an autograd.Function before the op was registered).

    Gradients flow to q, k (through the surrogate) and v; they are returned in the inputs' dtypes.
    """

    @staticmethod
    def apply(q, k, v, q_mask, k_mask, q_codes, k_codes, hash_code_len: int, impl: str = "reference",
              lsh_backward: bool = True, hash_group: int | None = None) -> torch.Tensor:
        _check_code_range(q_codes, k_codes, hash_code_len)
        return torch.ops.lra.yoso_lsh_cumulation_qkv(q, k, v, q_mask, k_mask, q_codes, k_codes, hash_code_len,
                                                     impl, lsh_backward, hash_group)


def yoso_lsh(q, k, v, q_mask=None, k_mask=None, *, num_hash: int, hash_code_len: int, impl: str = "reference",
             dmat: torch.Tensor | None = None, codes: tuple[torch.Tensor, torch.Tensor] | None = None,
             lsh_backward: bool = True, hash_group: int | None = None):
    """Unnormalised YOSO cumulation (BH, Lq, dv) and the codes used, ``(out, (q_codes, k_codes))``.

    q, k must already be unit rows (only their signs matter for hashing, but the surrogate backward uses
    their values). ``codes`` skips hashing (checked to lie in [0, 2^τ)); otherwise ``dmat`` (default: a fresh
    :func:`draw_dmat` from torch's RNG) is shared by q and k, as in CUDA ``fast_hash``.
    """
    BH, _, d = q.shape
    if codes is None:
        if dmat is None:
            dmat = ref.draw_dmat(BH, num_hash, hash_code_len, ref.hash_dim(d), device=q.device)
        rot = None
        if impl == "triton":
            rot = ref.rotation_matrices(dmat).contiguous()
        with torch.no_grad():
            q_codes = fast_hash(q.detach(), dmat, num_hash, hash_code_len, q_mask, impl=impl, rotations=rot)
            k_codes = fast_hash(k.detach(), dmat, num_hash, hash_code_len, k_mask, impl=impl, rotations=rot)
    else:
        q_codes, k_codes = codes
        _check_code_range(q_codes, k_codes, hash_code_len)
    out = torch.ops.lra.yoso_lsh_cumulation_qkv(q, k, v, q_mask, k_mask, q_codes, k_codes, hash_code_len, impl,
                                                lsh_backward, hash_group)
    return out, (q_codes, k_codes)
