"""Streaming Triton kernels for YOSO-E (the expectation of YOSO's sampling), forward and backward.

``out_i = Σ_j E_ij v_j`` with ``E_ij = (1 − arccos(clamp(q̂_i·k̂_j, −1, 1))/π)^τ`` on unit rows q̂, k̂,
computed tile by tile without ever forming E (``shared/reference/models.md`` §4.5 item 3(c)): flash-attention's
loop without its online normaliser, since YOSO-E has no softmax denominator. Same semantics as
:class:`kernels.yoso.reference.YosoExpectation`: masked keys contribute nothing, masked query rows are 0, and
every gradient is 0 on masked rows. Memory is O(L·(d + d_v)) instead of the reference's O(L²) chunks.

Supported
    * q (BH, Lq, d), k (BH, Lk, d), v (BH, Lk, d_v) in fp32, bf16 or fp16 (any strides); masks (BH, L) bool
      (True = real token) or None, separately for queries and keys; Lq ≠ Lk; any length (masked tails);
      d, d_v ≤ 256 (padded to a power-of-two tile ≥ 16 with masks); 1 ≤ τ ≤ 127 (``hash_code_len``).
    * All arithmetic in fp32: inputs are cast on load, both products are fp32 ``tl.dot`` with
      ``input_precision="ieee"`` (TF32 would put ~1e-3 into q̂·k̂, which arccos amplifies near ±1); output and
      gradients come back in fp32 (the autograd path casts gradients to the inputs' dtypes).
    * Backward, both modes of the reference: ``surrogate`` (HF / mlpen v1, ∂E/∂s := (τ/2)·E) and ``exact``
      (τ p^{τ−1} / (π √max(1 − s², 1e-6)), p = 1 − arccos(s)/π, as
      :func:`kernels.yoso.reference.expectation_backward`). With W = (G Vᵀ) ⊙ ∂E/∂s: dQ = W K, dK = Wᵀ Q,
      dV = Eᵀ G.
Kernels
    * ``_yoso_e_fwd_kernel``: one program per (query tile, batch·head); loops over key tiles.
    * ``_yoso_e_bwd_dq_kernel`` / ``_yoso_e_bwd_dkdv_kernel``: FlashAttention-2's split — one kernel over
      query tiles accumulating dQ, one over key tiles accumulating dK and dV, each recomputing E (and ∂E/∂s)
      from q·kᵀ. No atomics: every output tile has one owner, so results are bitwise repeatable.
    * arccos is a Cephes ``asinf`` polynomial (peak relative error 2.5e-7; libdevice ``acos`` has no
      interpreter path); p^τ is unrolled binary exponentiation (τ is a compile-time constant).
API
    ``torch.ops.lra.yoso_e_cumulation(q, k, v, q_mask, k_mask, hash_code_len, mode)`` → fp32 (BH, Lq, d_v)
    and ``torch.ops.lra.yoso_e_cumulation_backward(grad, q, k, v, q_mask, k_mask, hash_code_len, mode)`` →
    fp32 (dq, dk, dv), registered with ``torch.library.custom_op`` (fake twins for ``torch.compile``, autograd
    through ``register_autograd``); :func:`yoso_e_triton` is the functional entry point. On CPU the ops run
    only under ``TRITON_INTERPRET=1`` (else they raise with the reason of
    :func:`kernels.yoso.function.triton_unavailable_reason`).
Tested (``tests/kernels/test_yoso_e.py``): under ``TRITON_INTERPRET=1`` in fp32 against the reference with the
STYLE §6 rule (error w.r.t. a float64 golden run ≤ 2× the fp32 reference's + a small atol) for the output and
every gradient in both modes: lengths 1/17/100/1000 (fully padded rows at every length), Lq ≠ Lk, separate
query/key masks, NaN-filled padding and NaN past the end of every input, odd and wide d / d_v, the GPU's row
blocks, non-contiguous inputs, bitwise repeatability, fp16/bf16 inputs (length 17); E and ∂E/∂s elementwise on
a grid of cosines including the last 200 fp32 values before ±1; ``torch.library.opcheck`` on both ops;
``torch.compile(fullgraph=True, backend="aot_eager")`` through the attention backend, forward + backward. The
kernel-vs-reference tests also run compiled on CUDA when a device is present (``gpu`` marker), plus fp32/bf16
at L 1001/4000 on CUDA only. For GPUs, offline: every configuration picked by :func:`_config` up to width 128
compiles for sm_80 and sm_90 without register spills (``scripts/check_kernels_cuda.py``, launches specialised
as at run time; ``tests/kernels/test_cuda_compile.py``); the CUDA tests and the timing in
``scripts/bench_yoso.py`` have not been run on a device yet.
Known limits
    * fp32 ``ieee`` products run on CUDA cores, not tensor cores: the kernels are bound by FMA throughput
      (forward ~2·(d + d_v) + 30 flops per (query, key) pair, backward about twice that), not by memory, and
      Triton's FMA dot keeps whole operand rows in registers, which is what limits the tiles (``tf32x3``
      tensor-core products are the candidate to time on a GPU; the interpreter cannot check their precision);
    * d, d_v > 256 are refused (one register tile per row block); fp64 is refused (use the reference);
    * under autocast the kernels still compute E in fp32 (the reference would take autocast's bf16 q·kᵀ);
    * the backward always computes all three gradients; tiles are the largest spill-free ones, not timed
      or autotuned; at width 256 every tiling spills (424-728 B per thread with the chosen 16 x 16).
"""
import torch
import triton
import triton.language as tl

from kernels.yoso.function import triton_unavailable_reason

MAX_DIM = 256  # largest head / value dim (one register tile per row block)
MAX_HASH_CODE_LEN = 127  # τ: the binary exponentiation unrolls 7 bits
MODES = ("surrogate", "exact")
INTERPRETER_BLOCK = 128  # row block under TRITON_INTERPRET=1 (CPU); None = the GPU tiling
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ----------------------------------------------------------------------------------------- elementwise helpers
@triton.jit
def _collision_prob(s):
    """p = 1 − arccos(s)/π for s in [−1, 1] (fp32). arccos(|s|) = π/2 − asin(|s|) for |s| ≤ 1/2 and
    2·asin(√((1 − |s|)/2)) above (accurate near |s| = 1), asin by Cephes ``asinf``'s polynomial; then
    arccos(s) = π − arccos(|s|) for s < 0, so p = arccos(|s|)/π there (no cancellation near s = −1)."""
    a = tl.abs(s)
    big = a > 0.5
    z = tl.where(big, 0.5 - 0.5 * a, a * a)  # exact (Sterbenz) on the big branch
    x = tl.where(big, tl.sqrt_rn(z), a)
    poly = (((4.2163199048e-2 * z + 2.4181311049e-2) * z + 4.5470025998e-2) * z + 7.4953002686e-2) * z \
        + 1.6666752422e-1
    r = x + x * z * poly  # asin(x)
    t = tl.where(big, 2.0 * r, 1.5707963267948966 - r) * 0.3183098861837907  # arccos(|s|)/π
    return tl.where(s < 0, t, 1.0 - t)


@triton.jit
def _powi(x, N: tl.constexpr):
    """x ** N for a compile-time int 0 ≤ N < 128 by binary exponentiation (unrolled, ≤ 12 multiplies)."""
    acc = tl.zeros_like(x) + 1.0
    base = x
    for i in tl.static_range(7):
        if (N >> i) & 1:
            acc = acc * base
        if (N >> (i + 1)) > 0:
            base = base * base
    return acc


@triton.jit
def _expectation(s, TAU: tl.constexpr, EXACT: tl.constexpr):
    """Cosines s -> (E, ∂E/∂s) with s clamped to [−1, 1]: ``surrogate`` ∂E/∂s := (τ/2)·E, ``exact``
    τ p^{τ−1} / (π √max(1 − s², 1e-6)). Callers that need only E let the compiler drop the slope."""
    s = tl.minimum(tl.maximum(s, -1.0), 1.0)
    p = _collision_prob(s)
    pm = _powi(p, TAU - 1)
    e = pm * p
    if EXACT:
        den = tl.sqrt_rn(tl.maximum(1.0 - s * s, 1e-6))
        de = tl.div_rn(pm * (TAU * 0.3183098861837907), den)
    else:
        de = e * (TAU * 0.5)
    return e, de


@triton.jit
def _keep_rows(m_ptr, offs, stride, in_range):
    """Rows that exist and are real tokens (mask != 0); masked and out-of-range rows are never read."""
    return in_range & (tl.load(m_ptr + offs * stride, mask=in_range, other=0) != 0)


@triton.jit
def _load_tile(ptr, rows, s_row, cols, s_col, row_ok, col_ok):
    """A (rows, cols) tile as fp32; zeros where the row is not kept or the column is past the width."""
    return tl.load(ptr + rows[:, None] * s_row + cols[None, :] * s_col, mask=row_ok[:, None] & col_ok[None, :],
                   other=0.0).to(tl.float32)


# ----------------------------------------------------------------------------------------- kernels
@triton.jit
def _yoso_e_fwd_kernel(q_ptr, k_ptr, v_ptr, qm_ptr, km_ptr, o_ptr,
                       Lq, Lk, D, DV,
                       sq_b, sq_l, sq_d, sk_b, sk_l, sk_d, sv_b, sv_l, sv_d,
                       sqm_b, sqm_l, skm_b, skm_l, so_b, so_l, so_d,
                       TAU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """out[i] = Σ_{j real} E_ij v_j for real query i, else 0. Grid (cdiv(Lq, BLOCK_M), BH)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_c = tl.arange(0, BLOCK_DV)
    in_d, in_c = offs_d < D, offs_c < DV
    in_m = offs_m < Lq
    q_keep = _keep_rows(qm_ptr + bh * sqm_b, offs_m, sqm_l, in_m)
    q = _load_tile(q_ptr + bh * sq_b, offs_m, sq_l, offs_d, sq_d, q_keep, in_d)  # (BLOCK_M, BLOCK_D)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    for n0 in range(0, Lk, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        in_n = offs_n < Lk
        k_keep = _keep_rows(km_ptr + bh * skm_b, offs_n, skm_l, in_n)
        k = _load_tile(k_ptr + bh * sk_b, offs_n, sk_l, offs_d, sk_d, k_keep, in_d)  # (BLOCK_N, BLOCK_D)
        v = _load_tile(v_ptr + bh * sv_b, offs_n, sv_l, offs_c, sv_d, k_keep, in_c)  # (BLOCK_N, BLOCK_DV)
        s = tl.dot(q, tl.trans(k), input_precision="ieee")  # (BLOCK_M, BLOCK_N)
        e, _ = _expectation(s, TAU, False)
        acc += tl.dot(e, v, input_precision="ieee")  # masked keys have v = 0
    acc = tl.where(q_keep[:, None], acc, 0.0)
    tl.store(o_ptr + bh * so_b + offs_m[:, None] * so_l + offs_c[None, :] * so_d, acc,
             mask=in_m[:, None] & in_c[None, :])


@triton.jit
def _yoso_e_bwd_dq_kernel(q_ptr, k_ptr, v_ptr, g_ptr, qm_ptr, km_ptr, dq_ptr,
                          Lq, Lk, D, DV,
                          sq_b, sq_l, sq_d, sk_b, sk_l, sk_d, sv_b, sv_l, sv_d, sg_b, sg_l, sg_d,
                          sqm_b, sqm_l, skm_b, skm_l, so_b, so_l, so_d,
                          TAU: tl.constexpr, EXACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """dQ_i = Σ_j (g_i·v_j) ∂E_ij/∂s k_j over real keys, 0 for masked queries. Grid (cdiv(Lq, BLOCK_M), BH)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_c = tl.arange(0, BLOCK_DV)
    in_d, in_c = offs_d < D, offs_c < DV
    in_m = offs_m < Lq
    q_keep = _keep_rows(qm_ptr + bh * sqm_b, offs_m, sqm_l, in_m)
    q = _load_tile(q_ptr + bh * sq_b, offs_m, sq_l, offs_d, sq_d, q_keep, in_d)  # (BLOCK_M, BLOCK_D)
    g = _load_tile(g_ptr + bh * sg_b, offs_m, sg_l, offs_c, sg_d, q_keep, in_c)  # (BLOCK_M, BLOCK_DV)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, Lk, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        in_n = offs_n < Lk
        k_keep = _keep_rows(km_ptr + bh * skm_b, offs_n, skm_l, in_n)
        k = _load_tile(k_ptr + bh * sk_b, offs_n, sk_l, offs_d, sk_d, k_keep, in_d)  # (BLOCK_N, BLOCK_D)
        v = _load_tile(v_ptr + bh * sv_b, offs_n, sv_l, offs_c, sv_d, k_keep, in_c)  # (BLOCK_N, BLOCK_DV)
        s = tl.dot(q, tl.trans(k), input_precision="ieee")  # (BLOCK_M, BLOCK_N)
        _, de = _expectation(s, TAU, EXACT)
        w = tl.dot(g, tl.trans(v), input_precision="ieee") * de  # (G Vᵀ) ⊙ ∂E/∂s; 0 at masked keys
        acc += tl.dot(w, k, input_precision="ieee")
    acc = tl.where(q_keep[:, None], acc, 0.0)
    tl.store(dq_ptr + bh * so_b + offs_m[:, None] * so_l + offs_d[None, :] * so_d, acc,
             mask=in_m[:, None] & in_d[None, :])


@triton.jit
def _yoso_e_bwd_dkdv_kernel(q_ptr, k_ptr, v_ptr, g_ptr, qm_ptr, km_ptr, dk_ptr, dv_ptr,
                            Lq, Lk, D, DV,
                            sq_b, sq_l, sq_d, sk_b, sk_l, sk_d, sv_b, sv_l, sv_d, sg_b, sg_l, sg_d,
                            sqm_b, sqm_l, skm_b, skm_l, sdk_b, sdk_l, sdk_d, sdv_b, sdv_l, sdv_d,
                            TAU: tl.constexpr, EXACT: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """dK_j = Σ_i (v_j·g_i) ∂E_ij/∂s q_i and dV_j = Σ_i E_ij g_i over real queries, 0 for masked keys.
    Works on the transposed tile (keys × queries). Grid (cdiv(Lk, BLOCK_N), BH)."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_c = tl.arange(0, BLOCK_DV)
    in_d, in_c = offs_d < D, offs_c < DV
    in_n = offs_n < Lk
    k_keep = _keep_rows(km_ptr + bh * skm_b, offs_n, skm_l, in_n)
    k = _load_tile(k_ptr + bh * sk_b, offs_n, sk_l, offs_d, sk_d, k_keep, in_d)  # (BLOCK_N, BLOCK_D)
    v = _load_tile(v_ptr + bh * sv_b, offs_n, sv_l, offs_c, sv_d, k_keep, in_c)  # (BLOCK_N, BLOCK_DV)
    acc_k = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    acc_v = tl.zeros((BLOCK_N, BLOCK_DV), dtype=tl.float32)
    for m0 in range(0, Lq, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        in_m = offs_m < Lq
        q_keep = _keep_rows(qm_ptr + bh * sqm_b, offs_m, sqm_l, in_m)
        q = _load_tile(q_ptr + bh * sq_b, offs_m, sq_l, offs_d, sq_d, q_keep, in_d)  # (BLOCK_M, BLOCK_D)
        g = _load_tile(g_ptr + bh * sg_b, offs_m, sg_l, offs_c, sg_d, q_keep, in_c)  # (BLOCK_M, BLOCK_DV)
        st = tl.dot(k, tl.trans(q), input_precision="ieee")  # (BLOCK_N, BLOCK_M) = sᵀ
        et, det = _expectation(st, TAU, EXACT)
        acc_v += tl.dot(et, g, input_precision="ieee")  # masked queries have g = 0
        wt = tl.dot(v, tl.trans(g), input_precision="ieee") * det  # Wᵀ
        acc_k += tl.dot(wt, q, input_precision="ieee")
    acc_k = tl.where(k_keep[:, None], acc_k, 0.0)
    acc_v = tl.where(k_keep[:, None], acc_v, 0.0)
    tl.store(dk_ptr + bh * sdk_b + offs_n[:, None] * sdk_l + offs_d[None, :] * sdk_d, acc_k,
             mask=in_n[:, None] & in_d[None, :])
    tl.store(dv_ptr + bh * sdv_b + offs_n[:, None] * sdv_l + offs_c[None, :] * sdv_d, acc_v,
             mask=in_n[:, None] & in_c[None, :])


# ----------------------------------------------------------------------------------------- launchers
def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# (BLOCK_M, BLOCK_N, num_warps) per kernel by padded width max(d, d_v): the largest tiles that compile without
# register spills for sm_90 with bf16 inputs, tau = 12 and both backward modes, found by
# ``python scripts/check_kernels_cuda.py --sweep-yoso-e`` (triton 3.9, launches specialised as at run time;
# not timed: no GPU was at hand), then confirmed for sm_80 and fp32/fp16 inputs by the script's full check
# (width-32 dkdv takes (64, 32) because (32, 64) spills 32 B on sm_80 with fp32 inputs). No 256-wide tiling
# is spill-free; (16, 16, 8) spills least there (424-728 B per thread).
_GPU_TILES = {
    16: {"fwd": (64, 64, 8), "dq": (64, 64, 8), "dkdv": (64, 64, 4)},
    32: {"fwd": (64, 64, 8), "dq": (32, 64, 8), "dkdv": (64, 32, 8)},
    64: {"fwd": (32, 32, 8), "dq": (32, 32, 8), "dkdv": (32, 32, 8)},
    128: {"fwd": (16, 16, 8), "dq": (16, 16, 8), "dkdv": (16, 16, 8)},
    256: {"fwd": (16, 16, 8), "dq": (16, 16, 8), "dkdv": (16, 16, 8)},
}
KERNELS = ("fwd", "dq", "dkdv")


def _config(d: int, dv: int, kernel: str, interpreted: bool) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, num_warps) for ``kernel`` in :data:`KERNELS`. Dims are padded to a
    power of two ≥ 16 (``tl.dot``'s minimum); on GPU the row blocks come from :data:`_GPU_TILES`. The CPU
    interpreter pays per tile operation, not per element, so it gets :data:`INTERPRETER_BLOCK` rows when that
    is set."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel {kernel!r}; choose one of {KERNELS}")
    bd, bdv = max(16, _pow2(d)), max(16, _pow2(dv))
    if interpreted and INTERPRETER_BLOCK:
        return INTERPRETER_BLOCK, INTERPRETER_BLOCK, bd, bdv, 4
    bm, bn, warps = _GPU_TILES[max(bd, bdv)][kernel]
    return bm, bn, bd, bdv, warps


def _mask_i32(mask: torch.Tensor | None, bh: int, length: int, device) -> torch.Tensor:
    if mask is None:
        return torch.ones(bh, length, dtype=torch.int32, device=device)
    return mask.to(torch.int32)


def _check_inputs(q, k, v, q_mask, k_mask, hash_code_len: int, mode: str) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"q (BH, Lq, d), k (BH, Lk, d), v (BH, Lk, dv) expected, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    BH, Lq, d = q.shape
    Lk, dv = v.shape[1], v.shape[2]
    if k.shape != (BH, Lk, d) or v.shape[0] != BH:
        raise ValueError(f"q (BH, Lq, d), k (BH, Lk, d), v (BH, Lk, dv) expected, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    for name, m, length in (("q_mask", q_mask, Lq), ("k_mask", k_mask, Lk)):
        if m is not None and (m.shape != (BH, length) or m.dtype != torch.bool):
            raise ValueError(f"{name} must be bool (BH={BH}, L={length}), got {m.dtype} {tuple(m.shape)}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype not in _DTYPES:
            raise ValueError(f"YOSO-E Triton kernels take fp32/bf16/fp16, {name} is {t.dtype}"
                             + (" (use impl=reference for fp64)" if t.dtype == torch.float64 else ""))
    if d > MAX_DIM or dv > MAX_DIM:
        raise ValueError(f"YOSO-E Triton kernels support head and value dims ≤ {MAX_DIM}, got d={d}, dv={dv}")
    if not isinstance(hash_code_len, int) or not 1 <= hash_code_len <= MAX_HASH_CODE_LEN:
        raise ValueError(f"hash_code_len must be an int in [1, {MAX_HASH_CODE_LEN}], got {hash_code_len!r}")
    if mode not in MODES:
        raise ValueError(f"backward mode {mode!r}; choose one of {MODES}")


def _check_device(t: torch.Tensor) -> None:
    reason = triton_unavailable_reason(t.device)
    if reason:
        raise RuntimeError(f"YOSO-E Triton kernels cannot run on {t.device}: {reason}")


def yoso_e_forward_triton(q, k, v, q_mask, k_mask, hash_code_len: int) -> torch.Tensor:
    """Launch the forward: fp32 (BH, Lq, dv) ``E·V`` (masked keys excluded, masked query rows 0)."""
    BH, Lq, d = q.shape
    Lk, dv = v.shape[1], v.shape[2]
    out = torch.empty(BH, Lq, dv, dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out
    if Lk == 0:
        return out.zero_()
    qm, km = _mask_i32(q_mask, BH, Lq, q.device), _mask_i32(k_mask, BH, Lk, q.device)
    BM, BN, BD, BDV, warps = _config(d, dv, "fwd", interpreted=q.device.type == "cpu")
    _yoso_e_fwd_kernel[(triton.cdiv(Lq, BM), BH)](
        q, k, v, qm, km, out, Lq, Lk, d, dv,
        *q.stride(), *k.stride(), *v.stride(), *qm.stride(), *km.stride(), *out.stride(),
        TAU=hash_code_len, BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD, BLOCK_DV=BDV, num_warps=warps)
    return out


def yoso_e_backward_triton(grad, q, k, v, q_mask, k_mask, hash_code_len: int, mode: str):
    """Launch both backward kernels: fp32 (dq, dk, dv), zero on masked rows."""
    BH, Lq, d = q.shape
    Lk, dv = v.shape[1], v.shape[2]
    dev = q.device
    dq = torch.empty(BH, Lq, d, dtype=torch.float32, device=dev)  # every element is stored by a kernel
    dk = torch.empty(BH, Lk, d, dtype=torch.float32, device=dev)
    dvv = torch.empty(BH, Lk, dv, dtype=torch.float32, device=dev)
    if BH == 0 or Lq == 0 or Lk == 0:
        return dq.zero_(), dk.zero_(), dvv.zero_()
    qm, km = _mask_i32(q_mask, BH, Lq, dev), _mask_i32(k_mask, BH, Lk, dev)
    exact = mode == "exact"
    interpreted = dev.type == "cpu"
    common = (*q.stride(), *k.stride(), *v.stride(), *grad.stride(), *qm.stride(), *km.stride())
    BM, BN, BD, BDV, warps = _config(d, dv, "dq", interpreted)
    _yoso_e_bwd_dq_kernel[(triton.cdiv(Lq, BM), BH)](
        q, k, v, grad, qm, km, dq, Lq, Lk, d, dv, *common, *dq.stride(),
        TAU=hash_code_len, EXACT=exact, BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD, BLOCK_DV=BDV, num_warps=warps)
    BM, BN, BD, BDV, warps = _config(d, dv, "dkdv", interpreted)
    _yoso_e_bwd_dkdv_kernel[(triton.cdiv(Lk, BN), BH)](
        q, k, v, grad, qm, km, dk, dvv, Lq, Lk, d, dv, *common, *dk.stride(), *dvv.stride(),
        TAU=hash_code_len, EXACT=exact, BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=BD, BLOCK_DV=BDV, num_warps=warps)
    return dq, dk, dvv


# ----------------------------------------------------------------------------------------- torch.library ops
@torch.library.custom_op("lra::yoso_e_cumulation", mutates_args=())
def yoso_e_cumulation(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_mask: torch.Tensor | None,
                      k_mask: torch.Tensor | None, hash_code_len: int, mode: str) -> torch.Tensor:
    """YOSO-E cumulation ``E·V`` (fp32, (BH, Lq, dv)); ``mode`` only selects the backward."""
    _check_inputs(q, k, v, q_mask, k_mask, hash_code_len, mode)
    _check_device(q)
    return yoso_e_forward_triton(q, k, v, q_mask, k_mask, hash_code_len)


@yoso_e_cumulation.register_fake
def _(q, k, v, q_mask, k_mask, hash_code_len, mode):
    _check_inputs(q, k, v, q_mask, k_mask, hash_code_len, mode)
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]), dtype=torch.float32)


@torch.library.custom_op("lra::yoso_e_cumulation_backward", mutates_args=())
def yoso_e_cumulation_backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               q_mask: torch.Tensor | None, k_mask: torch.Tensor | None, hash_code_len: int,
                               mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 (dq, dk, dv) of ``yoso_e_cumulation`` for the output gradient ``grad`` (BH, Lq, dv)."""
    _check_inputs(q, k, v, q_mask, k_mask, hash_code_len, mode)
    if grad.shape != (q.shape[0], q.shape[1], v.shape[2]):
        raise ValueError(f"grad must be (BH, Lq, dv) = {(q.shape[0], q.shape[1], v.shape[2])}, "
                         f"got {tuple(grad.shape)}")
    _check_device(q)
    return yoso_e_backward_triton(grad, q, k, v, q_mask, k_mask, hash_code_len, mode)


@yoso_e_cumulation_backward.register_fake
def _(grad, q, k, v, q_mask, k_mask, hash_code_len, mode):
    f32 = torch.float32
    return q.new_empty(q.shape, dtype=f32), k.new_empty(k.shape, dtype=f32), v.new_empty(v.shape, dtype=f32)


def _setup_context(ctx, inputs, output):
    q, k, v, q_mask, k_mask, hash_code_len, mode = inputs
    ctx.save_for_backward(q, k, v, q_mask, k_mask)
    ctx.tau, ctx.mode = hash_code_len, mode


def _backward(ctx, grad):
    q, k, v, q_mask, k_mask = ctx.saved_tensors
    dq, dk, dv = yoso_e_cumulation_backward(grad, q, k, v, q_mask, k_mask, ctx.tau, ctx.mode)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


yoso_e_cumulation.register_autograd(_backward, setup_context=_setup_context)


def yoso_e_triton(q, k, v, q_mask=None, k_mask=None, hash_code_len: int = 8, mode: str = "surrogate"):
    """Functional YOSO-E cumulation through the Triton op: same arguments and semantics as
    :func:`kernels.yoso.reference.yoso_e_ref` (unit rows q, k; fp32 output), gradients in the inputs' dtypes."""
    return yoso_e_cumulation(q, k, v, q_mask, k_mask, hash_code_len, mode)
