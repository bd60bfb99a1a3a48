"""End to end on experiment=smoke: run record, offline W&B contents, best-checkpoint reload, sweep, resume."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from lra.wandb_offline import read_offline_run

RECORD_KEYS = {"task", "model", "attention", "seed", "metrics", "throughput", "memory", "params", "git_sha",
               "config", "config_hash", "data", "versions", "wandb", "wall_s"}
LOGGED = {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc", "train/steps_per_s",
          "train/samples_per_s", "train/tokens_per_s", "memory/peak_bytes", "val/samples_per_s"}


def _read_run(run_dir, timeout=60.0):
    """The W&B service may still be flushing the offline file when finish() returns: wait for the exit record."""
    import time
    deadline = time.time() + timeout
    while True:
        run = read_offline_run(run_dir)
        if run["exit"] is not None or time.time() > deadline:
            return run
        time.sleep(0.5)


def _records(results_dir: Path):
    return [json.loads(p.read_text()) for p in sorted(Path(results_dir).rglob("*.json"))]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, shared_dirs):
    """One in-process smoke run with the W&B logger (offline), reused by several tests."""
    from conftest import compose_cfg
    from lra.train import train
    tmp = tmp_path_factory.mktemp("smoke_run")
    cfg = compose_cfg(["experiment=smoke", f"paths.data_dir={shared_dirs['data']}",
                       f"paths.cache_dir={shared_dirs['cache']}", f"paths.results_dir={tmp}/results"],
                      out_dir=tmp / "run", root=ROOT)
    record = train(cfg, tmp / "run")
    return cfg, record, tmp


def test_record_fields(smoke_run):
    cfg, record, tmp = smoke_run
    assert RECORD_KEYS <= set(record)
    assert {"val/acc", "val/acc_best", "test/acc"} <= set(record["metrics"])
    assert {"train/steps_per_s", "train/samples_per_s", "train/tokens_per_s"} <= set(record["throughput"])
    assert record["memory"]["peak_bytes"] > 0 and record["memory"]["device"] == "cpu"
    assert record["params"] > 0 and len(record["config_hash"]) == 16
    assert record["data"]["fingerprint"] and record["data"]["splits"] == {"train": 400, "val": 64, "test": 64}
    assert {"python", "torch", "lightning", "cuda", "gpu"} <= set(record["versions"])
    on_disk = _records(tmp / "results")
    assert len(on_disk) == 1 and on_disk[0]["metrics"] == record["metrics"]
    assert record["metrics"]["majority_baseline/test_acc"] > 0


def test_offline_wandb_run_holds_logged_keys(smoke_run):
    _, record, _ = smoke_run
    run = _read_run(record["wandb"]["dir"])
    assert record["wandb"]["offline"] is True and run["run_id"] == record["wandb"]["id"]
    assert LOGGED <= run["history_keys"] | set(run["summary"]), LOGGED - run["history_keys"]
    assert run["summary"]["params"] == record["params"]
    assert run["summary"]["memory/device"] == "cpu"
    assert {"task", "model", "attention", "seed"} <= run["config_keys"]


def test_best_checkpoint_reload_gives_same_test_accuracy(smoke_run):
    """Test accuracy is that of the best-val checkpoint: a fresh model loaded from it scores the same."""
    from lightning import Trainer
    from omegaconf import OmegaConf
    from lra.datamodule import LRADataModule
    from lra.tasks import build_task
    from models.module import LRAModule
    from models.registry import build_model
    cfg, record, _ = smoke_run
    assert Path(record["checkpoint"]).name.startswith("best-")
    c = OmegaConf.to_container(cfg, resolve=True)
    task = build_task(c["task"], cfg.paths.cache_dir)
    dm = LRADataModule(task, batch_size=8, limit_test=64)
    model = build_model(c["model"], c["attention"], task.spec)
    module = LRAModule.load_from_checkpoint(record["checkpoint"], model=model, map_location="cpu")
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    acc = trainer.test(module, datamodule=dm, verbose=False)[0]["test/acc"]
    assert acc == pytest.approx(record["metrics"]["test/acc"], abs=1e-7)
    # and the checkpoint really is the best one by validation accuracy
    ck = torch.load(record["checkpoint"], map_location="cpu", weights_only=False)
    best = [v for k, v in ck["callbacks"].items() if "ModelCheckpoint" in k][0]["best_model_score"]
    assert float(best) == pytest.approx(record["metrics"]["val/acc_best"])


def _cli(args, tmp, shared_dirs, timeout=300):
    flags = [a for a in args if a.startswith("-")]
    args = [a for a in args if not a.startswith("-")]
    cmd = [sys.executable, "run.py", *flags, "experiment=smoke", f"paths.data_dir={shared_dirs['data']}",
           f"paths.cache_dir={shared_dirs['cache']}", f"paths.results_dir={tmp}/results", *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**__import__("os").environ, "WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_multirun_sweep_two_jobs(tmp_path, shared_dirs, smoke_run):
    _cli(["-m", "attention=math,sdpa", "trainer.max_steps=10", "trainer.val_check_interval=5",
          f"hydra.sweep.dir={tmp_path}/multirun"], tmp_path, shared_dirs)
    recs = _records(tmp_path / "results")
    assert sorted(r["attention"] for r in recs) == ["math", "sdpa"]
    ids = {r["wandb"]["id"] for r in recs}
    assert len(ids) == 2
    for r in recs:
        run = _read_run(r["wandb"]["dir"])
        assert run["exit"] == 0 and "test/acc" in run["summary"]  # each job finished its own W&B run


def test_resume_continues_same_wandb_run(tmp_path, shared_dirs, smoke_run):
    """Also: the attention implementation that ran (``impl: auto``) is logged once and recorded by the first run
    and by the resumed one, which starts at step 10."""
    run_dir = tmp_path / "run"
    r1 = _cli(["attention=longformer", "trainer.max_steps=10", "trainer.val_check_interval=5",
               f"hydra.run.dir={run_dir}"], tmp_path, shared_dirs)
    first = _records(tmp_path / "results")[0]
    r2 = _cli([f"resume={run_dir}", "trainer.max_steps=20", f"hydra.run.dir={tmp_path}/ignored"], tmp_path, shared_dirs)
    recs = sorted(_records(tmp_path / "results"), key=lambda r: r["metrics"]["train/steps"])
    assert [r["metrics"]["train/steps"] for r in recs] == [10, 20]
    for r, rec in zip((r1, r2), recs):
        assert (r.stdout + r.stderr).count("attention implementation that ran: longformer=chunked") == 1
        assert rec["attention_impl"] == {"longformer": "chunked"}
    assert recs[1]["wandb"]["id"] == first["wandb"]["id"]
    assert recs[1]["config"]["trainer"]["max_steps"] == 20
