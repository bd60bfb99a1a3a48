"""YOSO's torch.library ops (``lra::yoso_*``): opcheck with both impls, exact gradients of the linear ops,
the surrogate gradient equal to the former autograd.Function, and ``torch.compile(fullgraph=True)`` of
:func:`yoso_lsh` against eager (forward and gradients). The reference cases run on CPU; the Triton cases of
opcheck, gradient equality and compile run on CPU under the interpreter and compiled on CUDA (``gpu``)."""
from __future__ import annotations

import os
import shutil

import torch

if not torch.cuda.is_available():  # as tests/kernels/test_yoso.py: the CPU Triton tests use the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from functorch.compile import make_boxed_func  # noqa: E402
from torch._dynamo.backends.common import aot_autograd  # noqa: E402

from kernel_checks import triton_devices, triton_import_error  # noqa: E402
from kernels.yoso import reference as R  # noqa: E402
from kernels.yoso.function import (LSHCumulation, fast_hash, lsh_cumulation, lsh_weighted_cumulation,  # noqa: E402
                                   triton_unavailable_reason, yoso_lsh)

_cpu_reason = triton_import_error() or triton_unavailable_reason("cpu")  # fails under LRA_REQUIRE_TRITON=1
needs_interp = pytest.mark.skipif(_cpu_reason is not None, reason=f"CPU Triton tests: {_cpu_reason}")
IMPLS = ["reference", pytest.param("triton", marks=needs_interp)]
DEVICES = {p.values[0]: p for p in triton_devices()}  # "cpu" (interpreter), "cuda" (compiled, marked gpu)


def _on(impl, device, *values):
    """``pytest.param(impl, device, *values)`` with the id impl-device-values: a Triton case carries its
    device's marks from :func:`triton_devices` (skipped with a reason), a reference case runs on CPU."""
    marks = DEVICES[device].marks if impl == "triton" else ()
    names = (str(v).removeprefix("torch.") for v in values)
    return pytest.param(impl, device, *values, marks=marks, id="-".join((impl, device, *names)))


IMPL_DEVICES = [_on("reference", "cpu"), _on("triton", "cpu"), _on("triton", "cuda")]
# bf16 Triton only compiled on CUDA: the interpreter's bf16 tl.dot is wrong
CUMULATION_CASES = [_on("reference", "cpu", torch.float32), _on("reference", "cpu", torch.float64),
                    _on("triton", "cpu", torch.float32), _on("triton", "cuda", torch.float32),
                    _on("triton", "cuda", torch.bfloat16)]

OPS = torch.ops.lra
BH, LQ, LK, D, DV, TAU, NH = 3, 5, 7, 6, 4, 3, 4  # Lq ≠ Lk and d ≠ dv catch transposed shapes


def _mask(length, device="cpu"):
    """Row 0 all real, row 1 suffix-padded, row 2 fully padded."""
    m = torch.ones(BH, length, dtype=torch.bool)
    m[1, length // 2:] = False
    m[2] = False
    return m.to(device)


def _case(dtype=torch.float32, seed=0, grad=True, device="cpu"):
    """Drawn on CPU (the same values on every device), then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.nn.functional.normalize(torch.randn(BH, n, D, generator=g, dtype=torch.float64), dim=-1)
            for n in (LQ, LK))
    v = torch.randn(BH, LK, DV, generator=g, dtype=torch.float64)
    q, k, v = (t.to(device, dtype).requires_grad_(grad) for t in (q, k, v))
    qm, km = _mask(LQ, device), _mask(LK, device)
    # few codes (2^τ = 8) so that buckets collide often
    qc = torch.randint(0, 1 << TAU, (BH, LQ, NH), generator=g, dtype=torch.int32)
    kc = torch.randint(0, 1 << TAU, (BH, LK, NH), generator=g, dtype=torch.int32)
    return q, k, v, qm, km, qc.to(device), kc.to(device)


# ----------------------------------------------------------------------------------------- opcheck
@pytest.mark.parametrize("impl,device", IMPL_DEVICES)
@pytest.mark.parametrize("masked", [True, False])
def test_opcheck_fast_hash(impl, device, masked):
    q, *_ = _case(grad=False, device=device)
    dmat = R.draw_dmat(BH, NH, TAU, R.hash_dim(D), generator=torch.Generator().manual_seed(1)).to(device)
    rot = R.rotation_matrices(dmat).contiguous() if impl == "triton" else None
    mask = _mask(LQ, device) if masked else None
    torch.library.opcheck(OPS.yoso_fast_hash.default, (q, dmat, NH, TAU, mask, impl, rot))


@pytest.mark.parametrize("impl,device,dtype", CUMULATION_CASES)
@pytest.mark.parametrize("masked", [True, False])
def test_opcheck_cumulations(impl, device, dtype, masked):
    q, k, v, qm, km, qc, kc = _case(dtype, device=device)
    qm, km = (qm, km) if masked else (None, None)
    g = torch.randn(BH, LQ, DV, dtype=dtype).to(device).requires_grad_(True)
    torch.library.opcheck(OPS.yoso_lsh_cumulation.default, (qc, kc, qm, km, v, TAU, impl, None))
    torch.library.opcheck(OPS.yoso_lsh_weighted_cumulation.default, (qm, qc, g, km, kc, v, k, TAU, impl, None))


@pytest.mark.parametrize("impl,device,dtype", CUMULATION_CASES)
@pytest.mark.parametrize("lsh_backward", [True, False])
def test_opcheck_cumulation_qkv(impl, device, dtype, lsh_backward):
    q, k, v, qm, km, qc, kc = _case(dtype, device=device)
    torch.library.opcheck(OPS.yoso_lsh_cumulation_qkv.default,
                          (q, k, v, qm, km, qc, kc, TAU, impl, lsh_backward, None))


def test_fake_kernels_give_dtypes_and_check_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q, k, v, qm, km, qc, kc = _case(torch.float64, grad=False)
        dmat = torch.ones(BH, 3, 1, 32)
        assert fast_hash(q, dmat, NH, TAU, qm).dtype == torch.int32
        assert fast_hash(q, dmat, NH, TAU, qm).shape == (BH, LQ, NH)
        assert LSHCumulation.apply(q, k, v, qm, km, qc, kc, TAU).dtype == torch.float64
        assert lsh_cumulation(qc, kc, qm, km, v.float(), TAU).dtype == torch.float32
        if _cpu_reason is None:
            assert lsh_cumulation(qc, kc, qm, km, v, TAU, impl="triton").dtype == torch.float32
        with pytest.raises(ValueError, match="k_codes"):
            LSHCumulation.apply(q, k, v, qm, km, qc, qc, TAU)
        with pytest.raises(ValueError, match="impl"):
            lsh_cumulation(qc, kc, qm, km, v, TAU, impl="cuda")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad", [-1, 1 << TAU])
def test_out_of_range_codes_are_refused(impl, bad):
    """Caller-given codes outside [0, 2^τ) raise (the kernels would index past their bucket; the reference
    raised IndexError or silently read another hash's or batch·head's bucket). Every entry counts, padded rows
    too."""
    q, k, v, qm, km, qc, kc = _case()
    for name in ("q_codes", "k_codes"):
        msg = rf"{name} must lie in \[0, 2\*\*hash_code_len\) = \[0, {1 << TAU}\) for hash_code_len={TAU}"
        qb, kb = qc.clone(), kc.clone()
        (qb if name == "q_codes" else kb)[2, 0, 1] = bad  # row 2 is fully padded
        calls = (lambda: yoso_lsh(q, k, v, qm, km, num_hash=NH, hash_code_len=TAU, codes=(qb, kb), impl=impl),
                 lambda: LSHCumulation.apply(q, k, v, qm, km, qb, kb, TAU, impl),
                 lambda: lsh_cumulation(qb, kb, qm, km, v, TAU, impl=impl),
                 lambda: lsh_weighted_cumulation(qm, qb, q, km, kb, k, v, TAU, impl=impl))
        for call in calls:
            with pytest.raises(ValueError, match=msg):
                call()


# ----------------------------------------------------------------------------------------- gradients
def test_linear_ops_have_exact_gradients():
    """lra::yoso_lsh_cumulation is linear in v, the weighted one trilinear: their formulas are exact. So is
    dV of lra::yoso_lsh_cumulation_qkv with the LSH backward (the cumulation with roles swapped); its dQ, dK
    (surrogate) and the dense backward's dV (YOSO-E's Eᵀ G) are not gradients of the sampled forward."""
    q, k, v, qm, km, qc, kc = _case(torch.float64)
    assert torch.autograd.gradcheck(lambda v_: lsh_cumulation(qc, kc, qm, km, v_, TAU), (v,))
    qw = torch.randn(BH, LQ, D, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: lsh_weighted_cumulation(qm, qc, a, km, kc, b, c, TAU),
                                    (qw, k, v))
    qd, kd = q.detach(), k.detach()
    assert torch.autograd.gradcheck(lambda v_: LSHCumulation.apply(qd, kd, v_, qm, km, qc, kc, TAU), (v,))


class _FormerLSHCumulation(torch.autograd.Function):
    """Verbatim copy of ``kernels.yoso.function.LSHCumulation`` before the ops were registered (calling the
    reference / Triton functions directly), to check that the op's gradients did not change."""

    @staticmethod
    def forward(ctx, q, k, v, q_mask, k_mask, q_codes, k_codes, hash_code_len, impl, lsh_backward, hash_group):
        out = _former_cumulation(q_codes, k_codes, q_mask, k_mask, v, hash_code_len, impl, hash_group)
        ctx.save_for_backward(q, k, v, q_mask, k_mask, q_codes, k_codes)
        ctx.cfg = (hash_code_len, impl, lsh_backward, hash_group)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, k, v, q_mask, k_mask, q_codes, k_codes = ctx.saved_tensors
        tau, impl, lsh_backward, hash_group = ctx.cfg
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        work = torch.float64 if grad.dtype == torch.float64 else torch.float32
        g = grad.to(work).contiguous()
        dq = dk = dv = None
        if not lsh_backward:
            dq, dk, dv = R.expectation_backward(R._masked(q, q_mask, work), R._masked(k, k_mask, work),
                                                R._masked(v, k_mask, work), q_mask, k_mask,
                                                R._masked(g, q_mask, work), tau, "surrogate",
                                                needs=(need_q, need_k, need_v))
        else:
            if need_v:
                dv = _former_cumulation(k_codes, q_codes, k_mask, q_mask, g, tau, impl, hash_group)
            if need_q:
                dq = (tau / 2.0) * _former_weighted(q_mask, q_codes, g, k_mask, k_codes, v, k, tau, impl, hash_group)
            if need_k:
                dk = (tau / 2.0) * _former_weighted(k_mask, k_codes, v, q_mask, q_codes, g, q, tau, impl, hash_group)
        dq, dk, dv = (None if t is None else t.to(x.dtype) for t, x in zip((dq, dk, dv), (q, k, v)))
        return dq, dk, dv, None, None, None, None, None, None, None, None


def _former_cumulation(qc, kc, qm, km, v, tau, impl, hash_group):
    if impl == "triton":
        from kernels.yoso.kernel import lsh_cumulation_triton
        return lsh_cumulation_triton(qc, kc, qm, km, v, tau, hash_group)
    return R.lsh_cumulation_ref(qc, kc, qm, km, v, tau)


def _former_weighted(qm, qc, qw, km, kc, kw, val, tau, impl, hash_group):
    if impl == "triton":
        from kernels.yoso.kernel import lsh_weighted_cumulation_triton
        return lsh_weighted_cumulation_triton(qm, qc, qw, km, kc, kw, val, tau, hash_group)
    return R.lsh_weighted_cumulation_ref(qm, qc, qw, km, kc, kw, val, tau)


@pytest.mark.parametrize("impl,device", IMPL_DEVICES)
@pytest.mark.parametrize("lsh_backward", [True, False])
@pytest.mark.parametrize("dtypes", [(torch.float64,) * 3, (torch.float32,) * 3,
                                    (torch.float32, torch.float32, torch.bfloat16)])
def test_op_gradients_equal_former_autograd_function(impl, device, lsh_backward, dtypes):
    """Bitwise equal on CPU; on CUDA the cumulation's atomics reorder fp32 sums, so to the last bits."""
    if impl == "triton" and torch.float64 in dtypes:
        pytest.skip("the Triton kernels take fp32/bf16/fp16")
    q, k, v, qm, km, qc, kc = _case(device=device)
    results = []
    for fn in (LSHCumulation.apply, _FormerLSHCumulation.apply):
        args = [t.detach().to(dt).requires_grad_(True) for t, dt in zip((q, k, v), dtypes)]
        out = fn(*args, qm, km, qc, kc, TAU, impl, lsh_backward, None)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype).to(device)
        out.backward(g)
        results.append([out] + [a.grad for a in args])
    tol = {"rtol": 0, "atol": 0} if device == "cpu" else {}  # {}: assert_close's defaults for the dtype
    for name, got, want, dt in zip(("out", "dq", "dk", "dv"), *results, (None,) + dtypes):
        assert dt is None or got.dtype == dt, f"{name}: {got.dtype}, input {dt}"
        torch.testing.assert_close(got, want, msg=name, **tol)
    assert (results[0][1][~qm] == 0).all() and (results[0][3][~km] == 0).all()


def test_only_requested_gradients_are_computed():
    q, k, v, qm, km, qc, kc = _case()
    out = LSHCumulation.apply(q.detach(), k.detach(), v, qm, km, qc, kc, TAU)
    out.sum().backward()
    assert v.grad is not None and q.grad is None and k.grad is None


# ----------------------------------------------------------------------------------------- torch.compile
def _capturing_backend():
    """aot_eager that keeps the Dynamo graph and the AOT forward/backward graphs for inspection."""
    graphs = {"dynamo": [], "fw": [], "bw": []}

    def keep(kind):
        def compiler(gm, example_inputs):
            graphs[kind].append(gm)
            return make_boxed_func(gm.forward)
        return compiler

    aot = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"))

    def backend(gm, example_inputs):
        graphs["dynamo"].append(gm)
        return aot(gm, example_inputs)

    return backend, graphs


def _eager_and_compiled(fn, backend, *inputs):
    results = []
    for f in (fn, torch.compile(fn, fullgraph=True, backend=backend)):
        args = [t.detach().clone().requires_grad_(True) for t in inputs]
        out, codes = f(*args)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape))
        results.append(([out.detach(), *codes], [a.grad for a in args]))
    return results


@pytest.mark.parametrize("lsh_backward", [True, False])
def test_compile_fullgraph_with_codes_matches_eager(lsh_backward):
    torch._dynamo.reset()
    q, k, v, qm, km, qc, kc = _case()

    def fn(q, k, v):
        return yoso_lsh(q, k, v, qm, km, num_hash=NH, hash_code_len=TAU, codes=(qc, kc),
                        lsh_backward=lsh_backward)

    backend, graphs = _capturing_backend()
    (eo, eg), (co, cg) = _eager_and_compiled(fn, backend, q, k, v)
    for a, b in zip(eo + eg, co + cg):
        torch.testing.assert_close(b, a)
    assert len(graphs["dynamo"]) == 1 and "yoso_lsh_cumulation_qkv" in graphs["dynamo"][0].code
    bw = graphs["bw"][0].code
    if lsh_backward:  # the surrogate backward is traced as calls of the two other ops
        assert "yoso_lsh_weighted_cumulation" in bw and "yoso_lsh_cumulation" in bw
    else:  # the dense YOSO-E surrogate is traced as plain aten ops
        assert "acos" in bw and "yoso_lsh" not in bw


@pytest.mark.parametrize("impl,device", IMPL_DEVICES)
def test_compile_fullgraph_hashing_with_dmat_matches_eager(impl, device):
    torch._dynamo.reset()
    q, k, v, qm, km, _, _ = _case(device=device)
    dmat = R.draw_dmat(BH, NH, TAU, R.hash_dim(D), generator=torch.Generator().manual_seed(2)).to(device)

    def fn(q, k, v):
        return yoso_lsh(q, k, v, qm, km, num_hash=NH, hash_code_len=TAU, dmat=dmat, impl=impl)

    backend, graphs = _capturing_backend()
    (eo, eg), (co, cg) = _eager_and_compiled(fn, backend, q, k, v)
    for a, b in zip(eo + eg, co + cg):
        torch.testing.assert_close(b, a)
    assert len(graphs["dynamo"]) == 1 and graphs["dynamo"][0].code.count("yoso_fast_hash") == 2


@pytest.mark.skipif(not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++", "c++")),
                    reason="inductor on CPU needs a C++ compiler")
def test_compile_inductor_matches_eager():
    torch._dynamo.reset()
    q, k, v, qm, km, qc, kc = _case()

    def fn(q, k, v):
        out, codes = yoso_lsh(q, k, v, qm, km, num_hash=NH, hash_code_len=TAU, codes=(qc, kc))
        return torch.nn.functional.normalize(out, dim=-1), codes

    (eo, eg), (co, cg) = _eager_and_compiled(fn, "inductor", q, k, v)
    for a, b in zip(eo + eg, co + cg):
        torch.testing.assert_close(b, a)


def test_compile_fullgraph_whole_yoso_backend():
    """The attention backend end to end (normalisation, fresh Dmat draw, one mask tensor for q and k — the
    former autograd.Function broke the graph there: Dynamo refuses a tensor passed twice to .apply)."""
    from models.attention import build_attention
    torch._dynamo.reset()
    B, H, L, d = 2, 2, 12, 32
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(B, H, L, d, generator=g, requires_grad=True) for _ in range(3))
    m = torch.ones(B, L, dtype=torch.bool)
    m[1, L // 2:] = False
    attn = build_attention("yoso", num_heads=H, head_dim=d, max_len=L, num_hash=NH, hash_code_len=TAU,
                           conv_window=3)
    backend, graphs = _capturing_backend()
    results = []
    for f in (attn, torch.compile(attn, fullgraph=True, backend=backend)):
        torch.manual_seed(0)  # the same Dmat draw (aot_eager runs torch.randint as eager does)
        out = f(q, k, v, key_padding_mask=m)
        results.append([out, *torch.autograd.grad(out.square().sum(), (q, k, v))])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a)
    assert len(graphs["dynamo"]) == 1 and "yoso_lsh_cumulation_qkv" in graphs["dynamo"][0].code
