"""Fit, select the best-validation checkpoint, test it, write the run record. Called by ``run.py``.

Linear on purpose: data -> model -> callbacks/loggers -> trainer -> fit -> test(best) -> record.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from lightning import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from lra.callbacks import ThroughputMonitor
from lra.datamodule import LRADataModule
from lra.records import build_record, config_hash, write_record
from lra.tasks import build_task
from models.module import LRAModule
from models.registry import attention_label, build_model, count_parameters

log = logging.getLogger("lra")
RUN_META = "run_meta.json"  # in the run folder: W&B id and record path, read by resume


def resolve_precision(trainer_cfg) -> str:
    p = trainer_cfg.precision
    if p != "auto":
        return str(p)
    return "bf16-mixed" if torch.cuda.is_available() and trainer_cfg.accelerator != "cpu" else "32-true"


def load_resume_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``resume=PATH``: the original run's resolved config, with this call's dotted overrides on top."""
    run_dir = Path(cfg.resume)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"resume={run_dir}: no {saved.name} there; pass the output folder of an earlier "
                                f"run (it holds config.yaml, {RUN_META} and checkpoints/last.ckpt)")
    old = OmegaConf.load(saved)
    dotted = [o for o in overrides if "." in o.split("=", 1)[0] and not o.startswith(("resume=", "hydra"))]
    merged = OmegaConf.merge(old, OmegaConf.from_dotlist(dotted))
    merged.resume = str(run_dir)
    return merged


def build_loggers(cfg: DictConfig, out_dir: Path, run_id: str | None):
    name = cfg.logger.name
    if name == "none":
        return [], None
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger
        return [CSVLogger(save_dir=str(out_dir), name="csv")], None
    if name != "wandb":
        raise KeyError(f"logger={name!r}; choose wandb, csv or none")
    from lightning.pytorch.loggers import WandbLogger
    offline = bool(cfg.logger.offline) and os.environ.get("WANDB_MODE", "offline") != "online"
    os.environ.setdefault("WANDB_SILENT", "true")
    attn = attention_label(cfg.model.name, cfg.attention.name)
    tags = [cfg.task.name, cfg.model.name, attn, f"seed{cfg.seed}", *cfg.tags]
    wl = WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group,
                     name=f"{cfg.task.name}-{cfg.model.name}-{attn}-s{cfg.seed}", tags=tags,
                     save_dir=str(out_dir), offline=offline, id=run_id, resume="allow" if run_id else None,
                     config=OmegaConf.to_container(cfg, resolve=True))
    return [wl], wl


CONF = Path(__file__).resolve().parent.parent / "conf"


def lra_transformer_params(task_name: str, spec) -> int | None:
    """Parameter count of the LRA Transformer of this task (``experiment=lra/<task>/transformer``) at this
    task's spec: the denominator of LRA's "at most 10% more parameters" rule. None if no such experiment."""
    exp = CONF / "experiment" / "lra" / task_name / "transformer.yaml"
    if not exp.is_file():
        return None
    base = OmegaConf.load(CONF / "model" / "transformer.yaml")
    merged = OmegaConf.merge({"model": base}, {"model": OmegaConf.load(exp).get("model", {})})
    model_cfg = OmegaConf.to_container(merged, resolve=True)["model"]
    return count_parameters(build_model(model_cfg, {"name": "math", "dropout": 0.0}, spec))


class ImplReporter(Callback):
    """After the first training step of this fit (step 1, or the first step after a resume), log one line naming
    the implementation each attention layer ran (backends with ``impl: auto`` record it in ``impl_used``) and
    keep it for the run record."""

    def __init__(self):
        self.used: dict[str, str] = {}
        self.done = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.done:
            return
        self.done = True
        for name, mod in pl_module.named_modules():
            impl = getattr(mod, "impl_used", None)
            if impl is not None:
                self.used[f"{getattr(mod, 'name', type(mod).__name__)}"] = str(impl)
        if self.used:
            log.info("attention implementation that ran: %s", ", ".join(f"{k}={v}" for k, v in self.used.items()))


def majority_baseline(dm: LRADataModule) -> dict:
    train_labels = dm.datasets["train"].labels[: len(dm.datasets["train"])]
    test_labels = dm.datasets["test"].labels[: len(dm.datasets["test"])]
    cls, _ = Counter(train_labels.tolist()).most_common(1)[0]
    return {"class": int(cls), "test_acc": float(np.mean(test_labels == cls))}


def train(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Run one job; returns the run record (also written to ``paths.results_dir``)."""
    t_start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_meta_path = out_dir / RUN_META
    prior = json.loads(run_meta_path.read_text()) if cfg.resume and run_meta_path.is_file() else {}
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    seed_everything(cfg.seed, workers=True)
    task = build_task(OmegaConf.to_container(cfg.task, resolve=True), cfg.paths.cache_dir)
    spec = task.spec
    L = cfg.loader
    dm = LRADataModule(task, batch_size=cfg.task.batch_size, seed=cfg.seed, num_workers=L.num_workers,
                       shuffle=L.shuffle, pin_memory=L.pin_memory, limit_train=L.limit_train,
                       limit_val=L.limit_val, limit_test=L.limit_test)
    dm.prepare_data()
    dm.setup()

    model = build_model(OmegaConf.to_container(cfg.model, resolve=True),
                        OmegaConf.to_container(cfg.attention, resolve=True), spec)
    n_params = count_parameters(model)
    log.info("model %s / attention %s: %s parameters", cfg.model.name,
             attention_label(cfg.model.name, cfg.attention.name), f"{n_params:,}")
    base_params = lra_transformer_params(cfg.task.name, spec)
    param_ratio = n_params / base_params if base_params else None
    if param_ratio is not None and param_ratio > 1.1:
        log.warning("parameter count %s is %.2fx the LRA Transformer of task %s (%s): above LRA's 10%% rule",
                    f"{n_params:,}", param_ratio, cfg.task.name, f"{base_params:,}")
    module = LRAModule(model, spec.num_classes, OmegaConf.to_container(cfg.optim),
                       OmegaConf.to_container(cfg.schedule, resolve=True))
    if cfg.trainer.compile:
        module.model = torch.compile(module.model)

    loggers, wandb_logger = build_loggers(cfg, out_dir, prior.get("wandb_id"))
    for lg in loggers:
        lg.log_hyperparams({"params": n_params})
    ckpt = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best-{step}", monitor="val/acc", mode="max",
                           save_last=bool(cfg.trainer.checkpoint_last), auto_insert_metric_name=False)
    monitor = ThroughputMonitor(cfg.task.batch_size, spec.seq_len, spec.dual_input,
                                cfg.trainer.throughput_warmup_steps)
    impl = ImplReporter()
    callbacks = [ckpt, monitor, impl]
    if cfg.trainer.enable_progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    T = cfg.trainer
    precision = resolve_precision(T)
    trainer = Trainer(accelerator=T.accelerator, devices=T.devices, precision=precision, max_steps=T.max_steps,
                      max_epochs=-1, val_check_interval=T.val_check_interval, check_val_every_n_epoch=None,
                      limit_val_batches=T.limit_val_batches, limit_test_batches=T.limit_test_batches,
                      gradient_clip_val=T.gradient_clip_val, accumulate_grad_batches=T.accumulate_grad_batches,
                      log_every_n_steps=T.log_every_n_steps, deterministic=T.deterministic, logger=loggers or False,
                      callbacks=callbacks, enable_progress_bar=bool(T.enable_progress_bar),
                      default_root_dir=str(out_dir), num_sanity_val_steps=0, enable_model_summary=False)
    if wandb_logger is not None:
        run_meta_path.write_text(json.dumps({"wandb_id": wandb_logger.version}))

    resume_ckpt = None
    if cfg.resume:
        resume_ckpt = out_dir / "checkpoints" / "last.ckpt"
        if not resume_ckpt.is_file():
            raise FileNotFoundError(f"resume={out_dir}: {resume_ckpt} does not exist (trainer.checkpoint_last "
                                    f"must have been true in the original run)")
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume_ckpt) if resume_ckpt else None)
    val_last = trainer.callback_metrics.get("val/acc")
    if not ckpt.best_model_path:
        raise RuntimeError("no validation ran, so there is no best checkpoint to test: lower "
                           "trainer.val_check_interval below trainer.max_steps")
    val_best = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    test_metrics = trainer.test(module, datamodule=dm, ckpt_path=ckpt.best_model_path, verbose=False)[0]
    baseline = majority_baseline(dm)
    log.info("test/acc %.4f (best-val checkpoint %s); majority-class baseline %.4f",
             test_metrics["test/acc"], Path(ckpt.best_model_path).name, baseline["test_acc"])
    print(f"test/acc = {test_metrics['test/acc']:.4f}   majority-class baseline = {baseline['test_acc']:.4f}  "
          f"(best val/acc = {val_best})")

    metrics = {"val/acc": float(val_last) if val_last is not None else None, "val/acc_best": val_best,
               "test/acc": float(test_metrics["test/acc"]), "test/loss": float(test_metrics["test/loss"]),
               "majority_baseline/test_acc": baseline["test_acc"], "majority_baseline/class": baseline["class"],
               "train/steps": int(trainer.global_step)}
    wandb_info = None
    if wandb_logger is not None:
        run = wandb_logger.experiment
        run.summary.update({**{k: v for k, v in metrics.items() if v is not None}, "params": n_params,
                            "params_ratio_lra_transformer": param_ratio,
                            **{k: v for k, v in monitor.summary.items() if not isinstance(v, dict)},
                            "memory/device": (monitor.summary.get("memory") or {}).get("device")})
        wandb_info = {"id": run.id, "dir": str(Path(run.dir).parent), "offline": bool(run.settings._offline),
                      "project": cfg.logger.project}
    record = build_record(cfg, metrics=metrics, throughput=monitor.summary, params=n_params,
                          param_ratio={"lra_transformer_params": base_params, "ratio": param_ratio,
                                       "within_10pct_rule": None if param_ratio is None else param_ratio <= 1.1},
                          attention_impl=impl.used,
                          data=dm.data_record(), wandb=wandb_info, wall_s=time.time() - t_start,
                          precision=precision, checkpoint=ckpt.best_model_path, out_dir=out_dir)
    path = write_record(record, cfg.paths.results_dir)
    run_meta_path.write_text(json.dumps({"wandb_id": wandb_info["id"] if wandb_info else None,
                                         "record": str(path), "config_hash": config_hash(cfg)}))
    log.info("run record: %s", path)
    if wandb_logger is not None:
        import wandb
        wandb.finish()
    return record
