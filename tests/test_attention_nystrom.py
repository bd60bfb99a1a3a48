"""Nyströmformer numerics: exact limit, efficient == dense formula, padding, init quirk, HF parity."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from models.attention import build_attention
from models.attention.math import softmax_attention_ref
from models.attention.nystrom import depthwise_seq_conv, iterative_pinv, nystrom_attention_ref


def _nys(H=2, d=8, **opts):
    opts.setdefault("conv_kernel", None)
    return build_attention("nystrom", num_heads=H, head_dim=d, max_len=4096, **opts).eval()


def _inputs(B=3, H=2, N=40, d=8, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, N, d, generator=g, dtype=dtype) for _ in range(3))
    mask = torch.ones(B, N, dtype=torch.bool)
    if B > 1:
        mask[1, N // 2 + 3:] = False   # suffix padding
    if B > 2:
        mask[2, 5:9] = False           # padding inside the sequence (pixel tasks: black pixels)
    return q * scale, k * scale, v, mask


@pytest.mark.parametrize("N,m", [(32, 32), (40, 64)], ids=["m=N", "m>N"])
def test_landmarks_cover_length_equals_softmax(N, m):
    """m >= N: every non-empty segment is one token, so Nyström == softmax up to the pinv iteration error;
    with enough iterations (fp64) the error vanishes. The Nyström branch must be the one that ran."""
    q, k, v, mask = _inputs(N=N)
    attn = _nys(num_landmarks=m, pinv_iterations=40)
    out = attn(q, k, v, key_padding_mask=mask)
    assert attn.last_path == "nystrom"
    torch.testing.assert_close(out, softmax_attention_ref(q, k, v, mask), rtol=1e-7, atol=1e-7)


def test_default_iterations_within_pinv_tolerance():
    """With the default 6 iterations the gap to softmax is exactly the pseudo-inverse error:
    |ours - softmax| <= |dense formula with iterative pinv - dense formula with exact pinv| (+ fp64 noise)."""
    q, k, v, mask = _inputs(N=32)
    attn = _nys(num_landmarks=32)
    out = attn(q, k, v, key_padding_mask=mask)
    it = nystrom_attention_ref(q, k, v, mask, num_landmarks=32, pinv="iterative")
    ex = nystrom_attention_ref(q, k, v, mask, num_landmarks=32, pinv="exact")
    torch.testing.assert_close(ex, softmax_attention_ref(q, k, v, mask), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(out, it, rtol=1e-10, atol=1e-10)
    tol = (it - ex).abs().max().item()
    assert tol > 1e-6  # 6 iterations have not converged: the bound below is not vacuous
    assert (out - ex).abs().max().item() <= tol + 1e-10


@pytest.mark.parametrize("m", [7, 16])
@pytest.mark.parametrize("segment_means", ["masked", "lra"])
@pytest.mark.parametrize("pinv_init", ["exact", "original"])
def test_efficient_matches_dense_formula(m, segment_means, pinv_init):
    """Two-SDPA implementation == dense F·pinv(A)·(Bm·V) (fp64), outputs and gradients; N % m != 0, padding."""
    q, k, v, mask = _inputs(N=45)
    attn = _nys(num_landmarks=m, segment_means=segment_means, pinv_init=pinv_init)
    ins = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref_ins = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = attn(*ins, key_padding_mask=mask)
    assert attn.last_path == "nystrom"
    ref = nystrom_attention_ref(*ref_ins, mask, num_landmarks=m, segment_means=segment_means, pinv_init=pinv_init)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    for a, b in zip(ins, ref_ins):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("segment_means", ["masked", "lra"])
def test_padding_content_invariance_with_internal_padding(segment_means):
    """Real rows do not see what padded positions hold (internal pad to a multiple of m included, conv on)."""
    q, k, v, mask = _inputs(N=45)
    attn = _nys(num_landmarks=16, segment_means=segment_means, conv_kernel=5)
    out = attn(q, k, v, key_padding_mask=mask)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for t, val in ((q2, 3.0), (k2, 1e3), (v2, -7.0)):
        t[~mask[:, None, :].expand(-1, t.shape[1], -1)] = val
    out2 = attn(q2, k2, v2, key_padding_mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out2[real], out[real], rtol=1e-10, atol=1e-10)
    assert out[0].abs().sum() > 0 and torch.isfinite(out).all()


def test_masked_segment_means_drop_empty_landmarks():
    """masked mode == Nyström over the non-empty landmarks only: a sequence followed by whole padded segments
    gives the same real rows as the unpadded sequence with fewer landmarks."""
    q, k, v, _ = _inputs(B=1, N=32)
    pad = torch.zeros(1, 2, 32, 8, dtype=q.dtype)
    mask = torch.tensor([[True] * 32 + [False] * 32])
    long = _nys(num_landmarks=16)(*(torch.cat([t, pad], 2) for t in (q, k, v)), key_padding_mask=mask)
    short = _nys(num_landmarks=8)(q, k, v)
    torch.testing.assert_close(long[:, :, :32], short, rtol=1e-10, atol=1e-10)


def test_pinv_init_exact_is_per_example_original_is_batch_global():
    """`exact` init: an example's output does not depend on its batch neighbours; `original` (mlpen/HF) does."""
    q, k, v, _ = _inputs(B=2, N=48)
    v = v.clone()
    q = q.clone()
    q[1] *= 4.0  # a sharper neighbour changes the batch-wide max column sum
    for init, independent in (("exact", True), ("original", False)):
        attn = _nys(num_landmarks=8, pinv_init=init)
        alone = attn(q[:1], k[:1], v[:1])
        batched = attn(q, k, v)[:1]
        same = torch.allclose(alone, batched, rtol=1e-12, atol=1e-12)
        assert same == independent, init


def test_iterative_pinv_converges():
    a = torch.softmax(torch.randn(3, 2, 16, 16, dtype=torch.float64) * 2, dim=-1)
    z = iterative_pinv(a, iterations=40, init="exact")
    torch.testing.assert_close(z, torch.linalg.inv(a), rtol=1e-6, atol=1e-6)


def test_exact_if_short_runs_softmax_plus_conv():
    q, k, v, mask = _inputs(N=32)
    attn = _nys(num_landmarks=64, exact_if_short=True, conv_kernel=3)
    out = attn(q, k, v, key_padding_mask=mask)
    assert attn.last_path == "exact"
    conv = torch.nn.functional.conv2d(v * mask[:, None, :, None], attn.conv.weight.double(), padding=(1, 0), groups=2)
    torch.testing.assert_close(out, softmax_attention_ref(q, k, v, mask) + conv, rtol=1e-10, atol=1e-10)
    attn_long = _nys(num_landmarks=16, exact_if_short=True)
    attn_long(q, k, v, key_padding_mask=mask)
    assert attn_long.last_path == "nystrom"


def test_no_quadratic_tensor():
    """N = 4096, m = 64: no intermediate (forward or backward) reaches N x N elements."""
    N, H, d = 4096, 1, 8
    q, k, v = (torch.randn(1, H, N, d, requires_grad=True) for _ in range(3))
    mask = torch.ones(1, N, dtype=torch.bool)
    mask[:, 4000:] = False
    attn = _nys(H=H, num_landmarks=64, conv_kernel=35)

    class MaxNumel(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    MaxNumel.largest = max(MaxNumel.largest, t.numel())
            return out

    with MaxNumel():
        attn(q, k, v, key_padding_mask=mask).sum().backward()
    assert attn.last_path == "nystrom"
    assert MaxNumel.largest <= 2 * N * 64 * H, MaxNumel.largest  # O(N·m); N·N would be 16.8M


@pytest.mark.parametrize("N,K", [(5, 35), (64, 3), (130, 35), (300, 65), (200, 129), (7, 1)])
def test_cpu_depthwise_conv_equals_conv2d(N, K):
    """The CPU conv (block-Toeplitz GEMMs) is Conv2d(H, H, (K, 1), padding K//2, groups=H): outputs and both
    gradients in fp64; blocks shorter/longer than N, K - 1 > 64 (larger blocks), K = 1."""
    B, H, d = 2, 3, 4
    g = torch.Generator().manual_seed(N + K)
    x = torch.randn(B, H, N, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(H, 1, K, 1, generator=g, dtype=torch.float64, requires_grad=True)
    out = depthwise_seq_conv(x, w, (K // 2, 0))
    ref = torch.nn.functional.conv2d(x, w, padding=(K // 2, 0), groups=H)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn(out.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(out, (x, w), gy), torch.autograd.grad(ref, (x, w), gy)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fp32_core_under_bf16_inputs():
    q, k, v, mask = _inputs(dtype=torch.float32, N=64)
    attn = _nys(num_landmarks=16)
    out = attn(q.bfloat16(), k.bfloat16(), v.bfloat16(), key_padding_mask=mask)
    ref = attn(q, k, v, key_padding_mask=mask)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max().item() < 0.1


def test_gradcheck_fp64():
    q, k, v, _ = _inputs(B=2, N=7, d=2, H=1)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    attn = _nys(H=1, d=2, num_landmarks=3, conv_kernel=3).double()
    f = lambda q, k, v: attn(q, k, v, key_padding_mask=mask)  # noqa: E731
    assert torch.autograd.gradcheck(f, tuple(t.clone().requires_grad_(True) for t in (q, k, v)), fast_mode=True)


@pytest.mark.parametrize("opts,match", [({"conv_kernel": 4}, "odd"), ({"pinv_init": "fast"}, "pinv_init"),
                                        ({"segment_means": "sum"}, "segment_means"),
                                        ({"num_landmarks": 0}, "num_landmarks")])
def test_bad_options_raise(opts, match):
    with pytest.raises(ValueError, match=match):
        build_attention("nystrom", num_heads=2, head_dim=8, max_len=16, **opts)


def test_parity_with_hf_nystromformer():
    """Same weights in HF ``NystromformerSelfAttention`` (transformers 4.57.6) and our MultiHeadAttention.

    Quirks neutralised:
    * HF runs exact softmax when ``num_landmarks == segment_means_seq_len``: we use m = 16 != 64, and assert
      our Nyström branch ran;
    * HF reshapes with ``segment_means_seq_len``, not the runtime length: runtime N = 64 = that value;
    * HF's ``inv_coeff_init_option=True`` reads a misspelled key, so only ``original`` init is usable: we use
      ``pinv_init=original``, which is batch-global in both, so a batch of two *different* examples matches;
    * HF's Q/K/V Linear layers have biases and no output projection: biases zeroed, our o_proj applied to
      HF's context; HF convolves unmasked V and adds the mask additively: inputs unpadded;
    * fp32, eval, attention dropout 0 (HF applies none in the Nyström branch anyway).
    """
    pytest.importorskip("transformers", reason="HF transformers==4.57.6 is the test-only parity reference")
    from transformers import NystromformerConfig
    from transformers.models.nystromformer.modeling_nystromformer import NystromformerSelfAttention

    from models.encoder import MultiHeadAttention

    torch.manual_seed(0)
    B, N, D, H, m, K = 2, 64, 32, 2, 16, 5
    cfg = NystromformerConfig(hidden_size=D, num_attention_heads=H, num_landmarks=m, segment_means_seq_len=N,
                              conv_kernel_size=K, attention_probs_dropout_prob=0.0, inv_coeff_init_option=False)
    hf = NystromformerSelfAttention(cfg).eval()
    ours = MultiHeadAttention(D, D, H, N, {"name": "nystrom", "num_landmarks": m, "conv_kernel": K,
                                           "pinv_init": "original"}).eval()
    with torch.no_grad():
        for theirs, mine in ((hf.query, ours.q_proj), (hf.key, ours.k_proj), (hf.value, ours.v_proj)):
            theirs.weight.copy_(mine.weight)
            theirs.bias.zero_()
        ours.backend.conv.weight.copy_(hf.conv.weight)
        x = torch.randn(B, N, D)
        ref = hf(x)[0] @ ours.o_proj.weight.T
        got = ours(x)
    assert ours.backend.last_path == "nystrom"
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("init", ["exact", "original"])
@pytest.mark.parametrize("mask_kind", ["all", "some", "empty-example"])
@pytest.mark.parametrize("iterations", [0, 1, 6])
def test_landmark_core_backward_equals_autograd(init, mask_kind, iterations):
    """The eager-CPU node with a hand-written backward (_LandmarkCore) == autograd through the readable ops
    (kernel -> pinv init -> Newton-Schulz -> GEMM), fp64, values and every gradient; masked landmarks and an
    example without any landmark included."""
    import models.attention.nystrom as NY
    g = torch.Generator().manual_seed(iterations)
    ins = [torch.randn(3, 2, 16, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    ins[0] = ins[0] * 2
    ok = torch.ones(3, 16, dtype=torch.bool)
    if mask_kind != "all":
        ok[1, 10:] = False
        ok[0, 3] = False
    if mask_kind == "empty-example":
        ok[2] = False
    res = []
    for fn in (lambda a, b, c: NY.iterative_pinv(NY._landmark_kernel(a, b, ok), iterations, init) @ c,
               lambda a, b, c: NY._landmark_core(a, b, c, ok, iterations, init)):
        xs = [t.clone().requires_grad_(True) for t in ins]
        out = fn(*xs)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
        (out * w).sum().backward()
        res.append([out.detach()] + [t.grad for t in xs])
    for got, want in zip(res[1], res[0]):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_landmark_core_gradcheck():
    import models.attention.nystrom as NY
    ok = torch.tensor([[True, True, False, True, True]])
    for init in ("exact", "original"):
        xs = [torch.randn(1, 2, 5, 3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
        assert torch.autograd.gradcheck(lambda a, b, c: NY._landmark_core(a, b, c, ok, 6, init), xs)
