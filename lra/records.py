"""Run records: one JSON per run under ``paths.results_dir``, written atomically.

Tables are generated from these files only (see ``python -m lra.results``).
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lra.atomic import write_atomic

from models.registry import attention_label

REPO = Path(__file__).resolve().parent.parent


def config_hash(cfg: DictConfig) -> str:
    c = OmegaConf.to_container(cfg, resolve=True)
    for k in ("paths", "resume", "hydra"):
        c.pop(k, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_state() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    sha = git("rev-parse", "HEAD") or None
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if sha else None
    return {"sha": sha, "dirty": dirty}


def versions() -> dict:
    import lightning
    v = {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
         "cuda": torch.version.cuda, "gpu": None, "sm_count": None}
    try:
        import triton
        v["triton"] = triton.__version__
    except ImportError:
        v["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        v.update(gpu=p.name, sm_count=p.multi_processor_count)
    return v


def build_record(cfg: DictConfig, *, metrics: dict, throughput: dict, params: int, param_ratio: dict,
                 attention_impl: dict, data: dict, wandb: dict | None,
                 wall_s: float, precision: str, checkpoint: str, out_dir: Path) -> dict:
    tp = {k: v for k, v in throughput.items() if k != "memory"}
    mem = throughput.get("memory") or {}
    g = git_state()
    return {
        "task": cfg.task.name, "model": cfg.model.name, "attention": attention_label(cfg.model.name, cfg.attention.name), "seed": int(cfg.seed),
        "metrics": metrics, "throughput": tp,
        "memory": {"peak_bytes": mem.get("peak_bytes"), "device": mem.get("device"), "kind": mem.get("kind")},
        "params": int(params), "params_vs_lra_transformer": param_ratio, "attention_impl": attention_impl,
        "git_sha": g["sha"], "git_dirty": g["dirty"],
        "config": OmegaConf.to_container(cfg, resolve=True), "config_hash": config_hash(cfg),
        "data": data, "versions": versions(), "precision": precision, "wandb": wandb,
        "wall_s": round(wall_s, 3), "gpu_hours": round(wall_s / 3600, 5) if torch.cuda.is_available() else 0.0,
        "checkpoint": str(checkpoint), "output_dir": str(out_dir),
        "protocol": "pytorch-harness", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_record(record: dict, results_dir) -> Path:
    d = Path(results_dir) / record["task"] / f"{record['model']}_{record['attention']}"
    d.mkdir(parents=True, exist_ok=True)
    rid = (record.get("wandb") or {}).get("id") or record["config_hash"][:8]
    path = d / f"{time.strftime('%Y%m%d-%H%M%S')}_s{record['seed']}_{rid}.json"
    write_atomic(path, json.dumps(record, indent=2, sort_keys=True, default=str))
    return path
