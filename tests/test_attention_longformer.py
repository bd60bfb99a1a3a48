"""Longformer / local attention: exact limits, chunked == reference == flex, O(L·w) memory, HF parity."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from models.attention import BackendUnsupported, build_attention
from models.attention.flex import dense_mask
from models.attention.math import softmax_attention_ref


def _make(name, H=2, d=8, **opts):
    opts.setdefault("dropout", 0.0)
    return build_attention(name, num_heads=H, head_dim=d, max_len=4096, **opts).eval()


def _inputs(B=3, H=2, L=53, d=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, d, generator=g, dtype=dtype) for _ in range(3))
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, L // 2:] = False     # suffix padding
    mask[2, 3:11] = False        # padding inside the sequence (black pixels)
    return q, k, v, mask


def _run(attn, q, k, v, mask, grad=True):
    ins = [t.clone().requires_grad_(grad) for t in (q, k, v)]
    out = attn(*ins, key_padding_mask=mask)
    if not grad:
        return out.detach(), None
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * w).sum().backward()
    return out.detach(), [t.grad for t in ins]


@pytest.mark.parametrize("name,opts", [("longformer", {"window": 128, "global_tokens": [0, 9]}),
                                       ("longformer", {"window": 105, "window_convention": "lra"}),
                                       ("local", {"block_size": 64}),
                                       ("local", {"block_size": None, "window": 106})])
def test_window_covering_sequence_equals_softmax(name, opts):
    """window >= 2L (or one block >= L): every token sees every key -> full masked softmax (fp64)."""
    q, k, v, mask = _inputs()
    attn = _make(name, **opts)
    out = attn(q, k, v, key_padding_mask=mask)
    assert attn.impl_used == "chunked"  # auto on CPU
    torch.testing.assert_close(out, softmax_attention_ref(q, k, v, mask), rtol=1e-10, atol=1e-10)


CASES = [
    ("longformer", {"window": 8, "global_tokens": [0]}),
    ("longformer", {"window": 6, "global_tokens": [0, 5, 50]}),
    ("longformer", {"window": 16, "global_tokens": []}),
    ("longformer", {"window": 7, "window_convention": "lra", "global_tokens": [4, 30]}),
    ("longformer", {"window": 2, "global_tokens": [1]}),
    ("local", {"block_size": 10}),
    ("local", {"block_size": 1}),
    ("local", {"block_size": None, "window": 12}),
    ("local", {"block_size": None, "window": 5, "window_convention": "lra"}),
]


@pytest.mark.parametrize("name,opts", CASES, ids=lambda x: str(x))
def test_chunked_matches_reference_outputs_and_grads(name, opts):
    q, k, v, mask = _inputs()
    out_c, g_c = _run(_make(name, impl="chunked", **opts), q, k, v, mask)
    out_r, g_r = _run(_make(name, impl="reference", **opts), q, k, v, mask)
    torch.testing.assert_close(out_c, out_r, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_c, g_r):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert torch.isfinite(out_c).all() and out_c[2].abs().sum() > 0


@pytest.mark.parametrize("opts", [{"window": 256, "global_tokens": [0, 150]},
                                  {"window": 300, "window_convention": "lra", "global_tokens": [7]},
                                  {"window": 512, "global_tokens": []}], ids=lambda x: str(x))
def test_chunked_sub_blocks_match_reference(opts):
    """Windows of >= 128 keys a side are cut into query blocks of ~max(left, right)/r (r = 2..4): several
    key blocks before/after each query block, asymmetric sides (lra), an internal pad to a block multiple."""
    attn = _make("longformer", impl="chunked", **opts)
    c, nbefore, nafter = attn._geometry(301)
    assert c < max(attn.pattern[1:]) and nbefore >= 2 and nafter >= 2
    q, k, v, mask = _inputs(L=301, d=4)
    out_c, g_c = _run(attn, q, k, v, mask)
    out_r, g_r = _run(_make("longformer", impl="reference", **opts), q, k, v, mask)
    torch.testing.assert_close(out_c, out_r, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_c, g_r):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_random_patterns_chunked_reference_flex_agree(seed):
    """Random windows, global sets, lengths and padding; flex runs eagerly (forward only on CPU), fp32."""
    rng = np.random.default_rng(seed)
    L = int(rng.integers(20, 90))
    window = int(rng.integers(1, 20)) * 2
    glob = sorted(set(rng.integers(0, L, size=int(rng.integers(0, 4))).tolist()))
    q, k, v, _ = _inputs(L=L, dtype=torch.float32, seed=seed)
    mask = torch.from_numpy(rng.random((3, L)) > 0.3)
    mask[1, :] = False if seed % 2 else mask[1, :]
    outs = {}
    for impl in ("chunked", "reference", "flex"):
        attn = _make("longformer", impl=impl, compile=False, window=window, global_tokens=glob)
        with torch.no_grad():
            outs[impl] = attn(q, k, v, key_padding_mask=mask)
        assert attn.impl_used == impl
    torch.testing.assert_close(outs["chunked"], outs["reference"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs["flex"], outs["reference"], rtol=1e-5, atol=1e-5)


def test_local_flex_matches_chunked():
    q, k, v, mask = _inputs(dtype=torch.float32)
    with torch.no_grad():
        a = _make("local", impl="flex", compile=False, block_size=10)(q, k, v, key_padding_mask=mask)
        b = _make("local", impl="chunked", block_size=10)(q, k, v, key_padding_mask=mask)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_patterns_match_their_definitions():
    """hf: |i-j| <= w/2; lra: LRA JAX ``_build_sliding_window_mask`` (w - w//2 keys left incl. self, w//2 right);
    local blocks: contiguous blocks (not LRA's strided reshape); global rows/columns fully visible."""
    L = 23
    keep = torch.ones(1, L, dtype=torch.bool)
    i, j = np.arange(L)[:, None], np.arange(L)[None, :]

    def mask_of(name, **opts):
        a = _make(name, **opts)
        g = None
        if getattr(a, "global_tokens", ()):
            g = torch.zeros(L, dtype=torch.bool)
            g[list(a.global_tokens)] = True
        return dense_mask(a.mask_mod(keep, g), 1, L, L, "cpu")[0, 0].numpy()

    np.testing.assert_array_equal(mask_of("longformer", window=6, global_tokens=[]), np.abs(i - j) <= 3)
    w = 7
    right, left = w // 2, w - w // 2
    lra = sum(np.eye(L, k=-t) for t in range(left)) + sum(np.eye(L, k=t) for t in range(1, right + 1))
    np.testing.assert_array_equal(mask_of("longformer", window=w, window_convention="lra", global_tokens=[]),
                                  lra.astype(bool))
    got = mask_of("longformer", window=4, global_tokens=[0, 10])
    np.testing.assert_array_equal(got, (np.abs(i - j) <= 2) | np.isin(i, [0, 10]) | np.isin(j, [0, 10]))
    np.testing.assert_array_equal(mask_of("local", block_size=5), (i // 5) == (j // 5))


def test_chunked_does_not_allocate_quadratic_memory():
    """L = 8192, w = 64: no tensor of the forward or backward pass has O(L²) elements (L² = 67M); the largest
    is the (B, H, L/c, c, G + 3c) score block, ~L·(1.5w + G). Also completes quickly."""
    L, H, d, w = 8192, 1, 8, 64
    q, k, v = (torch.randn(1, H, L, d, requires_grad=True) for _ in range(3))
    mask = torch.ones(1, L, dtype=torch.bool)
    mask[:, 8000:] = False
    attn = _make("longformer", H=H, window=w, global_tokens=[0, 100], dropout=0.1).train()

    class MaxNumel(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    MaxNumel.largest = max(MaxNumel.largest, t.numel())
            return out

    t0 = time.perf_counter()
    with MaxNumel():
        out = attn(q, k, v, key_padding_mask=mask)
        out.sum().backward()
    elapsed = time.perf_counter() - t0
    assert attn.impl_used == "chunked"
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all()
    bound = H * L * (3 * w // 2 + 2)  # scores of every query block over its 3 key blocks + 2 global keys
    assert MaxNumel.largest <= bound, (MaxNumel.largest, bound)
    assert MaxNumel.largest * 40 < L * L
    assert elapsed < 30, elapsed


def test_dropout_train_vs_eval():
    q, k, v, mask = _inputs(dtype=torch.float32)
    attn = _make("longformer", window=8, global_tokens=[0], dropout=0.5)
    ev1 = attn(q, k, v, key_padding_mask=mask)
    ev2 = attn(q, k, v, key_padding_mask=mask)
    torch.testing.assert_close(ev1, ev2)
    attn.train()
    tr = attn(q, k, v, key_padding_mask=mask)
    assert torch.isfinite(tr).all() and not torch.allclose(tr, ev1)


@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
def test_chunked_cpu_dropout_is_inverted_bernoulli(p):
    """The CPU score dropout (uniform >= p): zeros with probability p, survivors scaled by 1/(1-p)."""
    from models.attention.base import dropout as _dropout
    torch.manual_seed(0)
    x = torch.full((4, 250_000), 2.0, requires_grad=True)
    y = _dropout(x, p)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - p) < 3e-3
    if p < 1:
        torch.testing.assert_close(y[kept], torch.full_like(y[kept], 2.0 / (1 - p)))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p) if p < 1 else torch.zeros_like(x))


def test_flex_refusals():
    q, k, v, mask = _inputs(dtype=torch.float32)
    attn = _make("longformer", impl="flex", window=8, dropout=0.1).train()
    with pytest.raises(BackendUnsupported, match="dropout"):
        attn(q, k, v, key_padding_mask=mask)
    attn = _make("longformer", impl="flex", window=8)
    with pytest.raises(BackendUnsupported, match="backward"):
        attn(q.requires_grad_(True), k, v, key_padding_mask=mask)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="even"):
        _make("longformer", window=7)
    with pytest.raises(ValueError, match="exactly one"):
        _make("local", block_size=None, window=None)
    with pytest.raises(ValueError, match="exactly one"):
        _make("local", block_size=8, window=8)
    with pytest.raises(ValueError, match="impl"):
        _make("longformer", impl="dense")
    with pytest.raises(TypeError):
        _make("local", global_tokens=[0])  # local has no global tokens
    q, k, v, mask = _inputs(L=10)
    with pytest.raises(BackendUnsupported, match="out of range"):
        _make("longformer", window=4, global_tokens=[12])(q, k, v, key_padding_mask=mask)


@pytest.mark.parametrize("glob", [[0], [0, 7, 40]], ids=["cls", "three"])
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_parity_with_hf_longformer(glob, padded):
    """Same weights in HF ``LongformerSelfAttention`` (transformers 4.57.6) and our MultiHeadAttention.

    Quirks neutralised:
    * HF learns separate ``query_global/key_global/value_global``; ours are tied to the local projections:
      the same weights are copied into both HF sets;
    * HF's Q/K/V Linear layers have biases and no output projection: biases zeroed, our o_proj applied to
      HF's context;
    * ``attention_window`` w must be even and the sequence a multiple of w (``LongformerModel`` pads): w = 16,
      L = 64; HF's band is |i - j| <= w/2, our ``window_convention=hf``;
    * HF takes a (B, L) mask already converted by ``LongformerModel``: 0 local, > 0 global, < 0 padding, plus
      ``is_index_masked``/``is_index_global_attn``/``is_global_attn``; we build those directly;
    * HF removes global keys from the band (no double counting), as we do;
    * padded query rows: HF zeroes them, our MultiHeadAttention fills them (mask mode): only real rows are
      compared; fp32, eval, dropout 0.
    """
    pytest.importorskip("transformers", reason="HF transformers==4.57.6 is the test-only parity reference")
    from transformers import LongformerConfig
    from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

    from models.encoder import MultiHeadAttention

    torch.manual_seed(0)
    B, L, D, H, w = 2, 64, 32, 2, 16
    cfg = LongformerConfig(hidden_size=D, num_attention_heads=H, attention_window=[w], attention_probs_dropout_prob=0.0)
    hf = LongformerSelfAttention(cfg, layer_id=0).eval()
    ours = MultiHeadAttention(D, D, H, L, {"name": "longformer", "window": w, "global_tokens": glob,
                                           "dropout": 0.0, "impl": "chunked"}).eval()
    with torch.no_grad():
        for local, glob_lin, mine in ((hf.query, hf.query_global, ours.q_proj), (hf.key, hf.key_global, ours.k_proj),
                                      (hf.value, hf.value_global, ours.v_proj)):
            for lin in (local, glob_lin):
                lin.weight.copy_(mine.weight)
                lin.bias.zero_()
    x = torch.randn(B, L, D)
    mask = torch.ones(B, L, dtype=torch.bool)
    if padded:
        mask[1, 50:] = False
    hf_mask = torch.zeros(B, L)
    hf_mask[:, glob] = 1.0
    hf_mask[~mask] = -1.0
    with torch.no_grad():
        ctx = hf(x, attention_mask=hf_mask, is_index_masked=hf_mask < 0, is_index_global_attn=hf_mask > 0,
                 is_global_attn=True)[0]
        ref = ctx @ ours.o_proj.weight.T
        got = ours(x, mask if padded else None)
    assert ours.backend.impl_used == "chunked"
    torch.testing.assert_close(got[mask], ref[mask], rtol=1e-5, atol=1e-5)
