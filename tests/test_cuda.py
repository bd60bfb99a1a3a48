"""CUDA checks (skipped with a reason on CPU): exact backends agree in bf16 with padding, fused SDPA kernels,
compiled FlexAttention forward+backward, and a bf16-mixed training step with and without torch.compile."""
from __future__ import annotations

import pytest
import torch

from models.attention import build_attention
from models.attention.math import softmax_attention_ref

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _inputs(dtype, B=2, H=4, L=300, d=64, pad_from=200):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, H, L, d, generator=g, device="cuda", dtype=torch.float64) for _ in range(3))
    mask = torch.ones(B, L, dtype=torch.bool, device="cuda")
    mask[1, pad_from:] = False
    return q, k, v, mask


def _fwd_bwd(attn, q, k, v, mask):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = attn(q, k, v, key_padding_mask=mask)
    w = torch.linspace(-1, 1, out.numel(), device="cuda", dtype=torch.float32).view_as(out)
    (out.float() * w).sum().backward()
    return [out.detach(), q.grad, k.grad, v.grad]


CASES = [("sdpa", {"sdpa_backend": "efficient"}), ("sdpa", {"sdpa_backend": "cudnn"}),
         ("sdpa", {"sdpa_backend": "math"}), ("sdpa", {"sdpa_backend": "auto"}),
         ("flex", {"impl": "flex", "compile": True})]


@pytest.mark.parametrize("name,opts", CASES, ids=lambda x: str(x))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_exact_backends_on_cuda(name, opts, dtype):
    q, k, v, mask = _inputs(dtype)
    mk = lambda n, o: build_attention(n, num_heads=4, head_dim=64, max_len=300, **o).eval()  # noqa: E731
    gold = _fwd_bwd(mk("math", {}), q, k, v, mask)
    low = [t.to(dtype) for t in (q, k, v)]
    ref = _fwd_bwd(mk("math", {}), *low, mask)
    try:
        got = _fwd_bwd(mk(name, opts), *low, mask)
    except RuntimeError as e:
        if "No available kernel" in str(e) or "cudnn" in str(e).lower():
            pytest.skip(f"{name}{opts} unavailable for {dtype} on this GPU: {str(e)[:200]}")
        raise
    for g, r, x in zip(gold, ref, got):
        err_ref = (r.double() - g.double()).abs().max().item()
        err = (x.double() - g.double()).abs().max().item()
        atol = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
        assert err <= 2 * err_ref + atol, f"{name}{opts} {dtype}: err {err:.3g} vs reference {err_ref:.3g}"


def test_flash_without_mask_bf16():
    q, k, v, _ = _inputs(torch.bfloat16)
    attn = build_attention("sdpa", num_heads=4, head_dim=64, max_len=300, sdpa_backend="flash").eval()
    out = attn(*(t.to(torch.bfloat16) for t in (q, k, v)))
    ref = softmax_attention_ref(q, k, v)
    assert (out.double() - ref).abs().max().item() < 3e-2


@pytest.mark.parametrize("compile", [False, True])
def test_bf16_training_step(compile, tmp_path):
    from lra.tasks.base import TaskSpec
    from models.registry import build_model
    spec = TaskSpec(name="t", seq_len=256, vocab_size=17, num_classes=10)
    cfg = dict(name="transformer", d_model=64, num_layers=2, num_heads=4, qkv_dim=64, mlp_dim=128,
               head={"mlp_dim": 64})
    model = build_model(cfg, {"name": "sdpa", "dropout": 0.1}, spec).cuda()
    if compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(1, 17, (8, 256), device="cuda")
    ids[:, 200:] = 0
    batch = {"input_ids": ids, "mask": ids != 0, "label": torch.randint(0, 10, (8,), device="cuda")}
    losses = []
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(batch).float(), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))


def test_sdpa_auto_picks_a_flash_kernel_for_unpadded_batches():
    """The training path: LRAModule flags an unpadded batch on the host, the encoder then passes no mask, and
    SDPA ``auto`` in bf16 runs a FlashAttention kernel (PyTorch's own, or cuDNN's flash-style SDPA where torch
    prefers it); a padded batch cannot."""
    from lra.tasks.base import TaskSpec
    from models.module import LRAModule
    from models.registry import build_model
    spec = TaskSpec(name="t", seq_len=512, vocab_size=17, num_classes=10)
    cfg = dict(name="transformer", d_model=128, num_layers=1, num_heads=2, qkv_dim=128, mlp_dim=128,
               head={"mlp_dim": 64})
    module = LRAModule(build_model(cfg, {"name": "sdpa", "dropout": 0.0}, spec), 10,
                       {"lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-9, "weight_decay": 0.0},
                       {"name": "constant", "warmup_steps": 0}).cuda()
    flash_ops = ("aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_cudnn_attention")

    def sdpa_ops(pad: bool):
        ids = torch.randint(1, 17, (4, 512))
        if pad:
            ids[1, 400:] = 0
        batch = module.on_before_batch_transfer({"input_ids": ids, "mask": ids != 0}, 0)
        batch = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                module(batch).float().sum().backward()
        return {e.key for e in prof.key_averages() if e.key.startswith("aten::_scaled_dot_product")}

    unpadded, padded = sdpa_ops(False), sdpa_ops(True)
    assert unpadded & set(flash_ops), f"unpadded batch ran {unpadded}, no flash kernel"
    assert not padded & {flash_ops[0]}, f"padded batch ran {padded}"
