"""YOSO kernels: Triton (CPU interpreter, or CUDA) against the PyTorch reference, and the reference against
dense closed forms. Tolerances follow STYLE §6: the kernel's error w.r.t. a float64 golden run is at most
2x the fp32 reference's error plus a small atol, for the output and every gradient."""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():  # `import torch` does not import triton; kernels are decorated at import
    os.environ.setdefault("TRITON_INTERPRET", "1")  # CPU: run the @triton.jit kernels in the interpreter

import math  # noqa: E402

import pytest  # noqa: E402

from kernel_checks import require_triton  # noqa: E402

require_triton()

from kernels.yoso import kernel as K  # noqa: E402
from kernels.yoso import reference as R  # noqa: E402
from kernel_checks import assert_within as _assert_within  # noqa: E402
from kernel_checks import masks as _masks  # noqa: E402
from kernel_checks import nan_pad as _nan_pad  # noqa: E402
from kernel_checks import nan_tail as _nan_tail  # noqa: E402
from kernel_checks import triton_devices  # noqa: E402
from kernels.yoso.function import LSHCumulation, fast_hash, triton_unavailable_reason, yoso_lsh  # noqa: E402

DEVICES = triton_devices()  # "cpu" (interpreter) and "cuda" (compiled, marked gpu), each skipped with a reason


# ----------------------------------------------------------------------------------------- reference vs closed forms
def test_hadamard_is_sylvester_matrix():
    n = 32
    idx = torch.arange(n)
    parity = torch.tensor([[bin(int(i) & int(j)).count("1") % 2 for j in idx] for i in idx])
    Hm = (1 - 2 * parity).to(torch.float64)
    x = torch.randn(4, 3, n, dtype=torch.float64)
    torch.testing.assert_close(R.hadamard_ref(x), x @ Hm, rtol=0, atol=1e-12)


def _cuda_fast_hash_one(x, dmat, b, part, tau):
    """Literal port of fast_hash_ver1_cuda_kernel for one (batch, vector, part): shared-memory butterflies with
    ``sign = 1 − ((i / stride) % 2)·2; new[i] = sign·x[i] + x[i + sign·stride]``, then bit packing."""
    D = x.shape[-1]
    buf = [float(t) for t in x]

    def hadamard(buf):
        stride = D // 2
        while stride > 0:
            new = list(buf)
            for i in range(D):
                sign = 1 - ((i // stride) % 2) * 2
                new[i] = sign * buf[i] + buf[i + sign * stride]
            buf, stride = new, stride // 2
        return buf

    for r in range(3):
        buf = [buf[i] * float(dmat[b, r, part, i]) for i in range(D)]
        buf = hadamard(buf)
    return [sum((1 << j) for j in range(tau) if buf[g * tau + j] > 0) for g in range(D // tau)]


def test_fast_hash_ref_matches_literal_cuda_port():
    torch.manual_seed(0)
    BH, L, d, tau, nh = 2, 3, 20, 5, 9  # d padded to 32: 6 hashes per part, 2 parts
    x = torch.randn(BH, L, d, dtype=torch.float64)
    dmat = R.draw_dmat(BH, nh, tau, R.hash_dim(d))
    codes = R.fast_hash_ref(x, dmat, nh, tau)
    xp = torch.nn.functional.pad(x, (0, 32 - d))
    for b in range(BH):
        for i in range(L):
            want = sum((_cuda_fast_hash_one(xp[b, i], dmat, b, p, tau) for p in range(dmat.shape[2])), [])[:nh]
            assert codes[b, i].tolist() == want


def test_rotation_matrix_equals_butterflies():
    torch.manual_seed(1)
    dmat = R.draw_dmat(3, 10, 4, 64)
    x = torch.randn(3, 5, 64, dtype=torch.float64)
    rot = R.rotation_matrices(dmat).double()
    for p in range(dmat.shape[2]):
        y = x
        for r in range(3):
            y = R.hadamard_ref(y * dmat[:, r, p, None, :].double())
        torch.testing.assert_close(x @ rot[:, p], y, rtol=0, atol=1e-9)


def _dense_collisions(q_codes, k_codes, q_mask, k_mask):
    c = (q_codes[:, :, None, :] == k_codes[:, None, :, :]).double().mean(-1)  # (BH, Lq, Lk)
    return c * q_mask[:, :, None].double() * k_mask[:, None, :].double()


def test_lsh_reference_equals_dense_collision_form():
    """out = (C ⊙ masks)·V with C the collision rate; the backward is the YOSO-E surrogate with E := C."""
    torch.manual_seed(2)
    BH, L, d, dv, tau, nh = 4, 23, 8, 5, 3, 7
    q, k = (torch.nn.functional.normalize(torch.randn(BH, L, d, dtype=torch.float64), dim=-1) for _ in range(2))
    v = torch.randn(BH, L, dv, dtype=torch.float64)
    mask = _masks(BH, L)
    qc = torch.randint(0, 1 << tau, (BH, L, nh), dtype=torch.int32)
    kc = torch.randint(0, 1 << tau, (BH, L, nh), dtype=torch.int32)
    qr, kr, vr = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = LSHCumulation.apply(qr, kr, vr, mask, mask, qc, kc, tau)
    g = torch.randn_like(out)
    out.backward(g)
    C = _dense_collisions(qc, kc, mask, mask)
    torch.testing.assert_close(out, C @ v)
    w = (g @ v.transpose(-1, -2)) * C * (tau / 2)
    torch.testing.assert_close(vr.grad, C.transpose(-1, -2) @ g)
    torch.testing.assert_close(qr.grad, w @ k)
    torch.testing.assert_close(kr.grad, w.transpose(-1, -2) @ q)


def test_lsh_dense_backward_option_is_expectation_surrogate():
    torch.manual_seed(3)
    BH, L, d, tau = 3, 11, 8, 4
    q, k = (torch.nn.functional.normalize(torch.randn(BH, L, d, dtype=torch.float64), dim=-1) for _ in range(2))
    v = torch.randn(BH, L, d, dtype=torch.float64)
    mask = _masks(BH, L)
    codes = (torch.randint(0, 16, (BH, L, 5), dtype=torch.int32),) * 2
    args = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out, _ = yoso_lsh(*args, mask, mask, num_hash=5, hash_code_len=tau, codes=codes, lsh_backward=False)
    g = torch.randn_like(out)
    out.backward(g)
    e_args = [t.clone().requires_grad_(True) for t in (q, k, v)]
    R.yoso_e_ref(*e_args, mask, mask, tau).backward(g)
    for a, b in zip(args, e_args):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("Lq,Lk", [(6, 6), (4, 7)])
def test_expectation_exact_backward_gradcheck(Lq, Lk):
    """Separate query/key masks: row 0 all real, row 1 suffix-padded, row 2 fully padded queries (real keys),
    row 3 real queries and fully padded keys."""
    torch.manual_seed(4)
    BH, d = 4, 5
    q = torch.nn.functional.normalize(torch.randn(BH, Lq, d, dtype=torch.float64), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(BH, Lk, d, dtype=torch.float64), dim=-1)
    v = torch.randn(BH, Lk, 3, dtype=torch.float64)
    qm, km = _masks(BH, Lq), _masks(BH, Lk, seed=1)
    km[2], qm[3], km[3] = True, True, False
    args = [t.requires_grad_(True) for t in (q, k, v)]
    assert torch.autograd.gradcheck(lambda a, b, c: R.yoso_e_ref(a, b, c, qm, km, 3, "exact"), args)


def test_expectation_surrogate_is_hf_formula_and_chunking_is_invisible(monkeypatch):
    torch.manual_seed(5)
    BH, L, d, tau = 3, 13, 8, 6
    q, k = (torch.nn.functional.normalize(torch.randn(BH, L, d, dtype=torch.float64), dim=-1) for _ in range(2))
    v = torch.randn(BH, L, 4, dtype=torch.float64)
    mask = _masks(BH, L)
    g = torch.randn(BH, L, 4, dtype=torch.float64)

    def run():
        args = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = R.yoso_e_ref(*args, mask, mask, tau)
        out.backward(g)
        return [out.detach()] + [a.grad for a in args]

    full = run()
    monkeypatch.setattr(R, "_BUDGET_ELEMS", 2 * BH * L)  # two query rows per chunk
    chunked = run()
    m = mask.double()
    E = (1 - torch.arccos((q @ k.transpose(-1, -2)).clamp(-1, 1)) / math.pi) ** tau * m[:, :, None] * m[:, None, :]
    w = (g @ v.transpose(-1, -2)) * E * (tau / 2)
    want = [E @ v, w @ k, w.transpose(-1, -2) @ q, E.transpose(-1, -2) @ g]
    for a, b, c in zip(full, chunked, want):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, c)


def test_expectation_saved_e_survives_a_second_backward():
    """E kept from the forward is overwritten by the first backward; retain_graph + a second backward must
    recompute it and give the same gradients."""
    torch.manual_seed(6)
    BH, L, d, tau = 4, 17, 8, 12
    q, k = (torch.nn.functional.normalize(torch.randn(BH, L, d, dtype=torch.float64), dim=-1) for _ in range(2))
    v = torch.randn(BH, L, 3, dtype=torch.float64)
    mask = _masks(BH, L)
    args = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = R.yoso_e_ref(*args, mask, mask, tau)
    g = torch.randn_like(out)
    first = torch.autograd.grad(out, args, g, retain_graph=True)
    second = torch.autograd.grad(out, args, g)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


def test_expectation_under_autocast_keeps_autocasts_elementwise_dtype():
    """Under autocast q·kᵀ comes back in bf16: E must then be the out-of-place formula, whose elementwise
    dtype autocast picks (as before the in-place rewrite), not an in-place chain on the bf16 product."""
    torch.manual_seed(7)
    BH, L, d, tau = 3, 40, 8, 12
    q, k = (torch.nn.functional.normalize(torch.randn(BH, L, d), dim=-1) for _ in range(2))
    v = torch.randn(BH, L, 4)
    mask = _masks(BH, L)
    m = mask.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = R.yoso_e_ref(q, k, v, mask, mask, tau)
        e = (1.0 - torch.arccos((q @ k.transpose(-1, -2)).clamp(-1.0, 1.0)) / math.pi) ** tau
        want = (e * m[:, None, :]) @ (v * m[..., None])
    torch.testing.assert_close(out, want.float() * m[..., None], rtol=0, atol=0)


# ----------------------------------------------------------------------------------------- Triton vs reference (CPU)
def _hash_case(L, d, tau, nh, device, dtype=torch.float32, BH=4):
    torch.manual_seed(L + d + tau)
    x = torch.nn.functional.normalize(torch.randn(BH, L, d, device=device), dim=-1)
    mask = _masks(BH, L, device)
    dmat = R.draw_dmat(BH, nh, tau, R.hash_dim(d), device=device)
    x = _nan_tail(_nan_pad(x.to(dtype), mask))
    return x, mask, dmat


def _check_hash(x, mask, dmat, nh, tau, got=None):
    """Triton codes of x (computed here unless given) equal the float64 reference's away from sign ties."""
    want, margin = R.fast_hash_ref(x.double(), dmat, nh, tau, mask, return_margin=True)
    if got is None:
        got = fast_hash(x, dmat, nh, tau, mask, impl="triton")
    assert got.dtype == torch.int32 and got.shape == want.shape
    D = dmat.shape[-1]
    tie = margin < 1e-5 * D ** 1.5  # projections are D^1.5 x (orthogonal) x; fp32 order differences live here
    differ = got != want
    assert not (differ & ~tie).any(), f"{int((differ & ~tie).sum())} codes differ away from sign ties"
    assert (got[~mask] == 0).all() and (want[~mask] == 0).all()
    assert int((tie & mask[..., None]).sum()) <= max(1, want.numel() // 100)  # ties are rare


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L,d,tau,nh", [(1, 32, 6, 8), (17, 8, 4, 12), (100, 64, 12, 10), (37, 100, 10, 6),
                                        (1000, 32, 8, 4), (5, 1024, 8, 4)])
def test_hash_kernel_matches_reference(L, d, tau, nh, device):
    _check_hash(*_hash_case(L, d, tau, nh, device), nh, tau)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hash_kernel_low_precision_inputs(dtype, device):
    _check_hash(*_hash_case(17, 24, 6, 8, device, dtype=dtype), 8, 6)


@pytest.mark.parametrize("device", DEVICES)
def test_hash_kernel_refuses_wide_heads(device):
    with pytest.raises(ValueError, match="hash widths ≤ 1024"):
        fast_hash(torch.zeros(1, 2, 1025, device=device), R.draw_dmat(1, 4, 8, 2048, device=device), 4, 8,
                  impl="triton")


def _cumulation_case(L, d, dv, tau, nh, device, dtype=torch.float32, BH=4, nan=True):
    torch.manual_seed(100 + L)
    mask = _masks(BH, L, device)
    q, k = (torch.nn.functional.normalize(torch.randn(BH, L, d, device=device), dim=-1) for _ in range(2))
    v = torch.randn(BH, L, dv, device=device)
    g = torch.randn(BH, L, dv, device=device)
    qc = torch.randint(0, 1 << tau, (BH, L, nh), dtype=torch.int32, device=device)
    kc = torch.randint(0, 1 << tau, (BH, L, nh), dtype=torch.int32, device=device)
    q, k, v, g = (t.to(dtype) for t in (q, k, v, g))
    if nan:
        q, k, v, g = (_nan_pad(t, mask) for t in (q, k, v, g))
    return (*(_nan_tail(t) for t in (q, k, v, g)), mask, qc, kc)


def _run_cumulation(q, k, v, g, mask, qc, kc, tau, impl, work=None, hash_group=None):
    # detach, not clone: the kernels must see the NaN past the end of each input (kernel_checks.nan_tail)
    args = [(t if work is None else t.to(work)).detach().requires_grad_(True) for t in (q, k, v)]
    out = LSHCumulation.apply(*args, mask, mask, qc, kc, tau, impl, True, hash_group)
    out.backward(g if work is None else g.to(work))
    return [out.detach()] + [a.grad for a in args]


def _check_cumulation(case, tau, hash_group=None):
    q, k, v, g, mask, qc, kc = case
    gold = _run_cumulation(q, k, v, g, mask, qc, kc, tau, "reference", work=torch.float64)
    low = _run_cumulation(q, k, v, g, mask, qc, kc, tau, "reference")  # same dtypes in and out as the kernel
    got = _run_cumulation(q, k, v, g, mask, qc, kc, tau, "triton", hash_group=hash_group)
    for name, a, b, c in zip(("out", "dq", "dk", "dv"), got, low, gold):
        assert a.dtype == (torch.float32 if name == "out" else q.dtype)
        _assert_within(a.float(), b, c, name)
        pad = ~mask
        assert (a[pad] == 0).all(), f"{name}: padded rows must be 0"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L", [1, 17, 100])
def test_cumulation_kernel_forward_and_grads(L, device):
    _check_cumulation(_cumulation_case(L, d=16, dv=12, tau=4, nh=6, device=device), tau=4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cumulation_kernel_low_precision_inputs(dtype, device):
    _check_cumulation(_cumulation_case(17, d=16, dv=12, tau=4, nh=6, device=device, dtype=dtype), tau=4)


@pytest.mark.parametrize("device", DEVICES)
def test_cumulation_kernel_forward_and_grads_long(device):
    """L = 1000 (many key/query tiles): real, suffix-padded and fully padded rows; τ 8 keeps buckets small
    so the interpreter's segment walk stays within seconds."""
    _check_cumulation(_cumulation_case(1000, d=16, dv=12, tau=8, nh=2, device=device, BH=3), tau=8)


@pytest.mark.parametrize("device", DEVICES)
def test_cumulation_kernel_hash_groups_and_weight_chunks(monkeypatch, device):
    """Several bucket-table launches (hash groups) give the same result as one."""
    monkeypatch.setattr(K, "TABLE_BUDGET_ELEMS", 4 * 16 * 5 * 3)  # BH·2^τ·dv·3: weight chunks of 3
    _check_cumulation(_cumulation_case(9, d=6, dv=5, tau=4, nh=5, device=device), tau=4, hash_group=2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L", [1, 30])
def test_weighted_table_method_equals_segment_method(monkeypatch, L, device):
    """The two Triton weighted cumulations (bucket walk, ver1-style tables in weight chunks) agree."""
    monkeypatch.setattr(K, "TABLE_BUDGET_ELEMS", 4 * 16 * 5 * 3)  # BH·2^τ·dv·3: weight chunks of 3
    q, k, v, g, mask, qc, kc = _cumulation_case(L, d=5, dv=7, tau=4, nh=5, device=device)
    a = K.lsh_weighted_cumulation_triton(mask, qc, g, mask, kc, v, k, 4)
    b = K.lsh_weighted_cumulation_triton(mask, qc, g, mask, kc, v, k, 4, hash_group=2, method="table")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(a).all() and (a[~mask] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_end_to_end_triton_equals_reference_given_dmat(device):
    """yoso_lsh hashing with one Dmat: the Triton codes equal the reference's away from sign ties, and the
    Triton output equals the reference cumulation on the same (Triton) codes."""
    torch.manual_seed(7)
    BH, L, d, tau, nh = 3, 20, 16, 4, 8
    mask = _masks(BH, L, device)
    q, k = (torch.nn.functional.normalize(torch.randn(BH, L, d, device=device), dim=-1) for _ in range(2))
    v = torch.randn(BH, L, 16, device=device)
    dmat = R.draw_dmat(BH, nh, tau, R.hash_dim(d), device=device)
    out_t, (qt, kt) = yoso_lsh(q, k, v, mask, mask, num_hash=nh, hash_code_len=tau, dmat=dmat, impl="triton")
    _check_hash(q, mask, dmat, nh, tau, got=qt)
    _check_hash(k, mask, dmat, nh, tau, got=kt)
    want, _ = yoso_lsh(q, k, v, mask, mask, num_hash=nh, hash_code_len=tau, codes=(qt, kt))
    torch.testing.assert_close(out_t, want, rtol=1e-5, atol=1e-6)


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        fast_hash(torch.zeros(1, 2, 4), R.draw_dmat(1, 2, 2, 32), 2, 2, impl="triton")


# ----------------------------------------------------------------------------------------- CUDA
cuda_only = pytest.mark.skipif(not torch.cuda.is_available() or triton_unavailable_reason("cuda") is not None,
                               reason="needs CUDA and triton")


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("L", [1, 1001, 4000])
def test_cuda_hash_kernel(dtype, L):
    _check_hash(*_hash_case(L, 32, 12, 32, "cuda", dtype=dtype, BH=8), 32, 12)


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("L", [1, 1001, 4000])
def test_cuda_cumulation_kernel(dtype, L):
    _check_cumulation(_cumulation_case(L, d=32, dv=32, tau=8, nh=32, device="cuda", dtype=dtype, BH=8), tau=8)
