"""lra.bench on CPU at small sizes (experiment=smoke), the results table and the Figure 3 chart."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import compose_cfg


def write_record(runs: Path, model: str, attention: str, acc: float, max_length: int, chunk_size: int = -1,
                 task: str = "text") -> None:
    """A run record as lra/records.py writes it (the fields the bench's Figure 3 reads)."""
    d = runs / task / f"{model}_{attention}"
    d.mkdir(parents=True, exist_ok=True)
    rec = {"task": task, "model": model, "attention": attention, "seed": 0, "metrics": {"test/acc": acc},
           "config": {"task": {"name": task, "max_length": max_length},
                      "model": {"name": model, **({"chunk_size": chunk_size} if model == "mega" else {})}}}
    (d / f"{len(list(d.iterdir()))}_{max_length}.json").write_text(json.dumps(rec))


def test_bench_smoke_writes_json_table_plots_only_inside_results_dir(tmp_path):
    """paths.results_dir=PATH: outputs go to PATH/bench, Figure 3 is drawn from the run records in PATH/runs,
    and nothing is written anywhere else (paths.root is a separate, untouched folder)."""
    from lra.bench import run_bench
    out = tmp_path / "out"
    write_record(out / "runs", "transformer", "sdpa", 0.6, max_length=128)
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={out}", "bench.tag=t", "bench.hf_peers=[]",
                       "bench.entries=[transformer/math,transformer/sdpa,transformer/nystrom]"],
                      config_name="bench", out_dir=tmp_path / "hydra", root=tmp_path / "root")
    payload = run_bench(cfg)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["out/bench/t.json", "out/bench/t.md", "out/bench/t_fig3_text.png", "out/bench/t_speed_memory.png",
                       "out/runs/text/transformer_sdpa/0_128.json"]
    data = json.loads((out / "bench" / "t.json").read_text())
    assert data["device"] == "cpu" and len(data["results"]) == 3 * 2
    assert data["complete"] is True and data["pending_entries"] == []
    ok = [r for r in data["results"] if r["status"] == "ok"]
    assert len(ok) == 6 and all(r["steps_per_s"] > 0 for r in ok)
    assert all(r["speed_rel"] == pytest.approx(1.0) for r in ok if r["entry"] == "transformer/sdpa")
    assert all(r["peak_bytes"] > 0 and r["mem_rel"] is not None for r in ok)
    math_ = {r["length"]: r["peak_bytes"] for r in ok if r["entry"] == "transformer/math"}
    assert math_[128] > math_[64]  # more tokens, more activation memory
    md = (out / "bench" / "t.md").read_text()
    assert "transformer/nystrom" in md and "Published (LRA Table 2" in md
    assert md.startswith("_Rendered from `t.json` by lra.bench; re-render with `python -m lra.bench --render ")
    assert (out / "bench" / "t_speed_memory.png").stat().st_size > 1000
    assert (out / "bench" / "t_fig3_text.png").stat().st_size > 1000
    assert payload["results"] == data["results"]


def test_bench_records_every_kind_of_oom_without_crashing(tmp_path, monkeypatch, capsys):
    """OOM: torch.OutOfMemoryError, one in the cause or context chain of another error, or an allocator's
    RuntimeError (CUDA "out of memory", CPU "can't allocate memory"); any other error is an error."""
    import torch
    from lra import bench as B

    def chained():
        try:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        except torch.OutOfMemoryError as e:
            raise ValueError("wrapped by a library") from e

    def context():
        try:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        except torch.OutOfMemoryError:
            raise KeyError("raised while handling it")

    def raiser(e):
        def f():
            raise e
        return f

    by_length = {32: raiser(torch.OutOfMemoryError("CUDA out of memory (simulated)")), 40: chained, 48: context,
                 56: raiser(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 123 bytes")),
                 64: raiser(RuntimeError("CUDA error: out of memory")), 72: raiser(RuntimeError("boom"))}
    monkeypatch.setattr(B, "time_entry", lambda model, L, *a: by_length[L]())
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={tmp_path}", "bench.tag=o",
                       "bench.entries=[transformer/sdpa]", f"bench.lengths={list(by_length)}"], config_name="bench",
                      out_dir=tmp_path)
    payload = B.run_bench(cfg)
    assert [r["status"] for r in payload["results"]] == ["OOM"] * 5 + ["error"]
    assert "OOM" in (tmp_path / "bench" / "o.md").read_text()
    assert "no run records for task text at length 72 matching a measured bench entry: Figure 3 not drawn" in \
        capsys.readouterr().out


def test_cuda_peak_memory_is_reset_after_the_warmup(monkeypatch):
    """The CUDA peak statistic is reset after the warm-up steps (compile workspaces and warm-up allocations do not
    count) and before the first timed step."""
    import torch
    from omegaconf import OmegaConf
    from lra.bench import run_steps
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append("reset"))
    times = run_steps(lambda: events.append("step"), OmegaConf.create({"warmup": 2, "repeats": 2}),
                      torch.device("cuda"))
    assert len(times) == 2
    assert events == ["step", "step", "sync", "reset", "sync", "step", "sync", "sync", "step", "sync"]


def test_default_entries_are_every_registered_one_plus_hf_peers(tmp_path, monkeypatch):
    from lra.bench import bench_entries
    from models.attention import ATTENTION_REGISTRY
    cfg = compose_cfg([], config_name="bench", out_dir=tmp_path)
    attentions = ["math", "sdpa", "flex", "nystrom", "yoso", "yoso_e", "lsh", "longformer", "local"]
    peers = ["hf:nystromformer", "hf:yoso", "hf:yoso_e", "hf:reformer", "hf:longformer", "hf:mega", "hf:mega-chunk"]
    entries = bench_entries(cfg.bench)
    assert sorted(entries) == sorted([f"transformer/{a}" for a in attentions] + ["mega/none", "mega-chunk/none"] + peers)
    assert entries[-len(peers):] == [e for e in entries if e.startswith("hf:")]  # HF peers after ours
    monkeypatch.setitem(ATTENTION_REGISTRY, "toy", object)  # a newly registered backend is benched automatically
    assert "transformer/toy" in bench_entries(cfg.bench)
    cfg = compose_cfg(["bench.entries=[transformer/sdpa,transformer/lsh]"], config_name="bench", out_dir=tmp_path)
    assert bench_entries(cfg.bench) == ["transformer/sdpa", "transformer/lsh", "hf:reformer"]
    for override, err, match in (("bench.entries=[transformer/sdpa,transformer/nope]", KeyError,
                                  r"bench.entries: unknown \['transformer/nope'\]; valid: all or a list of .*transformer/sdpa"),
                                 ("bench.entries=[mega/sdpa]", KeyError, r"unknown \['mega/sdpa'\].*mega/none"),
                                 ("bench.entries=everything", ValueError, "use all or a list"),
                                 ("bench.hf_peers=[bert]", KeyError, r"bench.hf_peers: unknown \['bert'\].*nystromformer")):
        with pytest.raises(err, match=match):
            bench_entries(compose_cfg([override], config_name="bench", out_dir=tmp_path).bench)


def test_missing_transformers_is_recorded_as_skipped(tmp_path, monkeypatch):
    import sys
    from lra.bench import run_bench
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={tmp_path}", "bench.tag=s", "bench.lengths=[32]",
                       "bench.entries=[transformer/sdpa]", "bench.hf_peers=[nystromformer]"],
                      config_name="bench", out_dir=tmp_path)
    payload = run_bench(cfg)
    assert [(r["entry"], r["status"]) for r in payload["results"]] == [("transformer/sdpa", "ok"),
                                                                        ("hf:nystromformer", "skipped")]
    assert "transformers" in payload["results"][1]["reason"]


def test_hf_yoso_without_its_cuda_kernels_is_an_import_error(tmp_path):
    """HF's YOSO only logs a warning when its JIT CUDA kernels do not load, then crashes in forward; the peer
    refuses up front with an ImportError (recorded as skipped)."""
    import torch
    pytest.importorskip("transformers")
    from transformers.models.yoso import modeling_yoso
    from lra.bench import build_entry
    if torch.cuda.is_available() and modeling_yoso.lsh_cumulation is not None:
        pytest.skip("HF's YOSO CUDA kernels are loaded here")
    cfg = compose_cfg(["experiment=smoke"], config_name="bench", out_dir=tmp_path)
    with pytest.raises(ImportError, match="CUDA LSH kernels"):
        build_entry("hf:yoso", 64, cfg.bench)


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


def test_fig3_points_selects_records_by_length_and_scales_bubbles(tmp_path):
    """Accuracy is the mean over the task's records trained at the chart's length (n given), chunked Mega records
    are mega-chunk/none, and bubble areas are proportional to memory with the largest a fixed size."""
    from lra.bench_plots import LARGEST_AREA, bubble_points, draw_fig3
    from lra.results import load_records
    bench = {"device": "x", "results": [
        {"entry": "transformer/sdpa", "length": 4096, "status": "ok", "steps_per_s": 3.0, "peak_bytes": 2**31},
        {"entry": "mega-chunk/none", "length": 4096, "status": "ok", "steps_per_s": 6.0, "peak_bytes": 2**29},
        {"entry": "mega/none", "length": 4096, "status": "ok", "steps_per_s": 4.0, "peak_bytes": 2**30}]}
    runs = tmp_path / "runs"
    write_record(runs, "transformer", "sdpa", 0.6, max_length=4096)
    write_record(runs, "transformer", "sdpa", 0.7, max_length=4096)
    write_record(runs, "transformer", "sdpa", 0.1, max_length=1000)  # another length: not in the 4K chart
    write_record(runs, "transformer", "sdpa", 0.9, max_length=4096, task="listops")
    write_record(runs, "mega", "none", 0.8, max_length=4096, chunk_size=128)
    write_record(runs, "transformer", "lsh", 0.5, max_length=4096)
    recs = load_records(runs)
    pts, missing = bubble_points(bench, recs, "text", 4096)
    assert pts == [{"entry": "mega-chunk/none", "acc": 80.0, "n": 1, "steps_per_s": 6.0, "mem_gib": 0.5},
                   {"entry": "transformer/sdpa", "acc": pytest.approx(65.0), "n": 2, "steps_per_s": 3.0, "mem_gib": 2.0}]
    assert missing == ["mega/none", "transformer/lsh"]
    fig = draw_fig3(bench, recs, "text", 4096, tmp_path / "f.png")
    assert fig["figure"] == tmp_path / "f.png" and fig["figure"].stat().st_size > 1000
    assert [p["area"] for p in fig["points"]] == [LARGEST_AREA / 4, LARGEST_AREA]
    assert draw_fig3(bench, recs, "text", 2048, tmp_path / "g.png")["figure"] is None
    assert not (tmp_path / "g.png").exists()


def test_bench_compile_really_compiles_every_entry(tmp_path, monkeypatch):
    """More (entry, length) pairs than Dynamo's recompile limit (8), all sharing the same forward code: each one
    compiles its own graphs (fresh Dynamo cache per entry) with the recompile limit an error inside the bench."""
    import torch
    from lra import bench as B
    flags, real_run_steps = [], B.run_steps

    def run_steps(*a):
        flags.append(torch._dynamo.config.fail_on_recompile_limit_hit)
        return real_run_steps(*a)

    monkeypatch.setattr(B, "run_steps", run_steps)
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={tmp_path}", "bench.tag=e", "bench.compile=true",
                       "bench.compile_backend=eager", "bench.hf_peers=[]", "bench.lengths=[32,64]", "bench.warmup=1",
                       "bench.repeats=1", "bench.entries=[transformer/math,transformer/sdpa,transformer/nystrom,"
                       "transformer/yoso_e,mega/none]"], config_name="bench", out_dir=tmp_path)
    payload = B.run_bench(cfg)
    assert len(payload["results"]) == 10
    assert [(r["entry"], r["length"]) for r in payload["results"] if r["status"] != "ok" or r["compiled_graphs"] < 1] == []
    assert flags == [True] * 10 and torch._dynamo.config.fail_on_recompile_limit_hit is False


def test_bench_compile_option_and_growth_and_mfu_tables(tmp_path):
    from lra.bench import markdown_table, run_bench
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={tmp_path}", "bench.tag=c", "bench.compile=true",
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
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={tmp_path}", "bench.tag=m",
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
    cfg = compose_cfg(["experiment=smoke", f"paths.results_dir={tmp_path}", "bench.tag=k", "bench.hf_peers=[]",
                       "bench.entries=[transformer/sdpa,transformer/nystrom,transformer/lsh]"],
                      config_name="bench", out_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        B.run_bench(cfg)
    data = json.loads((tmp_path / "bench" / "k.json").read_text())
    assert data["complete"] is False and data["pending_entries"] == ["transformer/nystrom", "transformer/lsh"]
    assert [r["entry"] for r in data["results"]] == ["transformer/sdpa"] * 2
    md = (tmp_path / "bench" / "k.md").read_text()
    assert "\n**Incomplete run**: not yet measured: transformer/nystrom, transformer/lsh.\n" in md


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


def test_published_figures_sit_beside_our_rows():
    """Each entry's row carries the published speed and memory of the same model relative to the paper's own
    Transformer at the same length (printed ratio, else computed from steps/s and GB), beside ours."""
    from lra.bench import markdown_table

    def row(entry, L, speed, mem):
        return {"entry": entry, "length": L, "status": "ok", "steps_per_s": speed, "step_s": 1 / speed,
                "peak_bytes": int(mem * 2**30), "speed_rel": speed / 10, "mem_rel": mem / 4}

    rows = [row(e, L, s, m) for L in (1024, 4096) for e, s, m in (
        ("transformer/sdpa", 10, 4), ("transformer/lsh", 20, 2), ("mega-chunk/none", 30, 1), ("transformer/nystrom", 15, 1))]
    rows.append({"entry": "hf:reformer", "length": 1024, "status": "OOM"})
    md = markdown_table(rows, [1024, 4096], "transformer/sdpa", "H100")
    assert ("| transformer/sdpa | Transformer | LRA Table 2 | 1.00 / 1.00 | 1.00 / 1.00 | 1.00 / 1.00 | 1.00 / 1.00 |"
            in md)
    # LRA Table 2 Reformer: speed 0.5x / 0.8x as printed; memory 0.48 / 0.85 GB and 2.28 / 9.48 GB
    assert "| transformer/lsh | Reformer | LRA Table 2 | 2.00 / 0.5 | 2.00 / 0.8 | 0.50 / 0.56 | 0.50 / 0.24 |" in md
    assert "| hf:reformer | Reformer | LRA Table 2 | OOM / 0.5 | — / 0.8 | OOM / 0.56 | — / 0.24 |" in md
    assert "| mega-chunk/none | Mega-chunk | Mega Table 2 | 3.00 / — | 3.00 / 5.5 | 0.25 / — | 0.25 / 0.13 |" in md
    assert "| transformer/nystrom | Nystromformer | — | 1.50 / — | 1.50 / — | 0.25 / — | 0.25 / — |" in md
    assert "peak GiB 1024" in md and "memory in GB per device as printed, where our tables use GiB" in md


def test_render_recounts_mfu_from_a_bench_json_without_touching_it(tmp_path):
    """`python -m lra.bench --render JSON` rewrites the markdown beside the JSON with the current tables and FLOP
    count: the committed H100 session-1 JSON (recorded 11.5 % MFU at 4K with the old count) gives 11.2 %."""
    import shutil
    import subprocess
    import sys
    from conftest import ROOT
    src = ROOT / "results" / "bench" / "h100_session1.json"
    js = tmp_path / "h100_session1.json"
    shutil.copy(src, js)
    proc = subprocess.run([sys.executable, "-m", "lra.bench", "--render", str(js)], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert proc.stdout.strip() == str(tmp_path / "h100_session1.md")
    assert js.read_bytes() == src.read_bytes()
    md = (tmp_path / "h100_session1.md").read_text()
    assert md.startswith(f"_Rendered from `h100_session1.json` by lra.bench; re-render with `python -m lra.bench "
                         f"--render {js}`")
    assert "| transformer/sdpa | 5.2% | 9.5% | 10.4% | 11.2% |" in md  # recorded 11.5% at 4K: old FLOP count
    assert "| transformer/sdpa | 4.09 | 3.74 |" in md and "Ours beside the published figures" in md
