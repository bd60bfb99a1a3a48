"""The encoder: padding never changes logits, LRA mask semantics, positions, pooling."""
from __future__ import annotations

import math

import pytest
import torch

from lra.tasks.base import TaskSpec
from models.encoder import MultiHeadAttention, sinusoidal_table
from models.registry import build_model

SPEC = TaskSpec(name="t", seq_len=24, vocab_size=17, num_classes=10, pad_id=0)


def _model(attention="math", pooling="cls", mask_mode="lra", pos_emb="sinusoidal", **attn_opts):
    cfg = dict(name="transformer", d_model=32, num_layers=2, num_heads=4, qkv_dim=32, mlp_dim=64, dropout=0.0,
               attn_dropout=0.0, pos_emb=pos_emb, pooling=pooling, mask_mode=mask_mode, head={"mlp_dim": 32})
    torch.manual_seed(0)
    return build_model(cfg, {"name": attention, **attn_opts}, SPEC).eval()


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 17, (3, 24), generator=g)
    ids[1, 15:] = 0
    ids[2, 5:] = 0
    return {"input_ids": ids, "mask": ids != 0}


@pytest.mark.parametrize("attention,opts", [("math", {}), ("sdpa", {}), ("flex", {"dropout": 0.0})])
@pytest.mark.parametrize("pooling", ["cls", "masked_mean"])
@pytest.mark.parametrize("mask_mode", ["lra", "keys"])
def test_padded_content_never_changes_logits(attention, opts, pooling, mask_mode):
    model = _model(attention, pooling, mask_mode, **opts)
    b = _batch()
    ref = model(b)
    b2 = {"input_ids": b["input_ids"].clone(), "mask": b["mask"]}
    b2["input_ids"][~b["mask"]] = 7  # different content at padded positions, same mask
    torch.testing.assert_close(model(b2), ref)


def test_lra_mask_mode_matches_outer_product_bias_reference():
    """LRA: additive -1e10 where query OR key is padding -> padded query rows are the plain mean of V."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 16, 2, 10, {"name": "math", "dropout": 0.0}, mask_mode="lra").eval()
    x = torch.randn(2, 10, 16)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    out = mha(x, mask)
    # explicit LRA computation
    q, k, v = (mha._heads(p(x)) for p in (mha.q_proj, mha.k_proj, mha.v_proj))
    logits = q @ k.transpose(-1, -2) / math.sqrt(8)
    pair = mask[:, None, :, None] & mask[:, None, None, :]
    logits = logits + torch.where(pair, 0.0, -1e10)
    ref = torch.softmax(logits, -1) @ v
    ref = mha.o_proj(ref.transpose(1, 2).reshape(2, 10, 16))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_sinusoidal_is_interleaved():
    t = sinusoidal_table(5, 8)
    assert torch.allclose(t[:, 0], torch.sin(torch.arange(5.0)))
    assert torch.allclose(t[:, 1], torch.cos(torch.arange(5.0)))
    assert torch.allclose(t[3, 2], torch.sin(torch.tensor(3.0) * math.exp(-2 * math.log(1e4) / 8)))


def test_cls_copies_first_token_mask_and_mean_pooling_is_unmasked():
    model = _model(pooling="mean")
    b = _batch()
    b2 = {"input_ids": b["input_ids"].clone(), "mask": b["mask"]}
    b2["input_ids"][~b["mask"]] = 7
    # LRA's MEAN pooling averages padded positions too, so padded content may change the logits
    assert not torch.allclose(model(b2)[1], model(b)[1])


@pytest.mark.parametrize("pos_emb", ["sinusoidal", "learned", "none"])
def test_backward_and_shapes(pos_emb):
    model = _model(pos_emb=pos_emb).train()
    out = model(_batch())
    assert out.shape == (3, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.grad is not None)


def test_cpu_dropout_is_inverted_bernoulli_and_seedable():
    """encoder.Dropout draws its CPU mask as uniform >= p: keep rate 1 - p, survivors scaled by 1/(1 - p),
    the same mask for the same seed, identity in eval and at p = 0."""
    from models.encoder import Dropout
    drop = Dropout(0.25).train()
    x = torch.ones(400, 500)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    b = drop(x)
    assert torch.equal(a, b)
    vals = set(torch.unique(a).tolist())
    assert vals <= {0.0, torch.tensor(1.0 / 0.75).item()}  # 1/(1 - p) in fp32
    keep = (a != 0).double().mean().item()
    assert abs(keep - 0.75) < 4 * (0.75 * 0.25 / x.numel()) ** 0.5
    y = torch.randn(3, 4, requires_grad=True)
    torch.manual_seed(0)
    out = drop(y)
    out.sum().backward()
    torch.testing.assert_close(y.grad, (out != 0).float() / 0.75)
    assert drop.eval()(x) is x and Dropout(0.0).train()(x) is x
