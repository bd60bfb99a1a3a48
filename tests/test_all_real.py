"""Batches without padding skip masking (``all_real``, decided on the host): every family gives the same logits
and gradients as with the all-True mask, the LightningModule sets the flag from the CPU mask, and a padded
batch is never flagged."""
from __future__ import annotations

import pytest
import torch

from test_compile import FAMILIES, _build, _fwd_bwd


@pytest.mark.parametrize("model,attention", FAMILIES, ids=[f"{m}-{a}" for m, a in FAMILIES])
def test_all_real_flag_changes_nothing_but_the_path(smoke_cfg, model, attention):
    net, batch = _build(smoke_cfg, model, attention)
    net.train()  # dropout on (and YOSO's hash draws): both runs start from the same seed and draw the same
    real = {"input_ids": batch["input_ids"].clamp_min(1)}
    real["mask"] = torch.ones_like(real["input_ids"], dtype=torch.bool)
    torch.manual_seed(3)
    ref_logits, ref_grads = _fwd_bwd(net, dict(real))
    torch.manual_seed(3)
    logits, grads = _fwd_bwd(net, dict(real, all_real=True))
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_module_flags_only_unpadded_cpu_masks():
    from models.module import LRAModule
    mod = LRAModule(torch.nn.Linear(1, 1), num_classes=2, optim={"lr": 1e-3}, schedule={"name": "constant"})
    full = {"input_ids": torch.ones(2, 5, dtype=torch.long), "mask": torch.ones(2, 5, dtype=torch.bool)}
    padded = {"input_ids": torch.ones(2, 5, dtype=torch.long), "mask": torch.ones(2, 5, dtype=torch.bool)}
    padded["mask"][1, 3:] = False
    assert mod.on_before_batch_transfer(full, 0)["all_real"] is True
    assert mod.on_before_batch_transfer(padded, 0)["all_real"] is False
    dual = dict(full, input_ids_1=padded["input_ids"], mask_1=padded["mask"])
    out = mod.on_before_batch_transfer(dual, 0)
    assert out["all_real"] is True and out["all_real_1"] is False


def test_layers_receive_no_mask_only_when_flagged(smoke_cfg, monkeypatch):
    net, batch = _build(smoke_cfg, "transformer", "sdpa")
    seen = []
    backend = type(net.encoder.layers[0].attn.backend)
    original = backend.forward

    def spy(self, q, k, v, key_padding_mask=None):
        seen.append(key_padding_mask)
        return original(self, q, k, v, key_padding_mask=key_padding_mask)

    monkeypatch.setattr(backend, "forward", spy)
    full = {"input_ids": batch["input_ids"].clamp_min(1)}
    full["mask"] = torch.ones_like(full["input_ids"], dtype=torch.bool)
    net(dict(full, all_real=True))
    assert seen and all(m is None for m in seen)
    seen.clear()
    net(batch)  # padded, no flag
    assert seen and all(isinstance(m, torch.Tensor) and not bool(m.all()) for m in seen)
