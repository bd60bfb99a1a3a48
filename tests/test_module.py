"""LightningModule details: the non-finite loss guard names the step and the last finite loss."""
from __future__ import annotations

import pytest
import torch

from models.module import LRAModule, NonFiniteLossError


class _Const(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.value = 0.0

    def forward(self, batch):
        return torch.full((len(batch["label"]), 3), self.value) + self.w


class _Trainer:
    optimizers = [torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)]


def test_nan_loss_stops_with_step_and_last_finite_loss(monkeypatch):
    model = _Const()
    module = LRAModule(model, 3, {"lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-9, "weight_decay": 0.0},
                       {"name": "constant", "warmup_steps": 0})
    monkeypatch.setattr(LRAModule, "log", lambda *a, **k: None)
    monkeypatch.setattr(LRAModule, "trainer", property(lambda self: _Trainer()))
    batch = {"label": torch.tensor([0, 1])}
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    model.value = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"at step 0; last finite loss 1\.09"):
        module.training_step(batch, 1)


def test_last_finite_loss_survives_a_checkpoint(monkeypatch):
    """A resumed run still names the last finite loss from before the checkpoint."""
    mk = lambda: LRAModule(_Const(), 3, {"lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-9, "weight_decay": 0.0},  # noqa: E731
                           {"name": "constant", "warmup_steps": 0})
    monkeypatch.setattr(LRAModule, "log", lambda *a, **k: None)
    monkeypatch.setattr(LRAModule, "trainer", property(lambda self: _Trainer()))
    module = mk()
    module.training_step({"label": torch.tensor([0, 1])}, 0)
    ckpt = {}
    module.on_save_checkpoint(ckpt)
    resumed = mk()
    resumed.on_load_checkpoint(ckpt)
    assert resumed.last_finite_loss == pytest.approx(module.last_finite_loss) and resumed.last_finite_loss > 1.0
