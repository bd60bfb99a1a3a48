"""``trainer.compile=true`` works for every family: ``torch.compile`` of the whole classifier (the model the
trainer wraps) gives eager's logits and gradients (eval mode), and trains with dropout active (train mode). The registry is the test matrix, models come from the real
Hydra config (``experiment=smoke``, ListOps shapes).

CI traces every family with the ``aot_eager`` backend (Dynamo capture + AOTAutograd: what breaks under
compile — data-dependent Python control flow, unsupported ops, autograd.Functions — breaks there too) and
runs inductor, the backend ``trainer.compile`` uses, on two families and once through the trainer; the inductor matrix is in the slow set
(C++ code generation takes 5-50 s per family on a CPU) and in the GPU set.
"""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lra.tasks import build_task
from models.attention import ATTENTION_REGISTRY
from models.registry import build_model

FAMILIES = [("transformer", a) for a in sorted(ATTENTION_REGISTRY)] + [("mega", None), ("mega-chunk", None)]
# Families whose forward draws random numbers: under compile the draws come from another generator, so only
# finiteness and shapes are compared. Reformer is made deterministic with a fixed hash_seed instead.
STOCHASTIC = {("transformer", "yoso")}
FAST_INDUCTOR = {("transformer", "sdpa"), ("transformer", "yoso_e")}


def _build(smoke_cfg, model, attention, device="cpu", train=False):
    overrides = ["task=listops"] + (["model.dropout=0.1", "model.attn_dropout=0.1"] if train else [])
    overrides += ["model=mega", "model.chunk_size=16"] if model == "mega-chunk" else [f"model={model}"]
    if attention:
        overrides.append(f"attention={attention}")
    if attention == "lsh":
        overrides.append("attention.hash_seed=0")
    cfg = smoke_cfg(*overrides)
    spec = build_task(OmegaConf.to_container(cfg.task, resolve=True), cfg.paths.cache_dir).spec
    torch.manual_seed(0)
    net = build_model(OmegaConf.to_container(cfg.model, resolve=True),
                      OmegaConf.to_container(cfg.attention, resolve=True), spec).to(device).train(train)
    g = torch.Generator().manual_seed(1)
    L = min(spec.seq_len, 96)
    ids = torch.randint(1, spec.vocab_size, (3, L), generator=g)
    ids[1, 60:] = 0  # suffix padding
    batch = {"input_ids": ids.to(device), "mask": (ids != 0).to(device)}
    return net, batch


def _fwd_bwd(net, batch):
    net.zero_grad(set_to_none=True)
    logits = net(batch)
    w = torch.linspace(-1, 1, logits.numel(), device=logits.device).view_as(logits)
    (logits.float() * w).sum().backward()
    grads = {n.removeprefix("_orig_mod."): p.grad.detach().clone() for n, p in net.named_parameters()
             if p.grad is not None}
    return logits.detach(), grads


def _check(smoke_cfg, model, attention, backend, device="cpu"):
    import torch._dynamo
    torch._dynamo.reset()
    net, batch = _build(smoke_cfg, model, attention, device)
    want, want_g = _fwd_bwd(net, batch)
    compiled = torch.compile(net, backend=backend)
    got, got_g = _fwd_bwd(compiled, batch)
    assert got.shape == want.shape and torch.isfinite(got).all()
    assert set(got_g) == set(want_g), "compiled backward reached a different set of parameters"
    if (model, attention) in STOCHASTIC:
        assert all(torch.isfinite(t).all() for t in got_g.values())
        return
    tol = dict(rtol=1e-4, atol=1e-5) if device == "cpu" else dict(rtol=2e-3, atol=2e-4)
    torch.testing.assert_close(got, want, **tol)
    for name in want_g:
        torch.testing.assert_close(got_g[name], want_g[name], **tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("model,attention", FAMILIES, ids=lambda x: str(x))
def test_every_family_traces_under_compile(model, attention, smoke_cfg):
    _check(smoke_cfg, model, attention, "aot_eager")


def _check_train(smoke_cfg, model, attention, backend, device="cpu"):
    """Training mode with dropout 0.1 wherever the family has it (the path trainer.compile runs): compiled
    forward and backward run, are finite and reach every parameter eager reaches. Dropout draws differ under
    compile, so values are not compared."""
    import torch._dynamo
    torch._dynamo.reset()
    net, batch = _build(smoke_cfg, model, attention, device, train=True)
    _, want_g = _fwd_bwd(net, batch)
    got, got_g = _fwd_bwd(torch.compile(net, backend=backend), batch)
    assert torch.isfinite(got).all() and set(got_g) == set(want_g)
    assert all(torch.isfinite(t).all() for t in got_g.values())


@pytest.mark.parametrize("model,attention", FAMILIES, ids=lambda x: str(x))
def test_every_family_trains_under_compile(model, attention, smoke_cfg):
    _check_train(smoke_cfg, model, attention, "aot_eager")


def _inductor_cases():
    for fam in FAMILIES:
        marks = [] if fam in FAST_INDUCTOR else [pytest.mark.slow]
        yield pytest.param(*fam, marks=marks, id=f"{fam[0]}-{fam[1]}")


@pytest.mark.parametrize("model,attention", list(_inductor_cases()))
def test_every_family_compiles_with_inductor(model, attention, smoke_cfg):
    _check(smoke_cfg, model, attention, "inductor")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model,attention", FAMILIES, ids=lambda x: str(x))
def test_every_family_compiles_on_cuda(model, attention, smoke_cfg):
    _check(smoke_cfg, model, attention, "inductor", device="cuda")
    _check_train(smoke_cfg, model, attention, "inductor", device="cuda")


def test_trainer_compile_end_to_end(smoke_cfg, tmp_path):
    """run.py's path with trainer.compile=true: train, pick the best checkpoint (its keys carry the compiled
    wrapper's prefix) and test it."""
    from lra.train import train
    record = train(smoke_cfg("trainer.compile=true", "logger=none", "trainer.max_steps=4", "trainer.val_check_interval=2",
                             "loader.limit_train=32", "loader.limit_val=8", "loader.limit_test=8"), tmp_path / "run")
    assert record["metrics"]["train/steps"] == 4 and 0.0 <= record["metrics"]["test/acc"] <= 1.0
    assert record["config"]["trainer"]["compile"] is True
