"""The LightningModule: loss, torchmetrics accuracy, AdamW + LRA schedule, non-finite loss guard."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchmetrics
from lightning import LightningModule

from models.schedules import build_scheduler


class NonFiniteLossError(RuntimeError):
    pass


class LRAModule(LightningModule):
    """Wraps an :class:`models.registry.LRAClassifier`. Logs train/val/test loss and accuracy.

    ``optim``: lr, betas, eps, weight_decay for ``torch.optim.AdamW`` on all parameters (LRA/Flax
    decoupled decay). ``schedule``: a ``conf/schedule`` dict.
    """

    def __init__(self, model: torch.nn.Module, num_classes: int, optim: dict, schedule: dict):
        super().__init__()
        self.model = model
        self.optim_cfg, self.schedule_cfg = dict(optim), dict(schedule)
        self.save_hyperparameters(ignore=["model"])
        metric = lambda: torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)  # noqa: E731
        self.train_acc, self.val_acc, self.test_acc = metric(), metric(), metric()
        self.val_acc_best = torchmetrics.MaxMetric()
        self.last_finite_loss: float | None = None

    def on_before_batch_transfer(self, batch, dataloader_idx):
        """While the batch is still on the host: record whether each mask is all real (no padding), so the
        model can skip masking (SDPA may then pick FlashAttention) without a device synchronisation."""
        for key, flag in (("mask", "all_real"), ("mask_1", "all_real_1")):
            m = batch.get(key)
            if isinstance(m, torch.Tensor) and m.device.type == "cpu":
                batch[flag] = bool(m.all())
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx):
        """Loaders ship narrow token ids (uint8/int16); embeddings want int64."""
        for k in ("input_ids", "input_ids_1"):
            if k in batch:
                batch[k] = batch[k].long()
        return batch

    def forward(self, batch):
        return self.model(batch)

    def _step(self, batch):
        logits = self.model(batch)
        loss = F.cross_entropy(logits.float(), batch["label"])
        return loss, logits.argmax(-1)

    def training_step(self, batch, batch_idx):
        loss, preds = self._step(batch)
        value = float(loss.detach())  # the step's one host synchronisation, before the optimizer applies it
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"non-finite training loss ({value}) at step {self.global_step}; last finite loss "
                f"{self.last_finite_loss}. Lower optim.lr, enable trainer.gradient_clip_val, or use fp32.")
        self.last_finite_loss = value
        self.train_acc(preds, batch["label"])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, prog_bar=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def on_save_checkpoint(self, checkpoint):
        checkpoint["last_finite_loss"] = self.last_finite_loss

    def on_load_checkpoint(self, checkpoint):
        self.last_finite_loss = checkpoint.get("last_finite_loss")

    def validation_step(self, batch, batch_idx):
        loss, preds = self._step(batch)
        self.val_acc(preds, batch["label"])
        self.log("val/loss", loss, prog_bar=True, batch_size=len(preds))
        self.log("val/acc", self.val_acc, prog_bar=True, batch_size=len(preds))

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch, batch_idx):
        loss, preds = self._step(batch)
        self.test_acc(preds, batch["label"])
        self.log("test/loss", loss, batch_size=len(preds))
        self.log("test/acc", self.test_acc, batch_size=len(preds))

    def configure_optimizers(self):
        o = self.optim_cfg
        opt = torch.optim.AdamW(self.parameters(), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                weight_decay=o["weight_decay"])
        sched = build_scheduler(opt, self.schedule_cfg)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
