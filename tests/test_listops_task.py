"""The ListOps task through the harness: prepare command, cache keys, bad input errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from lra.tasks import build_task


def _task(tmp_path, data_dir, **kw):
    cfg = {"name": "listops", "data_dir": str(data_dir), "generate": kw.pop("generate", True), "tokenizer": "lra",
           "max_length": kw.pop("max_length", 128), "batch_size": 8,
           "gen": {"num_train": 40, "num_val": 8, "num_test": 8, "max_depth": 5, "max_args": 4, "min_length": 10,
                   "max_length": 100, **kw}}
    return build_task(cfg, tmp_path / "cache")


def test_missing_data_with_generate_false_names_files(tmp_path):
    task = _task(tmp_path, tmp_path / "nothing", generate=False)
    with pytest.raises(FileNotFoundError, match="basic_train.tsv.*task.generate=true"):
        task.prepare()


def test_malformed_tsv_is_an_error_naming_file_and_line(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    good = "Source\tTarget\n( [MAX 2 ] )\t2\n"
    (d / "basic_train.tsv").write_text(good + "( [MIN 3 ] )\t3\textra\n")
    (d / "basic_val.tsv").write_text(good)
    (d / "basic_test.tsv").write_text(good)
    with pytest.raises(ValueError, match=r"basic_train.tsv:3"):
        _task(tmp_path, d, generate=False).prepare()


def test_changed_parameter_never_reuses_cache(tmp_path):
    a = _task(tmp_path, tmp_path / "d").prepare()
    b = _task(tmp_path, tmp_path / "d", max_length=64).prepare()
    assert a["cache_dir"] != b["cache_dir"]
    again = _task(tmp_path, tmp_path / "d").prepare()
    assert again["cache_dir"] == a["cache_dir"] and again["fingerprint"] == a["fingerprint"]
    # changing the raw file changes the cache key
    p = tmp_path / "d" / "basic_test.tsv"
    p.write_text(p.read_text().replace("\t", "\t", 1) + "( [SM 1 2 ] )\t3\r\n")
    c = _task(tmp_path, tmp_path / "d").prepare()
    assert c["cache_dir"] != a["cache_dir"] and c["splits"]["test"] == a["splits"]["test"] + 1


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    task = _task(tmp_path, tmp_path / "d")
    task.ensure_raw()
    from lra.tasks import listops as mod
    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(mod, "read_listops_tsv", boom)
    with pytest.raises(KeyboardInterrupt):
        task.prepare()
    assert not task.cache_dir().exists()
    assert not list(task.cache_dir().parent.glob("*.tmp-*"))


def test_prepare_command_prints_json_last_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lra.prepare", "experiment=smoke", f"task.data_dir={tmp_path}/lo",
                        f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/h"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["task"] == "listops" and last["splits"] == {"train": 400, "val": 64, "test": 64}
    assert len(last["fingerprint"]) == 16
    assert (tmp_path / "lo" / "basic_train.tsv").is_file()


def _prepared_task(tmp_path, folder, **cfg):
    base = {"name": "listops", "data_dir": str(tmp_path / "absent"), "generate": False, "tokenizer": "lra",
            "max_length": 128, "batch_size": 8, "gen": {}, "prepared": str(folder)}
    return build_task({**base, **cfg}, tmp_path / "other_cache")


def test_prepared_cache_is_used_without_raw_data_and_checked(tmp_path):
    """task.prepared: a folder from `lra.prepare` serves a run that has no raw data; mismatches are errors."""
    from lra.datamodule import LRADataModule
    meta = _task(tmp_path, tmp_path / "d").prepare()
    folder = meta["cache_dir"]
    got = _prepared_task(tmp_path, folder).prepare()
    assert got["cache_dir"] == folder and got["fingerprint"] == meta["fingerprint"]
    assert not (tmp_path / "absent").exists() and not (tmp_path / "other_cache").exists()
    dm = LRADataModule(_prepared_task(tmp_path, folder), batch_size=4, seed=0, num_workers=0)
    dm.prepare_data()
    dm.setup()
    assert len(dm.datasets["train"]) == 40
    with pytest.raises(ValueError, match="max_length.*128, 64|spec"):
        _prepared_task(tmp_path, folder, max_length=64).prepare()
    with pytest.raises(ValueError, match="tokenizer"):
        _prepared_task(tmp_path, folder, tokenizer="keep_parens").prepare()
    with pytest.raises(FileNotFoundError, match="task.prepared=.*no meta.json"):
        _prepared_task(tmp_path, tmp_path / "nowhere").prepare()
    with pytest.raises(ValueError, match="holds task 'listops', not 'text'"):
        build_task({"name": "text", "data_dir": str(tmp_path), "prepared": folder}, tmp_path / "c").prepare()
