"""Triton kernels for YOSO: the fast hash and the LSH (weighted) cumulations, with their launchers.

Supported
    * any sequence length (masked tails; no multiple-of-8 rule), any value / weight width (column tiles and
      masks; no multiple-of-32 rule), any ``num_hash`` (hashes processed in groups so the bucket table stays
      under ~256 MiB), head dims up to 1024 (hash width = next power of two ≥ 32, wider refused by
      :func:`fast_hash_triton`), ``hash_code_len`` ≤ 24;
    * fp32, bf16 and fp16 inputs (cast to fp32 on load); hashing, tables and accumulation in fp32; outputs
      fp32.
Kernels
    * ``_yoso_hash_kernel``: the three ``x ⊙ D → Hadamard`` rounds of CUDA ``fast_hash`` composed once into
      ``R = diag(D0)·H·diag(D1)·H·diag(D2)·H`` (:func:`kernels.yoso.reference.rotation_matrices`), so each
      (batch·head, part) is an ``x @ R`` tile product in IEEE fp32; sign bits are packed into codes by a second
      product with a power-of-two matrix (exact for τ ≤ 24). Codes equal the butterfly reference except where
      a projection is ≈ 0 (summation order), never materialising the (BH, L, parts·D) projections.
    * ``_lsh_scatter_kernel``: ``tl.atomic_add`` of (optionally weighted) values into
      ``table[(g·BH + bh)·2^τ + code, col]`` (fp32) for a group of hashes.
    * ``_lsh_gather_kernel``: per query tile, sum the table rows of its codes over the group (optionally
      weighted by the query weights) and accumulate ``/ num_hash`` into the fp32 output.
    * ``_lsh_weighted_segment_kernel``: the weighted cumulation of the backward,
      ``out_i = (1/H) Σ_h Σ_{j collides} ⟨qw_i, kw_j⟩ value_j``: keys are sorted by code per (batch·head, hash)
      (``torch.sort``), each query finds its bucket with ``torch.searchsorted`` and the kernel walks that
      segment, so the cost is ∝ collisions·(dw + dv) (CUDA ver4's, minus its duplicate merging across
      hashes), with no atomics (deterministic). Worst case (one bucket for everything) is O(L²).
    * ``WEIGHTED=True`` specialisations of the scatter/gather kernels are the ver1-style alternative
      (``method="table"``: tables of ``kw_j[w]·value_j`` for a chunk of w, ~dw times the forward's atomics),
      kept as a cross-check.
Tested (``tests/kernels/test_yoso.py``): against :mod:`kernels.yoso.reference` with shared codes, forward and
every gradient, lengths 1/17/100/1000 (hash: 1/5/17/37/100/1000, head dims 8-1024), a fully padded row,
NaN-filled padding and NaN past the end of every input, odd value widths, hash groups, segment vs table
weighted methods, fp32 and (length 17) fp16/bf16 inputs, and caller codes outside [0, 2^τ) refused
(``tests/kernels/test_yoso_ops.py``). Each runs under ``TRITON_INTERPRET=1`` on CPU and compiled on CUDA
when a device is present (``gpu`` marker), plus bf16/fp32 at lengths 1001/4000 on CUDA only. An earlier
version passed the CUDA tests on an H100 (triton 3.6, with the former 64-wide hash tile); the current code
has run under the interpreter only. ``scripts/bench_yoso.py`` checked them against HF 4.57.6's CUDA kernels
on the same codes (max |diff| 2e-7 forward, 4e-7 weighted) and reproduced HF's fast_hash codes from the same
Dmat draw.
Offline GPU check (``scripts/check_kernels_cuda.py``, ``tests/kernels/test_cuda_compile.py``): every launch
configuration at head dims 16-128 compiles for sm_80 and sm_90 with at most 16 B of register spills (the hash kernel's projection
tile is 32 wide, its loops dynamic: the former 64-wide unrolled tiles spilled 32-48 B on sm_80 at D = 64
and 23-101 KB per thread at D = 128-256).
Known limits
    * atomics make the fp32 summation order nondeterministic on GPU (results vary in the last bits);
    * the segment walk loops to the longest bucket in each 32-query tile: skewed buckets waste lanes;
    * one hash's table, ``BH·2^τ·d_v`` fp32, must fit in memory (the group size never goes below one).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.yoso.reference import rotation_matrices

TABLE_BUDGET_ELEMS = 1 << 26  # fp32 elements per bucket table (256 MiB)
MAX_HASH_CODE_LEN = 24
MAX_HASH_DIM = 1024  # hash width D (head dims ≤ 1024): R is a (D, D) fp32 matrix per (batch·head, part)


@triton.jit
def _yoso_hash_kernel(x_ptr, r_ptr, p_ptr, mask_ptr, code_ptr,
                      L, d, num_hash, per_part, num_parts,
                      sx_b, sx_l, sx_d, sm_b, sm_l, sc_b, sc_l, sc_h,
                      D: tl.constexpr, GP: tl.constexpr, BK: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_l = tl.program_id(0)
    part = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    in_l = offs_l < L
    real = tl.load(mask_ptr + bh * sm_b + offs_l * sm_l, mask=in_l, other=0) != 0
    keep = in_l & real
    offs_g = tl.arange(0, GP)
    codes = tl.zeros((BLOCK_L, GP), dtype=tl.float32)
    r_base = r_ptr + (bh * num_parts + part) * D * D
    for n0 in range(0, D, BK):
        offs_n = n0 + tl.arange(0, BK)
        proj = tl.zeros((BLOCK_L, BK), dtype=tl.float32)
        for k0 in range(0, D, BK):
            offs_k = k0 + tl.arange(0, BK)
            x = tl.load(x_ptr + bh * sx_b + offs_l[:, None] * sx_l + offs_k[None, :] * sx_d,
                        mask=keep[:, None] & (offs_k < d)[None, :], other=0.0).to(tl.float32)
            r = tl.load(r_base + offs_k[:, None] * D + offs_n[None, :])
            proj += tl.dot(x, r, input_precision="ieee")
        bits = (proj > 0).to(tl.float32)
        pw = tl.load(p_ptr + offs_n[:, None] * GP + offs_g[None, :])
        codes += tl.dot(bits, pw, input_precision="ieee")
    hidx = part * per_part + offs_g
    out_mask = in_l[:, None] & ((offs_g < per_part) & (hidx < num_hash))[None, :]
    val = tl.where(keep[:, None], codes.to(tl.int32), 0)
    tl.store(code_ptr + bh * sc_b + offs_l[:, None] * sc_l + hidx[None, :] * sc_h, val, mask=out_mask)


@triton.jit
def _lsh_scatter_kernel(codes_ptr, mask_ptr, v_ptr, w_ptr, table_ptr,
                        L, DV, BH, CAP, h0, w0, WC,
                        sc_b, sc_l, sc_h, sm_b, sm_l, sv_b, sv_l, sv_d, sw_b, sw_l, sw_d,
                        WEIGHTED: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr):
    pid_n = tl.program_id(0)
    g = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    in_n = offs_n < L
    real = tl.load(mask_ptr + bh * sm_b + offs_n * sm_l, mask=in_n, other=0) != 0
    keep = in_n & real
    code = tl.load(codes_ptr + bh * sc_b + offs_n * sc_l + (h0 + g) * sc_h, mask=keep, other=0)
    row = (g * BH + bh) * CAP + code.to(tl.int64)  # (BLOCK_N,)
    tw = WC * DV
    for c0 in range(0, DV, BLOCK_DV):
        offs_c = c0 + tl.arange(0, BLOCK_DV)
        m2 = keep[:, None] & (offs_c < DV)[None, :]
        val = tl.load(v_ptr + bh * sv_b + offs_n[:, None] * sv_l + offs_c[None, :] * sv_d,
                      mask=m2, other=0.0).to(tl.float32)
        if WEIGHTED:
            for wi in range(WC):
                kw = tl.load(w_ptr + bh * sw_b + offs_n * sw_l + (w0 + wi) * sw_d, mask=keep, other=0.0)
                tl.atomic_add(table_ptr + row[:, None] * tw + wi * DV + offs_c[None, :],
                              val * kw.to(tl.float32)[:, None], mask=m2, sem="relaxed")
        else:
            tl.atomic_add(table_ptr + row[:, None] * tw + offs_c[None, :], val, mask=m2, sem="relaxed")


@triton.jit
def _lsh_gather_kernel(codes_ptr, mask_ptr, table_ptr, w_ptr, out_ptr,
                       L, DV, BH, CAP, h0, G, w0, WC, scale,
                       sc_b, sc_l, sc_h, sm_b, sm_l, sw_b, sw_l, sw_d, so_b, so_l, so_d,
                       WEIGHTED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    in_m = offs_m < L
    real = tl.load(mask_ptr + bh * sm_b + offs_m * sm_l, mask=in_m, other=0) != 0
    keep = in_m & real
    offs_c = pid_c * BLOCK_DV + tl.arange(0, BLOCK_DV)
    m2 = keep[:, None] & (offs_c < DV)[None, :]
    tw = WC * DV
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    for g in range(G):
        code = tl.load(codes_ptr + bh * sc_b + offs_m * sc_l + (h0 + g) * sc_h, mask=keep, other=0)
        row = (g * BH + bh) * CAP + code.to(tl.int64)
        if WEIGHTED:
            for wi in range(WC):
                t = tl.load(table_ptr + row[:, None] * tw + wi * DV + offs_c[None, :], mask=m2, other=0.0)
                qw = tl.load(w_ptr + bh * sw_b + offs_m * sw_l + (w0 + wi) * sw_d, mask=keep, other=0.0)
                acc += t * qw.to(tl.float32)[:, None]
        else:
            acc += tl.load(table_ptr + row[:, None] * tw + offs_c[None, :], mask=m2, other=0.0)
    ptrs = out_ptr + bh * so_b + offs_m[:, None] * so_l + offs_c[None, :] * so_d
    prev = tl.load(ptrs, mask=m2, other=0.0)
    tl.store(ptrs, prev + acc * scale, mask=m2)


@triton.jit
def _lsh_weighted_segment_kernel(qm_ptr, qw_ptr, start_ptr, end_ptr, perm_ptr, kw_ptr, v_ptr, out_ptr,
                                 L, NH, DW, DV, scale,
                                 sqm_b, sqm_l, sqw_b, sqw_l, sqw_d,
                                 sse_b, sse_h, sse_l, sp_b, sp_h, sp_l, skw_b, skw_l, skw_d, sv_b, sv_l, sv_d,
                                 so_b, so_l, so_d,
                                 BLOCK_M: tl.constexpr, BLOCK_DW: tl.constexpr, BLOCK_DV: tl.constexpr):
    """out_i = scale·Σ_h Σ_{j in bucket code_h(i)} ⟨qw_i, kw_j⟩ value_j, walking each query's bucket segment
    [start, end) of the keys sorted by code (masked keys sorted past every real code). No atomics."""
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    in_m = offs_m < L
    keep = in_m & (tl.load(qm_ptr + bh * sqm_b + offs_m * sqm_l, mask=in_m, other=0) != 0)
    offs_w = tl.arange(0, BLOCK_DW)
    offs_c = pid_c * BLOCK_DV + tl.arange(0, BLOCK_DV)
    in_w, in_c = offs_w < DW, offs_c < DV
    qw = tl.load(qw_ptr + bh * sqw_b + offs_m[:, None] * sqw_l + offs_w[None, :] * sqw_d,
                 mask=keep[:, None] & in_w[None, :], other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    for h in range(NH):
        s = tl.load(start_ptr + bh * sse_b + h * sse_h + offs_m * sse_l, mask=keep, other=0)
        e = tl.load(end_ptr + bh * sse_b + h * sse_h + offs_m * sse_l, mask=keep, other=0)
        n = e - s
        for t in range(0, tl.max(n, axis=0)):
            valid = t < n
            j = tl.load(perm_ptr + bh * sp_b + h * sp_h + (s + t) * sp_l, mask=valid, other=0).to(tl.int64)
            kw = tl.load(kw_ptr + bh * skw_b + j[:, None] * skw_l + offs_w[None, :] * skw_d,
                         mask=valid[:, None] & in_w[None, :], other=0.0).to(tl.float32)
            wgt = tl.sum(qw * kw, axis=1)  # (BLOCK_M,)
            val = tl.load(v_ptr + bh * sv_b + j[:, None] * sv_l + offs_c[None, :] * sv_d,
                          mask=valid[:, None] & in_c[None, :], other=0.0).to(tl.float32)
            acc += wgt[:, None] * val
    tl.store(out_ptr + bh * so_b + offs_m[:, None] * so_l + offs_c[None, :] * so_d, acc * scale,
             mask=in_m[:, None] & in_c[None, :])


# ----------------------------------------------------------------------------------------- launchers
def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _mask_i32(mask: torch.Tensor | None, bh: int, length: int, device) -> torch.Tensor:
    if mask is None:
        return torch.ones(bh, length, dtype=torch.int32, device=device)
    return mask.to(torch.int32).contiguous()


def _packing_matrix(D: int, per_part: int, hash_code_len: int, GP: int, device) -> torch.Tensor:
    """(D, GP) fp32 with P[g·τ + j, g] = 2^j: ``bits @ P`` packs each hash's τ sign bits into its code."""
    p = torch.zeros(D, GP, dtype=torch.float32)
    for g in range(per_part):
        for j in range(hash_code_len):
            p[g * hash_code_len + j, g] = float(1 << j)
    return p.to(device)


def fast_hash_triton(x: torch.Tensor, dmat: torch.Tensor, num_hash: int, hash_code_len: int,
                     mask: torch.Tensor | None = None, rotations: torch.Tensor | None = None) -> torch.Tensor:
    """Codes (BH, L, num_hash) int32 of x (BH, L, d ≤ D) under dmat (BH, 3, parts, D); masked rows get 0.
    ``rotations`` (from :func:`rotation_matrices`) may be passed to hash q and k with one composition."""
    BH, L, d = x.shape
    D, parts = dmat.shape[-1], dmat.shape[2]
    per_part = D // hash_code_len
    if hash_code_len > MAX_HASH_CODE_LEN:
        raise ValueError(f"hash_code_len={hash_code_len} > {MAX_HASH_CODE_LEN} (fp32 code packing)")
    if D > MAX_HASH_DIM:
        raise ValueError(f"the Triton hash takes hash widths ≤ {MAX_HASH_DIM} (head dims ≤ {MAX_HASH_DIM}), got "
                         f"{D} for d={d} (use impl=reference)")
    r = rotation_matrices(dmat).contiguous() if rotations is None else rotations
    GP = max(16, _pow2(per_part))
    pmat = _packing_matrix(D, per_part, hash_code_len, GP, x.device)
    m = _mask_i32(mask, BH, L, x.device)
    codes = torch.empty(BH, L, num_hash, dtype=torch.int32, device=x.device)
    if L == 0 or BH == 0:
        return codes
    BK = 32  # projection tile: with 4 warps spill-free for every D on sm_80 and sm_90 (scripts/check_kernels_cuda.py)
    BLOCK_L = 32
    grid = (triton.cdiv(L, BLOCK_L), parts, BH)
    _yoso_hash_kernel[grid](x, r, pmat, m, codes, L, d, num_hash, per_part, parts,
                            x.stride(0), x.stride(1), x.stride(2), m.stride(0), m.stride(1),
                            codes.stride(0), codes.stride(1), codes.stride(2),
                            D=D, GP=GP, BK=BK, BLOCK_L=BLOCK_L)
    return codes


def _cumulate(q_codes, q_mask, q_weight, k_codes, k_mask, k_weight, value, hash_code_len, hash_group=None):
    """Shared launcher: ``out_i = (1/H) Σ_h Σ_{j collides} w_ij value_j`` with w_ij = 1 or ⟨qw_i, kw_j⟩."""
    BH, Lk, DV = value.shape
    Lq, nh = q_codes.shape[1], q_codes.shape[2]
    cap = 1 << hash_code_len
    device = value.device
    weighted = q_weight is not None
    out = torch.zeros(BH, Lq, DV, dtype=torch.float32, device=device)
    if BH == 0 or Lq == 0 or DV == 0 or nh == 0:
        return out
    qm, km = _mask_i32(q_mask, BH, Lq, device), _mask_i32(k_mask, BH, Lk, device)
    qc, kc = q_codes.to(torch.int32).contiguous(), k_codes.to(torch.int32).contiguous()
    dw = k_weight.shape[-1] if weighted else 1
    per_hash = BH * cap * DV
    wc = max(1, min(dw, TABLE_BUDGET_ELEMS // per_hash))
    group = hash_group or max(1, min(nh, TABLE_BUDGET_ELEMS // (per_hash * wc)))
    group = min(group, nh)
    dummy = value  # stands in for absent weight pointers (never read when WEIGHTED=False)
    qw = q_weight if weighted else dummy
    kw = k_weight if weighted else dummy
    BLOCK_N, BLOCK_M = 32, 32
    BLOCK_DV = min(128, max(16, _pow2(DV)))
    table = torch.empty(group * BH * cap * wc * DV, dtype=torch.float32, device=device)
    for h0 in range(0, nh, group):
        g = min(group, nh - h0)
        for w0 in range(0, dw, wc):
            w = min(wc, dw - w0)
            table.zero_()
            _lsh_scatter_kernel[(triton.cdiv(Lk, BLOCK_N), g, BH)](
                kc, km, value, kw, table, Lk, DV, BH, cap, h0, w0, w,
                kc.stride(0), kc.stride(1), kc.stride(2), km.stride(0), km.stride(1),
                value.stride(0), value.stride(1), value.stride(2), kw.stride(0), kw.stride(1), kw.stride(2),
                WEIGHTED=weighted, BLOCK_N=BLOCK_N, BLOCK_DV=BLOCK_DV)
            _lsh_gather_kernel[(triton.cdiv(Lq, BLOCK_M), triton.cdiv(DV, BLOCK_DV), BH)](
                qc, qm, table, qw, out, Lq, DV, BH, cap, h0, g, w0, w, 1.0 / nh,
                qc.stride(0), qc.stride(1), qc.stride(2), qm.stride(0), qm.stride(1),
                qw.stride(0), qw.stride(1), qw.stride(2), out.stride(0), out.stride(1), out.stride(2),
                WEIGHTED=weighted, BLOCK_M=BLOCK_M, BLOCK_DV=BLOCK_DV)
    return out


def lsh_cumulation_triton(q_codes, k_codes, q_mask, k_mask, v, hash_code_len: int, hash_group: int | None = None):
    """Triton twin of :func:`kernels.yoso.reference.lsh_cumulation_ref` (fp32 output)."""
    return _cumulate(q_codes, q_mask, None, k_codes, k_mask, None, v, hash_code_len, hash_group)


def bucket_segments(q_codes, q_mask, k_codes, k_mask, hash_code_len: int):
    """Keys sorted by code per (BH, hash) and each query's bucket segment in that order.

    Returns ``perm`` (BH, H, Lk) int32 (key index at each sorted position) and ``start``, ``end``
    (BH, H, Lq) int32; masked keys get the sentinel code 2^τ and sort past every real code, masked queries
    get empty segments.
    """
    cap = 1 << hash_code_len
    kc = k_codes.to(torch.int32)
    if k_mask is not None:
        kc = torch.where(k_mask[..., None], kc, torch.full((), cap, dtype=torch.int32, device=kc.device))
    sorted_codes, perm = torch.sort(kc.transpose(1, 2).contiguous(), dim=-1)  # (BH, H, Lk)
    qc = q_codes.to(torch.int32).transpose(1, 2).contiguous()  # (BH, H, Lq)
    start = torch.searchsorted(sorted_codes, qc, right=False, out_int32=True)
    end = torch.searchsorted(sorted_codes, qc, right=True, out_int32=True)
    if q_mask is not None:
        end = torch.where(q_mask[:, None, :], end, start)
    return perm.to(torch.int32), start, end


def lsh_weighted_cumulation_triton(q_mask, q_codes, q_weight, k_mask, k_codes, k_weight, value,
                                   hash_code_len: int, hash_group: int | None = None, method: str = "segment"):
    """Triton twin of :func:`kernels.yoso.reference.lsh_weighted_cumulation_ref` (fp32 output).

    ``method="segment"`` (default): sort keys by code, each query walks its bucket (cost ∝ collisions·(dw+dv),
    deterministic, like CUDA ver4 without its duplicate merging); ``"table"``: ver1-style weighted bucket
    tables (cost ∝ L·dw·dv per hash, atomics), kept as a cross-check.
    """
    if method == "table":
        return _cumulate(q_codes, q_mask, q_weight, k_codes, k_mask, k_weight, value, hash_code_len, hash_group)
    if method != "segment":
        raise ValueError(f"method={method!r}; choose segment or table")
    BH, Lk, DV = value.shape
    Lq, nh = q_codes.shape[1], q_codes.shape[2]
    DW = q_weight.shape[-1]
    out = torch.zeros(BH, Lq, DV, dtype=torch.float32, device=value.device)
    if BH == 0 or Lq == 0 or Lk == 0 or DV == 0 or nh == 0:
        return out
    perm, start, end = bucket_segments(q_codes, q_mask, k_codes, k_mask, hash_code_len)
    qm = _mask_i32(q_mask, BH, Lq, value.device)
    BLOCK_M = 32
    BLOCK_DW = max(16, _pow2(DW))
    BLOCK_DV = min(64, max(16, _pow2(DV)))
    grid = (triton.cdiv(Lq, BLOCK_M), triton.cdiv(DV, BLOCK_DV), BH)
    _lsh_weighted_segment_kernel[grid](
        qm, q_weight, start, end, perm, k_weight, value, out, Lq, nh, DW, DV, 1.0 / nh,
        qm.stride(0), qm.stride(1),
        q_weight.stride(0), q_weight.stride(1), q_weight.stride(2),
        start.stride(0), start.stride(1), start.stride(2), perm.stride(0), perm.stride(1), perm.stride(2),
        k_weight.stride(0), k_weight.stride(1), k_weight.stride(2), value.stride(0), value.stride(1),
        value.stride(2), out.stride(0), out.stride(1), out.stride(2),
        BLOCK_M=BLOCK_M, BLOCK_DW=BLOCK_DW, BLOCK_DV=BLOCK_DV)
    return out
