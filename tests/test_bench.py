"""lra.bench on CPU at small sizes (experiment=smoke), the results table and the Figure 3 chart."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import compose_cfg


def test_bench_smoke_writes_json_table_and_plot(tmp_path):
    from lra.bench import run_bench
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={tmp_path}/runs", "bench.tag=t",
                       "bench.entries=[transformer/math,transformer/sdpa,transformer/nystrom]"],
                      config_name="bench", out_dir=tmp_path)
    payload = run_bench(cfg)
    out = tmp_path / "bench"
    data = json.loads((out / "t.json").read_text())
    assert data["device"] == "cpu" and len(data["results"]) == 3 * 2
    assert data["complete"] is True and data["pending_entries"] == []
    ok = [r for r in data["results"] if r["status"] == "ok"]
    assert len(ok) == 6 and all(r["steps_per_s"] > 0 for r in ok)
    assert all(r["speed_rel"] == pytest.approx(1.0) for r in ok if r["entry"] == "transformer/sdpa")
    assert all(r["peak_bytes"] > 0 and r["mem_rel"] is not None for r in ok)
    math_ = {r["length"]: r["peak_bytes"] for r in ok if r["entry"] == "transformer/math"}
    assert math_[128] > math_[64]  # more tokens, more activation memory
    md = (out / "t.md").read_text()
    assert "transformer/nystrom" in md and "Published (LRA Table 2" in md
    assert (out / "t_speed_memory.png").stat().st_size > 1000
    assert payload["results"] == data["results"] or len(payload["results"]) == 6


def test_bench_records_oom_and_errors_without_crashing(tmp_path, monkeypatch):
    import torch
    from lra import bench as B
    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
    monkeypatch.setattr(B, "time_entry", boom)
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={tmp_path}/runs", "bench.tag=o",
                       "bench.entries=[transformer/sdpa]", "bench.lengths=[32]"], config_name="bench", out_dir=tmp_path)
    payload = B.run_bench(cfg)
    assert [r["status"] for r in payload["results"]] == ["OOM"]
    assert "OOM" in (tmp_path / "bench" / "o.md").read_text()


def test_results_table_from_records(tmp_path):
    from lra.results import accuracy_table
    def rec(task, model, attn, acc, seed):
        return {"task": task, "model": model, "attention": attn, "seed": seed, "metrics": {"test/acc": acc},
                "throughput": {"train/steps_per_s": 2.0}, "memory": {"peak_bytes": 2**30}, "protocol": "pytorch-harness",
                "params_vs_lra_transformer": {"ratio": 1.0}, "versions": {"gpu": None}}
    recs = [rec("listops", "transformer", "sdpa", 0.30, 0), rec("listops", "transformer", "sdpa", 0.40, 1),
            rec("text", "transformer", "sdpa", 0.6, 0)]
    md = accuracy_table(recs)
    row = [l for l in md.splitlines() if l.startswith("| transformer | sdpa |")][0]
    assert "35.00 ± 7.07 (2)" in row and "60.00 ± 0.00 (1)" in row
    assert row.rstrip().endswith("| — |")  # avg needs all five tasks; missing cells are —, never 0
    assert "| — |" in row


def test_fig3_points(tmp_path):
    from lra.bench_plots import bubble_points
    bench = {"device": "x", "results": [{"entry": "transformer/sdpa", "length": 4096, "status": "ok", "steps_per_s": 3.0,
                                         "peak_bytes": 2**31}]}
    recs = [{"task": "text", "model": "transformer", "attention": "sdpa", "metrics": {"test/acc": 0.6}},
            {"task": "text", "model": "transformer", "attention": "lsh", "metrics": {"test/acc": 0.5}}]
    pts, missing = bubble_points(bench, recs, "text", 4096)
    assert pts == [{"entry": "transformer/sdpa", "acc": 60.0, "steps_per_s": 3.0, "mem_gib": 2.0}]
    assert missing == ["transformer/lsh"]


def test_bench_compile_option_and_growth_and_mfu_tables(tmp_path):
    from lra.bench import markdown_table, run_bench
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={tmp_path}/runs", "bench.tag=c", "bench.compile=true",
                       "bench.entries=[transformer/sdpa]", "bench.lengths=[32,64]"], config_name="bench",
                      out_dir=tmp_path)
    payload = run_bench(cfg)
    assert [r["status"] for r in payload["results"]] == ["ok", "ok"]
    assert all(r["compiled"] for r in payload["results"])
    md = (tmp_path / "bench" / "c.md").read_text()
    assert "torch.compile" in md and "Cost growth from 32 to 64 tokens" in md
    a, b = payload["results"]
    assert all(r["peak_bytes"] > 0 for r in payload["results"])  # CPU peak from lra.cpu_memory
    assert f"| transformer/sdpa | {b['step_s'] / a['step_s']:.2f} | {b['peak_bytes'] / a['peak_bytes']:.2f} |" in md
    rows = [{"entry": "transformer/sdpa", "length": L, "status": "ok", "steps_per_s": 10.0 / i, "step_s": 0.1 * i,
             "peak_bytes": 2**30 * i, "mfu": 0.1 * i} for i, L in ((1, 1024), (4, 4096))]
    md = markdown_table(rows, [1024, 4096], "transformer/sdpa", "H100")
    assert "| transformer/sdpa | 4.00 | 4.00 |" in md and "| transformer/sdpa | 10.0% | 40.0% |" in md
    assert "eager" in md


def test_mega_entries_match_the_hf_peer_layer_for_layer(tmp_path):
    """Mega and Mega-chunk are benchmarked at the same dims as HF's Mega: every encoder parameter has a twin of
    the same shape (ours only adds the LRA classifier MLP); Mega-chunk carries the variant's chunk size."""
    pytest.importorskip("transformers")
    from lra.bench import build_entry
    cfg = compose_cfg(["experiment=smoke"], config_name="bench", out_dir=tmp_path)

    def layer_shapes(model):
        return sorted(tuple(p.shape) for n, p in model.named_parameters() if n.startswith("encoder.layers."))

    for ours, peer in (("mega/none", "hf:mega"), ("mega-chunk/none", "hf:mega-chunk")):
        a, _ = build_entry(ours, 128, cfg.bench)
        b, _ = build_entry(peer, 128, cfg.bench)
        assert layer_shapes(a) == layer_shapes(b), ours
    chunked, _ = build_entry("mega-chunk/none", 128, cfg.bench)
    hf_chunked, _ = build_entry("hf:mega-chunk", 128, cfg.bench)
    assert chunked.encoder.layers[0].mega.chunk_size == 32
    assert hf_chunked.encoder.config.use_chunking and hf_chunked.encoder.config.chunk_size == 32


def test_mega_chunk_entry_runs_beside_its_peer(tmp_path):
    pytest.importorskip("transformers")
    from lra.bench import run_bench
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={tmp_path}/runs", "bench.tag=m",
                       "bench.entries=[transformer/sdpa,mega/none,mega-chunk/none]", "bench.hf_peers=[mega-chunk]"],
                      config_name="bench", out_dir=tmp_path)
    payload = run_bench(cfg)
    assert {r["status"] for r in payload["results"]} == {"ok"}
    rows = [r for r in payload["results"] if r["entry"] == "mega-chunk/none"]
    assert len(rows) == 2 and all(r["vs_hf_speed"] > 0 for r in rows)
    md = (tmp_path / "bench" / "m.md").read_text()
    assert "mega-chunk/none" in md
    assert "| Mega paper Table 2 | Mega-chunk | — | 5.5 | 0.13 |" in md  # the published figure it sits beside


def test_bad_variant_is_refused(tmp_path):
    from lra.bench import build_entry
    cfg = compose_cfg(["experiment=smoke", "+bench.variants.bad={model: mega, override: {chunk_size: 8}}"],
                      config_name="bench", out_dir=tmp_path)
    with pytest.raises(KeyError, match="bench.variants.bad: needs exactly the keys model and overrides"):
        build_entry("bad/none", 64, cfg.bench)
    cfg = compose_cfg(["experiment=smoke", "+bench.variants.bad2={model: mega, overrides: {chunk_sise: 8}}"],
                      config_name="bench", out_dir=tmp_path)
    with pytest.raises(Exception, match="chunk_sise"):
        build_entry("bad2/none", 64, cfg.bench)


def test_bench_cut_short_keeps_what_it_measured(tmp_path, monkeypatch):
    """Results are written after every entry: a run killed mid-way (a device call's time limit) leaves a valid
    JSON and table marked incomplete, naming the entries not measured."""
    from lra import bench as B
    real_build = B.build_entry

    def build(entry, L, bench):
        if entry == "transformer/nystrom":
            raise KeyboardInterrupt  # stands in for the kill: not caught as an entry error
        return real_build(entry, L, bench)

    monkeypatch.setattr(B, "build_entry", build)
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={tmp_path}/runs", "bench.tag=k",
                       "bench.entries=[transformer/sdpa,transformer/nystrom,transformer/lsh]"],
                      config_name="bench", out_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        B.run_bench(cfg)
    data = json.loads((tmp_path / "bench" / "k.json").read_text())
    assert data["complete"] is False and data["pending_entries"] == ["transformer/nystrom", "transformer/lsh"]
    assert [r["entry"] for r in data["results"]] == ["transformer/sdpa"] * 2
    md = (tmp_path / "bench" / "k.md").read_text()
    assert md.startswith("**Incomplete run**: not yet measured: transformer/nystrom, transformer/lsh.")


def test_hf_peers_take_our_attention_settings(tmp_path):
    """The HF peers are configured from our resolved attention configs (overrides included), so a comparison
    cannot run the two sides with different buckets, landmarks, windows or hash widths."""
    pytest.importorskip("transformers")
    from lra.bench import build_entry
    cfg = compose_cfg(["experiment=smoke",
                       "bench.attention_overrides={lsh: {num_buckets: 16, chunk_length: 32}, "
                       "nystrom: {num_landmarks: 16}, longformer: {window: 64}, yoso_e: {hash_code_len: 9}}"],
                      config_name="bench", out_dir=tmp_path)
    reformer = build_entry("hf:reformer", 128, cfg.bench)[0].encoder.config
    assert (reformer.num_buckets, reformer.lsh_attn_chunk_length, reformer.num_hashes) == (16, 32, 1)
    assert (reformer.lsh_num_chunks_before, reformer.lsh_num_chunks_after) == (1, 1)
    assert build_entry("hf:nystromformer", 128, cfg.bench)[0].encoder.config.num_landmarks == 16
    assert build_entry("hf:longformer", 128, cfg.bench)[0].encoder.config.attention_window == [64]
    assert build_entry("hf:yoso_e", 128, cfg.bench)[0].encoder.config.hash_code_len == 9
    ours = build_entry("transformer/lsh", 128, cfg.bench)[0].encoder.layers[0].attn.backend
    assert ours.chunk_length == 32


def test_hf_mega_peer_has_our_dropouts(tmp_path):
    pytest.importorskip("transformers")
    from lra.bench import build_entry
    cfg = compose_cfg(["experiment=smoke"], config_name="bench", out_dir=tmp_path)
    c = build_entry("hf:mega", 128, cfg.bench)[0].encoder.config
    # conf/model/mega.yaml: dropout 0.1, hidden (values + NFFN) 0.0, attention weights 0.0; HF defaults are all 0.1
    assert (c.dropout_prob, c.hidden_dropout_prob, c.nffn_activation_dropout_prob,
            c.attention_probs_dropout_prob, c.truncation) == (0.1, 0.0, 0.0, 0.0, 1024)


@pytest.mark.parametrize("L", [64, 200])
def test_mfu_flop_count_matches_torch_flop_counter(tmp_path, L):
    """The bench's analytic FLOPs per training step (the MFU numerator) agree with torch's FLOP counter run on
    the same model's forward and backward: matmuls and attention, the head counted once per sequence."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from lra.bench import build_entry
    cfg = compose_cfg(["bench.batch_size=3"], config_name="bench", out_dir=tmp_path)  # the Table-2 model size
    model, flops = build_entry("transformer/math", L, cfg.bench)
    ids = torch.randint(1, 257, (3, L))
    with FlopCounterMode(display=False) as counter:
        model({"input_ids": ids, "mask": torch.ones_like(ids, dtype=torch.bool), "all_real": True}).sum().backward()
    assert flops == pytest.approx(counter.get_total_flops(), rel=0.01)  # biases / norms: the counter skips adds
