"""Shared fixtures: compose the real Hydra config (no @hydra.main), tiny and CPU-only."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_cfg(overrides=(), config_name="train", out_dir: Path | None = None, root: Path | None = None):
    """Compose conf/<config_name>.yaml with overrides; hydra: interpolations replaced by real paths."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=False)
    root = root or ROOT
    with open_dict(cfg):
        cfg.paths.root = str(root)
        cfg.paths.output_dir = str(out_dir or root / "outputs" / "test")
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture(scope="session")
def shared_dirs(tmp_path_factory):
    """Data and cache folders shared by the whole session (generated smoke data is made once)."""
    base = tmp_path_factory.mktemp("lra_shared")
    return {"data": base / "data", "cache": base / "cache"}


@pytest.fixture
def smoke_cfg(tmp_path, shared_dirs):
    """experiment=smoke composed like run.py would; results and run folder inside tmp_path."""
    def make(*overrides, out_dir=None):
        return compose_cfg(["experiment=smoke", f"paths.data_dir={shared_dirs['data']}",
                            f"paths.cache_dir={shared_dirs['cache']}", f"paths.results_dir={tmp_path}/results",
                            *overrides], out_dir=out_dir or tmp_path / "run", root=ROOT)
    return make


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def resolved(cfg):
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(autouse=True)
def _no_tf32(monkeypatch):
    """CUDA tests compare against fp32 references: their matmuls must not use TF32, whatever another test or the
    environment left set (lra.bench enables it while it measures an entry)."""
    import torch
    if torch.cuda.is_available():
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
