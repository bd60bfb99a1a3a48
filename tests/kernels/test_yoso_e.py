"""YOSO-E streaming Triton kernels (``kernels/yoso/expectation.py``) against the PyTorch reference
(``kernels/yoso/reference.py``), on CPU under ``TRITON_INTERPRET=1`` in fp32 and on CUDA in fp32/bf16.
Tolerances follow STYLE §6: the kernel's error w.r.t. a float64 golden run is at most 2x the reference's
error at the same input precision plus a small atol, for the output and every gradient."""
from __future__ import annotations

import math
import os

import torch

if not torch.cuda.is_available():  # `import torch` does not import triton; kernels are decorated at import
    os.environ.setdefault("TRITON_INTERPRET", "1")  # CPU: run the @triton.jit kernels in the interpreter

import pytest  # noqa: E402

from kernel_checks import require_triton  # noqa: E402

require_triton()

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from kernels.yoso import expectation as X  # noqa: E402
from kernels.yoso import reference as R  # noqa: E402
from kernel_checks import assert_within as _assert_within  # noqa: E402
from kernel_checks import masks as _masks  # noqa: E402
from kernel_checks import nan_pad as _nan_pad  # noqa: E402
from kernel_checks import nan_tail as _nan_tail  # noqa: E402
from kernel_checks import triton_devices  # noqa: E402
from kernels.yoso.function import triton_unavailable_reason  # noqa: E402
from models.attention import BackendUnsupported, build_attention  # noqa: E402

_cpu_reason = triton_unavailable_reason("cpu")
needs_interp = pytest.mark.skipif(_cpu_reason is not None, reason=f"CPU Triton tests: {_cpu_reason}")
MODES = ("surrogate", "exact")
DEVICES = triton_devices()  # "cpu" (interpreter) and "cuda" (compiled, marked gpu), each skipped with a reason
# opcheck (device, dtype): fp32 on each device, bf16 only compiled on CUDA (the interpreter's bf16 tl.dot is wrong)
OPCHECK_CASES = [pytest.param(p.values[0], dtype, marks=p.marks, id=f"{p.values[0]}-{name}")
                 for p in DEVICES for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16"))
                 if dtype == torch.float32 or p.values[0] == "cuda"]


def _case(BH, Lq, Lk, d, dv, device="cpu", dtype=torch.float32, q_mask=None, k_mask=None, seed=0):
    """Unit q, k (correlated, so E is not flat), v, an output gradient; NaN-filled padding and NaN past the
    end of each tensor (:func:`kernel_checks.nan_tail`)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(BH, Lq, d, generator=g)
    k = torch.randn(BH, Lk, d, generator=g) + 0.5 * torch.randn(BH, 1, d, generator=g)
    q, k = (torch.nn.functional.normalize(t, dim=-1) for t in (q, k))
    v = torch.randn(BH, Lk, dv, generator=g)
    grad = torch.randn(BH, Lq, dv, generator=g)
    qm = _masks(BH, Lq, seed=seed) if q_mask is None else q_mask
    km = qm if k_mask is None else k_mask
    q, grad = (_nan_pad(t, qm) for t in (q, grad))
    k, v = (_nan_pad(t, km) for t in (k, v))
    return ([_nan_tail(t.to(device=device, dtype=dtype)) for t in (q, k, v)]
            + [_nan_tail(grad.to(device)), qm.to(device), km.to(device)])


def _run(fn, q, k, v, grad, qm, km, tau, mode, work=None):
    # detach, not clone: the kernels must see the inputs' strides and the NaN past their end
    args = [(t if work is None else t.to(work)).detach().requires_grad_(True) for t in (q, k, v)]
    out = fn(*args, qm, km, tau, mode)
    out.backward(grad if work is None else grad.to(work))
    return [out.detach()] + [a.grad for a in args]


def _check(case, tau, mode):
    q, k, v, grad, qm, km = case
    gold = _run(R.yoso_e_ref, q, k, v, grad, qm, km, tau, mode, work=torch.float64)
    low = _run(R.yoso_e_ref, q, k, v, grad, qm, km, tau, mode)  # same dtypes in and out as the kernel
    got = _run(X.yoso_e_triton, q, k, v, grad, qm, km, tau, mode)
    pads = (~qm, ~qm, ~km, ~km)
    for name, a, b, c, pad, x in zip(("out", "dq", "dk", "dv"), got, low, gold, pads, (None, q, k, v)):
        assert a.dtype == (torch.float32 if x is None else x.dtype), name
        _assert_within(a.float(), b, c, f"{mode} {name}")
        assert (a[pad] == 0).all(), f"{mode} {name}: padded rows must be 0"
    return got


# ----------------------------------------------------------------------------------------- CPU interpreter
@triton.jit
def _pointwise_kernel(s_ptr, e_ptr, de_ptr, N, TAU: tl.constexpr, EXACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    e, de = X._expectation(tl.load(s_ptr + offs, mask=m, other=0.0), TAU, EXACT)
    tl.store(e_ptr + offs, e, mask=m)
    tl.store(de_ptr + offs, de, mask=m)


def _cosines():
    """A grid over [−1.2, 1.2] plus the last 200 fp32 values below 1 and above −1 (where the exact slope's
    clamp of 1 − s² at 1e-6 binds) and the neighbours of ±1/2 (the arccos branch switch)."""
    edge = [torch.tensor(1.0)]
    for _ in range(200):
        edge.append(torch.nextafter(edge[-1], torch.tensor(0.0)))
    edge = torch.stack(edge)
    half = torch.tensor([0.5, -0.5])
    return torch.cat([torch.linspace(-1.2, 1.2, 4001), edge, -edge, half, torch.nextafter(half, torch.ones(2)),
                      torch.nextafter(half, torch.zeros(2))])


@pytest.mark.skipif(_cpu_reason is not None and not torch.cuda.is_available(), reason="needs CUDA or the interpreter")
@pytest.mark.parametrize("tau", [1, 2, 12, 24])
@pytest.mark.parametrize("mode", MODES)
def test_elementwise_expectation_and_slope(tau, mode):
    """The kernels' E and ∂E/∂s (polynomial arccos, binary power, clamps) against the float64 formula on the
    same fp32 cosines: within 2x the fp32 reference formula's error, and E to ~τ·2e-7 relative everywhere
    (no cancellation near s = −1, where the reference's 1 − arccos(s)/π loses digits). CUDA when present."""
    s = _cosines().to("cuda" if torch.cuda.is_available() else "cpu")
    e, de = torch.empty_like(s), torch.empty_like(s)
    _pointwise_kernel[(triton.cdiv(s.numel(), 1024),)](s, e, de, s.numel(), TAU=tau, EXACT=mode == "exact",
                                                       BLOCK=1024)

    def formula(x):  # expectation_backward's formulas, out of place
        x = x.clamp(-1.0, 1.0)
        p = 1.0 - torch.arccos(x) / math.pi
        if mode == "surrogate":
            return p ** tau, p ** tau * (tau / 2.0)
        return p ** tau, tau * p ** (tau - 1) / (math.pi * torch.sqrt((1.0 - x * x).clamp_min(R.EXACT_GRAD_MIN_1MS2)))

    gold, low = formula(s.double()), formula(s)
    for name, got, ref, want in zip(("E", "dE/ds"), (e, de), low, gold):
        _assert_within(got, ref, want, f"{mode} τ={tau} {name}", rel_atol=1e-7)
    rel = ((e.double() - gold[0]).abs() / gold[0].clamp_min(1e-30)).max().item()
    assert rel <= 2.5e-7 * (tau + 1), f"E relative error {rel:.2e}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("L", [1, 17, 100])
def test_forward_and_grads(L, mode, device):
    _check(_case(4, L, L, d=16, dv=12, device=device), tau=8, mode=mode)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype, mode, device):
    _check(_case(4, 17, 17, d=16, dv=12, device=device, dtype=dtype), tau=8, mode=mode)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("d, dv", [(16, 12), (32, 20), (64, 64)])
def test_gpu_tiling_in_the_interpreter(monkeypatch, mode, d, dv, device):
    """The GPU's tilings (several query and key tiles, BLOCK_M ≠ BLOCK_N at width 32, masked tails) run on
    the interpreter (and compiled on CUDA) and match the reference."""
    monkeypatch.setattr(X, "INTERPRETER_BLOCK", None)
    tiles = {k: X._config(d, dv, k, interpreted=True) for k in X.KERNELS}
    assert all(t[:2] == X._GPU_TILES[max(t[2], t[3])][k][:2] for k, t in tiles.items())
    _check(_case(2, 100, 100, d=d, dv=dv, seed=1, device=device), tau=12, mode=mode)


def test_config_rejects_unknown_kernel():
    with pytest.raises(ValueError, match="kernel 'bwd'"):
        X._config(64, 64, "bwd", interpreted=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_long_sequence(mode, device):
    """L = 1000 (interpreter: 7 tiles of 128 and a tail of 104), τ = 12 (the LRA setting), BH 3: a real row,
    a row padded from 500 and a fully padded row."""
    _check(_case(3, 1000, 1000, d=16, dv=16, device=device), tau=12, mode=mode)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_cross_lengths_separate_masks_odd_dims(mode, device):
    """Lq ≠ Lk, different query and key masks (one batch·head with real queries but no real key), d 5, dv 7."""
    BH, Lq, Lk = 4, 23, 70
    qm, km = _masks(BH, Lq, seed=2), _masks(BH, Lk, seed=3)
    qm[2] = True  # row 2: every query real, every key padded -> output and gradients 0
    _check(_case(BH, Lq, Lk, d=5, dv=7, q_mask=qm, k_mask=km, device=device), tau=3, mode=mode)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d,dv", [(33, 20), (130, 3)])
def test_wide_head_dims(d, dv, device):
    """Dims padded to 64 / 256 tiles (the GPU's 32- and 16-row blocks)."""
    _check(_case(4, 40, 40, d=d, dv=dv, device=device), tau=6, mode="exact")


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs_and_bitwise_repeatability(device):
    q, k, v, grad, qm, km = _case(4, 37, 37, d=8, dv=6, seed=4, device=device)
    base = _run(X.yoso_e_triton, q, k, v, grad, qm, km, 5, "exact")
    again = _run(X.yoso_e_triton, q, k, v, grad, qm, km, 5, "exact")
    for a, b in zip(base, again):
        assert torch.equal(a, b), "kernels must be deterministic"
    strided = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k)]  # (BH, L, d), L-stride 1
    v_nc = torch.cat([v, torch.zeros_like(v)], dim=-1)[..., :6]  # row stride 12
    g_nc = torch.stack([grad, grad], dim=2).flatten(1, 2)[:, ::2]  # every other row of a doubled tensor
    assert not any(t.is_contiguous() for t in (*strided, v_nc, g_nc))
    for a, b in zip(_run(X.yoso_e_triton, *strided, v_nc, g_nc, qm, km, 5, "exact"), base):
        assert torch.equal(a, b), "strides must not change the result"


@pytest.mark.parametrize("device", DEVICES)
def test_no_masks_and_low_precision_value_dtype(device):
    """Masks may be None; v may be bf16 while q, k are fp32 (what YosoEAttention passes)."""
    q, k, v, grad, _, _ = _case(2, 9, 9, d=4, dv=4, q_mask=torch.ones(2, 9, dtype=torch.bool), device=device)
    v = _nan_tail(v.bfloat16())
    got = _run(X.yoso_e_triton, q, k, v, grad, None, None, 4, "surrogate")
    want = _run(R.yoso_e_ref, q, k, v, grad, None, None, 4, "surrogate")
    assert got[3].dtype == torch.bfloat16
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device,dtype", OPCHECK_CASES)
@pytest.mark.parametrize("masked", [True, False])
def test_opcheck(masked, device, dtype):
    q, k, v, grad, qm, km = _case(2, 5, 6, d=4, dv=3, device=device, dtype=dtype, q_mask=_masks(2, 5),
                                  k_mask=_masks(2, 6, seed=1))
    q, k, v, grad = (torch.nan_to_num(t) for t in (q, k, v, grad))  # without masks the padding is real
    qm, km = (qm, km) if masked else (None, None)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    torch.library.opcheck(torch.ops.lra.yoso_e_cumulation.default, (q, k, v, qm, km, 4, "exact"))
    torch.library.opcheck(torch.ops.lra.yoso_e_cumulation_backward.default,
                          (grad, q.detach(), k.detach(), v.detach(), qm, km, 4, "surrogate"))


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_backend_has_no_graph_break(device):
    """torch.compile(fullgraph=True) through the attention backend (impl=triton) forward + backward: the ops
    are opaque to Dynamo, so this runs on CPU (interpreter) too; same numbers as eager."""
    torch.manual_seed(0)
    attn = build_attention("yoso_e", num_heads=2, head_dim=8, max_len=16, hash_code_len=6,
                           impl="triton").to(device)
    q, k, v = (torch.randn(2, 2, 16, 8).to(device) for _ in range(3))
    m = torch.ones(2, 16, dtype=torch.bool, device=device)
    m[1, 11:] = False

    def step(fn):
        args = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = fn(*args, key_padding_mask=m)
        out.square().sum().backward()
        return [out.detach()] + [a.grad for a in args]

    eager = step(attn)
    compiled = step(torch.compile(attn, backend="aot_eager", fullgraph=True))
    assert attn.impl_used == "triton"
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@needs_interp
@pytest.mark.parametrize("backward", MODES)
def test_backend_triton_equals_reference(backward):
    """The full backend (normalisation, conv branch) with impl=triton and impl=reference; auto on CPU = reference."""
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 2, 24, 8) for _ in range(3))
    m = torch.ones(2, 24, dtype=torch.bool)
    m[1, 7:] = False
    results = {}
    for impl in ("auto", "reference", "triton"):
        torch.manual_seed(2)
        attn = build_attention("yoso_e", num_heads=2, head_dim=8, max_len=24, hash_code_len=5, backward=backward,
                               conv_window=3, impl=impl)
        args = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = attn(*args, key_padding_mask=m)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results[impl] = [out.detach()] + [a.grad for a in args]
        assert attn.impl_used == ("reference" if impl == "auto" else impl)
    for a, b in zip(results["triton"], results["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.nn.functional.normalize(torch.randn(1, 2, 2, 4), dim=-1)
    attn = build_attention("yoso_e", num_heads=2, head_dim=4, max_len=2, impl="triton")
    with pytest.raises(BackendUnsupported, match="TRITON_INTERPRET"):
        attn(q, q, q)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        X.yoso_e_triton(q[0], q[0], q[0])
    auto = build_attention("yoso_e", num_heads=2, head_dim=4, max_len=2)
    auto(q, q, q)
    assert auto.impl_used == "reference"


@needs_interp
def test_triton_refuses_fp64_wide_heads_and_bad_arguments():
    q = torch.randn(1, 2, 2, 4, dtype=torch.float64)
    with pytest.raises(BackendUnsupported, match="fp64"):
        build_attention("yoso_e", num_heads=2, head_dim=4, max_len=2, impl="triton")(q, q, q)
    wide = torch.randn(1, 1, 2, 300)
    with pytest.raises(BackendUnsupported, match="≤ 256"):
        build_attention("yoso_e", num_heads=1, head_dim=300, max_len=2, impl="triton")(wide, wide, wide)
    with pytest.raises(ValueError, match="auto, reference or triton"):
        build_attention("yoso_e", num_heads=2, head_dim=4, max_len=2, impl="cuda")
    x = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="fp64"):
        X.yoso_e_triton(x.double(), x.double(), x.double())
    with pytest.raises(ValueError, match="≤ 256"):
        X.yoso_e_triton(torch.randn(1, 3, 300), torch.randn(1, 3, 300), x)
    with pytest.raises(ValueError, match="surrogate"):
        X.yoso_e_triton(x, x, x, mode="autograd")


# ----------------------------------------------------------------------------------------- CUDA
cuda_only = pytest.mark.skipif(not torch.cuda.is_available() or triton_unavailable_reason("cuda") is not None,
                               reason="needs CUDA and triton")


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("L", [1001, 4000])
def test_cuda_kernels(L, dtype, mode):
    _check(_case(4, L, L, d=32, dv=32, device="cuda", dtype=dtype), tau=12, mode=mode)


@pytest.mark.gpu
@cuda_only
def test_cuda_auto_runs_triton():
    attn = build_attention("yoso_e", num_heads=2, head_dim=32, max_len=300).cuda()
    q = torch.randn(2, 2, 300, 32, device="cuda", dtype=torch.bfloat16)
    out = attn(q, q, q)
    assert attn.impl_used == "triton" and out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    attn(q.double(), q.double(), q.double())
    assert attn.impl_used == "reference"  # auto: fp64 golden runs go to the reference
