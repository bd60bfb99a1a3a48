"""``python -m lra.bench [overrides]``: the LRA Table 2 efficiency protocol for every registered model/backend.

Protocol (LRA §4.1 / Table 2): the Text task's model size (4 layers, emb 256, 4 heads, qkv 256, mlp 1024 —
the released Text config), batch 32, lengths 1K/2K/3K/4K; one measurement = a full training step
(forward, backward, AdamW step) on random byte tokens. Each (entry, length) gets ``bench.warmup`` untimed
steps, then ``bench.repeats`` timed steps (CUDA-synchronised), and the median is reported. On CUDA the peak
memory statistic is reset after the warm-up (compile workspaces and warm-up allocations do not count) and read
with ``torch.cuda.max_memory_allocated`` after the timed steps; on CPU, two more steps run under the profiler and
:mod:`lra.cpu_memory` reads the peak from PyTorch's allocator events (same scope: tensors and workspaces through
PyTorch's allocator). An out-of-memory error (``torch.OutOfMemoryError`` anywhere in the exception's
cause/context chain, or an allocator "out of memory" / "can't allocate memory" RuntimeError) is recorded as OOM,
not a crash. Speed and memory are also given relative to our softmax Transformer (``bench.baseline``) on the same
device, and MFU for the softmax Transformer. ``bench.compile=true`` compiles every entry with a fresh Dynamo
cache; hitting Dynamo's recompile limit, or compiling no graph, is an error, never a silent eager run.

Entries (``bench.entries: all`` = every one registered): ``<model>/<attention>`` for our models (every registered
attention backend under ``transformer``; ``mega/none`` for Mega, ``mega-chunk/none`` for Mega-chunk: a
``bench.variants`` name, a registered model plus overrides), ``hf:<name>`` for the HF implementation of the same
model at equal dimensions (see :mod:`lra.bench_hf`; ``bench.hf_peers: all`` = the peer of every benched entry
that has one), recorded as skipped when transformers (or, for ``hf:yoso``, HF's CUDA kernels) is missing.
Outputs under ``bench.out_dir`` (``<paths.results_dir>/bench``): ``<tag>.json``, ``<tag>.md`` (a Table-2-shaped
markdown table, with the published figures of the same models beside ours) and ``<tag>_speed_memory.png``; and
``<tag>_fig3_text.png``, the LRA Figure 3 bubble chart (:mod:`lra.bench_plots`), when ``bench.runs_dir`` holds
Text run records at the longest bench length. ``python -m lra.bench --render results/bench/<tag>.json``
re-renders ``<tag>.md`` from a bench JSON with the current tables and FLOP count (no device needed).
"""
from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from lra.atomic import atomic_path, write_atomic
from lra.cpu_memory import cpu_peak_bytes
from lra.records import git_state, versions
from lra.tasks.base import TaskSpec

log = logging.getLogger("lra.bench")
ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
PUBLISHED = ROOT.parent / "shared" / "reference" / "published-efficiency.csv"

# our entry -> the HF implementation of the same model (lra.bench_hf)
HF_PEER = {"transformer/nystrom": "hf:nystromformer", "transformer/yoso_e": "hf:yoso_e", "transformer/yoso": "hf:yoso",
           "transformer/lsh": "hf:reformer", "transformer/longformer": "hf:longformer", "mega/none": "hf:mega",
           "mega-chunk/none": "hf:mega-chunk"}

# our entry -> the published model it implements (names as in published-efficiency.csv)
PUBLISHED_AS = {"transformer/math": "Transformer", "transformer/sdpa": "Transformer", "transformer/flex": "Transformer",
                "transformer/nystrom": "Nystromformer", "transformer/yoso": "YOSO", "transformer/yoso_e": "YOSO",
                "transformer/lsh": "Reformer", "transformer/longformer": "Longformer",
                "transformer/local": "Local Attention", "mega/none": "Mega", "mega-chunk/none": "Mega-chunk"}
# Table-2-protocol sources, preferred first -> the name of that paper's own Transformer
TABLE2_SOURCES = {"LRA paper Table 2": "Transformer", "Mega paper Table 2": "Transformer (XFM, re-implemented)"}

# the softmax Transformer entries, whose FLOPs per step (and so MFU) the bench counts
MFU_ENTRIES = ("transformer/math", "transformer/sdpa", "transformer/flex")

# dense bf16 tensor-core peak FLOP/s by GPU name fragment (vendor datasheets, no sparsity)
PEAK_FLOPS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def attention_cfg(name: str, model_cfg: dict, bench: DictConfig) -> dict:
    """conf/attention/<name>.yaml resolved against the model config (for ${model.attn_dropout}), then
    ``bench.attention_overrides[name]`` (the same settings reach our entry and its HF peer)."""
    path = CONF / "attention" / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"bench entry attention {name!r}: no {path}")
    merged = OmegaConf.create({"model": model_cfg, "attention": OmegaConf.load(path)})
    attention = OmegaConf.to_container(merged, resolve=True)["attention"]
    attention.update((bench.attention_overrides or {}).get(name) or {})
    return attention


def model_cfg(name: str, size: dict) -> dict:
    base = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{name}.yaml"), resolve=False)
    base = {k: v for k, v in base.items() if not (isinstance(v, str) and "${" in v)}
    base.update({k: v for k, v in size.get(name, {}).items()})
    base["head"] = {"mlp_dim": size.get("head_mlp_dim", 256)}
    return base


def _variants(bench: DictConfig) -> dict:
    variants = OmegaConf.to_container(bench.variants, resolve=True) if bench.get("variants") else {}
    for name, v in variants.items():
        if set(v) != {"model", "overrides"}:
            raise KeyError(f"bench.variants.{name}: needs exactly the keys model and overrides, got {sorted(v)}")
    return variants


def resolve_variant(name: str, bench: DictConfig) -> tuple[str, dict]:
    """Entry model name -> (registered model, size dict with the variant's overrides merged into that model's
    size). ``bench.variants`` maps e.g. ``mega-chunk`` to ``mega`` + ``{chunk_size: 128}``."""
    size = OmegaConf.to_container(bench.size, resolve=True)
    variants = _variants(bench)
    if name not in variants:
        return name, size
    v = variants[name]
    size[v["model"]] = {**size.get(v["model"], {}), **v["overrides"]}
    return v["model"], size


def registered_entries(bench: DictConfig) -> list[str]:
    """Every entry the registries define: ``<model>/<attention>`` for each registered attention backend under
    each model family that uses attention, ``<model>/none`` for the others, then the same for each
    ``bench.variants`` name (as its model)."""
    from models.attention import ATTENTION_REGISTRY
    from models.registry import MODEL_REGISTRY, USES_ATTENTION
    variants = _variants(bench)
    unknown = {n: v["model"] for n, v in variants.items() if v["model"] not in MODEL_REGISTRY}
    if unknown:
        raise KeyError(f"bench.variants: unknown model(s) {unknown}; registered: {sorted(MODEL_REGISTRY)}")
    out = []
    for name, model in [*((m, m) for m in MODEL_REGISTRY), *((n, v["model"]) for n, v in variants.items())]:
        out += [f"{name}/{a}" for a in ATTENTION_REGISTRY] if USES_ATTENTION[model] else [f"{name}/none"]
    return out


def bench_entries(bench: DictConfig) -> list[str]:
    """``bench.entries`` (``all`` or a list) followed by the HF peers of ``bench.hf_peers`` (``all`` = the peer of
    every chosen entry that has one, or a list of names); an unknown name raises with the valid choices."""
    def chosen(key: str, valid: list[str], all_: list[str]) -> list[str]:
        value = bench[key]
        if isinstance(value, str):
            if value != "all":
                raise ValueError(f"bench.{key}: {value!r}; use all or a list of {valid}")
            return all_
        unknown = [e for e in value if e not in valid]
        if unknown:
            raise KeyError(f"bench.{key}: unknown {unknown}; valid: all or a list of {valid}")
        return list(value)

    registered = registered_entries(bench)
    ours = chosen("entries", registered, registered)
    peers = chosen("hf_peers", sorted({p[3:] for p in HF_PEER.values()}), [HF_PEER[e][3:] for e in ours if e in HF_PEER])
    return ours + [f"hf:{h}" for h in peers]


def build_entry(entry: str, L: int, bench: DictConfig):
    """-> (module with forward(batch) -> logits, n_params, flops_per_step or None)."""
    spec = TaskSpec(name="text", seq_len=L, vocab_size=257, num_classes=2, pad_id=0)
    if entry.startswith("hf:"):
        from lra.bench_hf import build_hf
        base, size = resolve_variant(entry[3:], bench)
        ours = next((e for e, peer in HF_PEER.items() if peer == f"hf:{base}"), None)
        if base == "mega":  # the whole resolved Mega config (conf/model/mega.yaml + size): dims, dropouts, truncation
            size = {**size, "mega": model_cfg("mega", size)}
        attention = None
        if ours and ours.startswith("transformer/"):  # the peer's attention settings = ours, overrides included
            aname = ours.split("/")[1]
            attention = attention_cfg(aname, model_cfg("transformer", size), bench)
        return build_hf(base, L, size, attention), None
    from models.registry import build_model
    mname, aname = entry.split("/")
    mname, size = resolve_variant(mname, bench)
    mc = model_cfg(mname, size)
    ac = attention_cfg(aname, mc, bench) if aname != "none" else {"name": "none"}
    model = build_model(mc, ac, spec)
    flops = None
    if f"{mname}/{aname}" in MFU_ENTRIES:
        # 6 x params x tokens (forward 2, backward 4) for the per-token weights, 6 x params x sequences for the
        # classifier head (it sees the pooled vector only), 12 x layers x B x L^2 x qkv for QK^T and AV; embedding
        # lookups are free. Checked against torch.utils.flop_counter in tests/test_bench.py.
        named = [(n, p.numel()) for n, p in model.named_parameters() if "embed" not in n]
        per_token = sum(k for n, k in named if not n.startswith("head."))
        per_sequence = sum(k for n, k in named if n.startswith("head."))
        B, tokens = bench.batch_size, bench.batch_size * (L + 1)
        flops = 6 * per_token * tokens + 6 * per_sequence * B + 12 * mc["num_layers"] * B * (L + 1) ** 2 * mc["qkv_dim"]
    return model, flops


def run_steps(step, bench: DictConfig, device: torch.device) -> list[float]:
    """``bench.warmup`` untimed steps, then (CUDA) the peak-memory reset, so compile workspaces and warm-up
    allocations never count, then ``bench.repeats`` timed steps -> their times in seconds."""
    cuda = device.type == "cuda"
    for _ in range(bench.warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(bench.repeats):
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


@contextlib.contextmanager
def _tf32(on: bool):
    """TF32 for the fp32 matmuls left outside autocast, only while an entry is measured (restored after)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = on or before
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def time_entry(model, L: int, bench: DictConfig, device: torch.device, dtype) -> dict:
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    compiling = contextlib.nullcontext()
    if bench.compile:  # compilation happens in the warm-up steps, outside the timed repeats
        # every entry runs the same forward code: without a fresh cache Dynamo hits its recompile limit after a
        # few (entry, length) pairs and runs the rest eager; hitting it inside one entry is an error
        from torch._dynamo.utils import counters
        torch._dynamo.reset()
        model = torch.compile(model, backend=bench.compile_backend)
        compiling = torch._dynamo.config.patch(fail_on_recompile_limit_hit=True)
        graphs_before = counters["stats"]["unique_graphs"]
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(1, 257, (bench.batch_size, L), generator=g).to(device)
    # random tokens, no padding: all_real lets our models skip masking, as training does for unpadded batches
    batch = {"input_ids": ids, "mask": torch.ones_like(ids, dtype=torch.bool), "all_real": True,
             "label": torch.randint(0, 2, (bench.batch_size,), generator=g).to(device)}
    use_amp = device.type == "cuda" and dtype != torch.float32

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            logits = model(batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.empty_cache()
    with compiling, _tf32(device.type == "cuda"):
        times = run_steps(step, bench, device)
        if device.type == "cuda":
            mem = int(torch.cuda.max_memory_allocated(device))
        else:  # after the timed repeats, so the profiler's overhead never reaches the timings
            def persistent():
                params = list(model.parameters())
                return [*params, *(p.grad for p in params), *model.buffers(), ids, batch["mask"], batch["label"],
                        *(t for state in opt.state.values() for t in state.values() if torch.is_tensor(t))]
            mem = cpu_peak_bytes(step, persistent)
    med = statistics.median(times)
    out = {"step_s": med, "steps_per_s": 1.0 / med, "tokens_per_s": bench.batch_size * L / med, "peak_bytes": mem,
           "times": times}
    if bench.compile:
        out["compiled_graphs"] = counters["stats"]["unique_graphs"] - graphs_before
        if not out["compiled_graphs"]:
            raise RuntimeError("torch.compile compiled no graph: the entry ran eager")
    return out


def is_oom(e: BaseException) -> bool:
    """Out of memory: a ``torch.OutOfMemoryError`` anywhere in the cause/context chain, or a RuntimeError from an
    allocator (CUDA "out of memory", CPU "DefaultCPUAllocator: can't allocate memory")."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, torch.OutOfMemoryError) or (
                isinstance(e, RuntimeError) and ("out of memory" in str(e) or "can't allocate memory" in str(e))):
            return True
        e = e.__cause__ or e.__context__
    return False


@functools.cache
def _published() -> tuple[dict, ...]:
    """The rows of published-efficiency.csv, read once per process (the tables are re-rendered after every entry)."""
    if not PUBLISHED.is_file():
        return ()
    with open(PUBLISHED) as f:
        return tuple(csv.DictReader(f))


def published_rows() -> list[dict]:
    """LRA Table 2 (text, 1K-4K, absolute steps/s and GB)."""
    return [r for r in _published() if r.get("task") == "text" and r.get("seq_len")
            and r["source"].startswith("LRA paper Table 2")]


def published_relative_4k() -> list[dict]:
    """Later papers' Table-2-protocol figures at 4K, relative to their own Transformer (Mega paper Table 2 with
    Mega and Mega-chunk, S4 paper Table 3)."""
    return [r for r in _published() if r.get("seq_len") == "4096" and r.get("speed_rel")
            and not r["source"].startswith("LRA paper Table 2")]


def published_relative(model: str, L: int) -> tuple[str, str, str] | None:
    """(source, speed x, memory x) of a published model on the Text task at length ``L``, relative to the same
    paper's Transformer (the comparison that carries across hardware): the ratio the paper prints where it prints
    one, else computed from its steps/s and GB. The LRA paper is preferred, then the Mega paper; None if neither."""
    rows = [r for r in _published() if r.get("task") == "text" and r.get("seq_len") == str(L)]
    for source, reference in TABLE2_SOURCES.items():
        ours = [r for r in rows if r["source"].startswith(source)]
        row = next((r for r in ours if r["model"] == model), None)
        if row is None:
            continue
        ref = next(r for r in ours if r["model"] == reference)
        speed = row["speed_rel"] or f"{float(row['steps_per_s']) / float(ref['steps_per_s']):.2f}"
        mem = row["mem_rel"] or f"{float(row['mem_gb']) / float(ref['mem_gb']):.2f}"
        return source.replace(" paper", ""), speed, mem
    return None


def published_as(entry: str) -> str | None:
    """The published model an entry (or the HF peer of an entry) implements."""
    ours = next((e for e, peer in HF_PEER.items() if peer == entry), entry)
    return PUBLISHED_AS.get(ours)


def markdown_table(results: list[dict], lengths: list[int], baseline: str, device_name: str,
                   compiled: bool = False) -> str:
    def cell(r, key, rel_key):
        if r is None:
            return "—"
        if r.get("status") == "OOM":
            return "OOM"
        if r.get("status") != "ok" or r.get(key) is None:
            return "—"
        rel = r.get(rel_key)
        # three significant digits, trailing zeros kept (6.00, 21.1, 0.0123): CPU bench peaks are MiB-sized
        val = f"{r[key]:.2f}" if key == "steps_per_s" else f"{r[key] / 2**30:#.3g}".rstrip(".")
        return f"{val} ({rel:.2f}x)" if rel is not None else val

    by = {(r["entry"], r["length"]): r for r in results}
    entries = list(dict.fromkeys(r["entry"] for r in results))
    head = "| entry | " + " | ".join(f"steps/s {L}" for L in lengths) + " | " + \
           " | ".join(f"peak GiB {L}" for L in lengths) + " |"
    mode = "torch.compile" if compiled else "eager"
    lines = [f"Ours on {device_name}, {mode} (batch from the bench config; relative to `{baseline}` in brackets):", "",
             head, "|" + "---|" * (1 + 2 * len(lengths))]
    for e in entries:
        row = [cell(by.get((e, L)), "steps_per_s", "speed_rel") for L in lengths]
        row += [cell(by.get((e, L)), "peak_bytes", "mem_rel") for L in lengths]
        lines.append(f"| {e} | " + " | ".join(row) + " |")
    lines += ["", f"Ours beside the published figures for the same model, relative to the softmax Transformer at the "
              f"same length (ours: to `{baseline}` on {device_name}; published: to the paper's own Transformer, the "
              "ratio it prints, else computed from its steps/s and GB). Cells: ours / published:", "",
              "| entry | published as | source | " + " | ".join(f"speed x {L}" for L in lengths) + " | " +
              " | ".join(f"memory x {L}" for L in lengths) + " |", "|" + "---|" * (3 + 2 * len(lengths))]
    for e in entries:
        model = published_as(e)
        pub = {L: published_relative(model, L) if model else None for L in lengths}
        sources = ", ".join(dict.fromkeys(p[0] for p in pub.values() if p)) or "—"

        def pair(L, rel_key, i):
            r = by.get((e, L)) or {}
            ours = "OOM" if r.get("status") == "OOM" else "—" if r.get(rel_key) is None else f"{r[rel_key]:.2f}"
            return f"{ours} / {pub[L][i] if pub[L] else '—'}"
        lines.append(f"| {e} | {model or '—'} | {sources} | " + " | ".join(pair(L, "speed_rel", 1) for L in lengths) +
                     " | " + " | ".join(pair(L, "mem_rel", 2) for L in lengths) + " |")
    lo, hi = min(lengths), max(lengths)
    if lo != hi:
        lines += ["", f"Cost growth from {lo} to {hi} tokens (step time ratio, peak memory ratio; linear cost = "
                  f"{hi / lo:.1f}x):", "", "| entry | time x | memory x |", "|---|---|---|"]
        for e in entries:
            a, b = by.get((e, lo)), by.get((e, hi))
            ok = a and b and a.get("status") == "ok" and b.get("status") == "ok"
            t = f"{b['step_s'] / a['step_s']:.2f}" if ok else "—"
            m = f"{b['peak_bytes'] / a['peak_bytes']:.2f}" if ok and a.get("peak_bytes") and b.get("peak_bytes") else "—"
            lines.append(f"| {e} | {t} | {m} |")
    mfu = [e for e in entries if any((by.get((e, L)) or {}).get("mfu") is not None for L in lengths)]
    if mfu:
        lines += ["", "Model FLOPs utilisation (6·params·tokens + 12·layers·B·L²·d per step over the device's dense "
                  "bf16 peak):", "", "| entry | " + " | ".join(f"MFU {L}" for L in lengths) + " |",
                  "|" + "---|" * (1 + len(lengths))]
        for e in mfu:
            vals = [(by.get((e, L)) or {}).get("mfu") for L in lengths]
            lines.append(f"| {e} | " + " | ".join("—" if v is None else f"{100 * v:.1f}%" for v in vals) + " |")
    peers = [e for e in entries if HF_PEER.get(e) in entries]
    if peers:
        lines += ["", "Ours vs the HF implementation of the same model (speed ratio = our steps/s / HF steps/s; "
                  "memory ratio = our peak / HF peak; > 1 speed and < 1 memory favour ours):", "",
                  "| entry | HF peer | " + " | ".join(f"speed x {L}" for L in lengths) + " | " +
                  " | ".join(f"memory x {L}" for L in lengths) + " |", "|" + "---|" * (2 + 2 * len(lengths))]
        for e in peers:
            def ratio(L, key):
                r = by.get((e, L))
                v = r.get(key) if r else None
                return "—" if v is None else f"{v:.2f}"
            lines.append(f"| {e} | {HF_PEER[e]} | " + " | ".join(ratio(L, "vs_hf_speed") for L in lengths) + " | " +
                         " | ".join(ratio(L, "vs_hf_mem") for L in lengths) + " |")
    pub = published_rows()
    if pub:
        lines += ["", "Published (LRA Table 2, TPU v3, batch 32; steps/s, memory in GB per device as printed, where our "
                  "tables use GiB = 2^30 bytes):", "",
                  "| model | " + " | ".join(f"steps/s {L}" for L in (1024, 2048, 3072, 4096)) + " | " +
                  " | ".join(f"GB {L}" for L in (1024, 2048, 3072, 4096)) + " |",
                  "|" + "---|" * 9]
        models = list(dict.fromkeys(r["model"] for r in pub))
        idx = {(r["model"], int(r["seq_len"])): r for r in pub}
        for m in models:
            def fmt(m, L, key, rel):
                r = idx.get((m, L), {})
                v = r.get(key) or ""
                return (f"{v} ({r[rel]}x)" if r.get(rel) else v) or "—"
            sp = [fmt(m, L, "steps_per_s", "speed_rel") for L in (1024, 2048, 3072, 4096)]
            mem = [fmt(m, L, "mem_gb", "mem_rel") for L in (1024, 2048, 3072, 4096)]
            lines.append(f"| {m} | " + " | ".join(sp) + " | " + " | ".join(mem) + " |")
    rel = published_relative_4k()
    if rel:
        lines += ["", "Published at 4K relative to each paper's own Transformer (speed x, memory x):", "",
                  "| source | model | hardware | speed x | memory x |", "|---|---|---|---|---|"]
        for r in rel:
            lines.append(f"| {r['source'].split(' (')[0]} | {r['model']} | {r.get('hardware') or '—'} | "
                         f"{r['speed_rel']} | {r.get('mem_rel') or '—'} |")
    return "\n".join(lines) + "\n"


def plot_speed_memory(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for e in dict.fromkeys(r["entry"] for r in results):
        rs = [r for r in results if r["entry"] == e and r["status"] == "ok"]
        if not rs:
            continue
        axes[0].plot([r["length"] for r in rs], [r["steps_per_s"] for r in rs], marker="o", label=e)
        if rs[0]["peak_bytes"] is not None:
            axes[1].plot([r["length"] for r in rs], [r["peak_bytes"] / 2**30 for r in rs], marker="o", label=e)
    axes[0].set(xlabel="sequence length", ylabel="training steps / s", yscale="log", title="speed")
    axes[1].set(xlabel="sequence length", ylabel="peak memory (GiB)", yscale="log", title="memory")
    if axes[0].lines:  # a run where nothing measured (all OOM / skipped) still gets its (empty) plot
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def _relate(results: list[dict], baseline: str) -> None:
    """Speed and memory relative to the baseline entry and to each entry's HF peer (same device and length)."""
    base = {r["length"]: r for r in results if r["entry"] == baseline and r["status"] == "ok"}
    by_key = {(r["entry"], r["length"]): r for r in results}
    for r in results:
        b = base.get(r["length"])
        if r["status"] == "ok" and b:
            r["speed_rel"] = r["steps_per_s"] / b["steps_per_s"]
            r["mem_rel"] = (r["peak_bytes"] / b["peak_bytes"]) if r["peak_bytes"] and b["peak_bytes"] else None
    for r in results:  # ours against the HF implementation of the same model, same device and length
        peer = by_key.get((HF_PEER.get(r["entry"]), r["length"]))
        if r["status"] == "ok" and peer and peer["status"] == "ok":
            r["vs_hf_speed"] = r["steps_per_s"] / peer["steps_per_s"]
            r["vs_hf_mem"] = (r["peak_bytes"] / peer["peak_bytes"]) if r["peak_bytes"] and peer["peak_bytes"] else None


def add_mfu(r: dict, flops: int | None, device_name: str) -> None:
    """FLOPs per step and MFU (over the device's dense bf16 peak) of a measured GPU row, when the FLOPs are counted."""
    if flops is None or r["status"] != "ok" or device_name == "cpu":
        return
    peak = next((v for k, v in PEAK_FLOPS.items() if k in device_name), None)
    r["flops_per_step"] = flops
    r["mfu"] = flops * r["steps_per_s"] / peak if peak else None


def render_markdown(payload: dict, json_path: Path) -> str:
    """The ``<tag>.md`` of a bench payload: a header naming its JSON and the command that re-renders it, the
    incomplete-run note if any, then :func:`markdown_table`."""
    p = json_path.resolve()
    shown = p.relative_to(ROOT) if p.is_relative_to(ROOT) else p
    c = payload["config"]
    md = (f"_Rendered from `{p.name}` by lra.bench; re-render with `python -m lra.bench --render {shown}` (current "
          "tables and FLOP count, no device needed)._\n\n")
    if payload.get("pending_entries"):
        md += f"**Incomplete run**: not yet measured: {', '.join(payload['pending_entries'])}.\n\n"
    return md + markdown_table(payload["results"], list(c["lengths"]), c["baseline"], payload["device"],
                               bool(c.get("compile")))


def render(json_path: Path) -> Path:
    """Re-render ``<tag>.md`` beside a bench JSON with the current tables, MFU recounted with the current FLOP
    count of :func:`build_entry`; the JSON itself is not touched."""
    payload = json.loads(json_path.read_text())
    bench = OmegaConf.create(payload["config"])
    for r in payload["results"]:
        if r["entry"] in MFU_ENTRIES:
            add_mfu(r, build_entry(r["entry"], r["length"], bench)[1], payload["device"])
    md_path = json_path.with_suffix(".md")
    write_atomic(md_path, render_markdown(payload, json_path))
    return md_path


def _write(out: Path, tag: str, bench: DictConfig, device_name: str, dtype, results: list[dict],
           pending: list[str]) -> dict:
    """Write ``<tag>.json`` and ``<tag>.md`` (each written, then renamed). Called after every entry, so a run cut
    short (a device call's time limit) keeps what it measured; ``pending`` lists the entries not run yet."""
    payload = {"protocol": "LRA Table 2 (text, fixed model size)", "config": OmegaConf.to_container(bench, resolve=True),
               "device": device_name, "dtype": str(dtype), "versions": versions(), "git": git_state(),
               "complete": not pending, "pending_entries": pending, "results": results}
    write_atomic(out / f"{tag}.json", json.dumps(payload, indent=2, default=str))
    write_atomic(out / f"{tag}.md", render_markdown(payload, out / f"{tag}.json"))
    return payload


def run_bench(cfg: DictConfig) -> dict:
    bench = cfg.bench
    entries = bench_entries(bench)  # before any measurement: an unknown name fails here
    want = bench.device
    device = torch.device("cuda" if (want == "auto" and torch.cuda.is_available()) or want == "cuda" else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        bench.dtype if bench.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = Path(bench.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = bench.tag or f"{device_name.replace(' ', '_')}_{time.strftime('%Y%m%d-%H%M%S')}"
    results = []
    from tqdm import tqdm
    for i, entry in enumerate(tqdm(entries, desc="bench entries")):
        for L in bench.lengths:
            r = {"entry": entry, "length": int(L), "batch_size": int(bench.batch_size), "dtype": str(dtype),
                 "device": device_name, "compiled": bool(bench.compile)}
            try:
                model, flops = build_entry(entry, int(L), bench)
                r["params"] = sum(p.numel() for p in model.parameters())
                r.update(time_entry(model, int(L), bench, device, dtype), status="ok")
                add_mfu(r, flops, device_name)
            except ImportError as e:
                r.update(status="skipped", reason=str(e))
            except Exception as e:  # recorded, reported at the end, and the exit status says so (OOM excepted)
                r.update(status="OOM" if is_oom(e) else "error", reason=f"{type(e).__name__}: {str(e)[:500]}")
            finally:
                model = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            log.info("%s L=%d: %s", entry, L, {k: v for k, v in r.items() if k != "times"})
            results.append(r)
        _relate(results, bench.baseline)
        payload = _write(out, tag, bench, device_name, dtype, results, entries[i + 1:])
    if not entries:
        payload = _write(out, tag, bench, device_name, dtype, results, [])
    plot_speed_memory(results, out / f"{tag}_speed_memory.png")
    print((out / f"{tag}.md").read_text())
    from lra.bench_plots import draw_fig3
    from lra.results import load_records
    fig3 = draw_fig3(payload, load_records(Path(bench.runs_dir)), "text", max(bench.lengths), out / f"{tag}_fig3_text.png")
    print(f"Figure 3: {fig3['figure']}" if fig3["figure"] else f"{fig3['reason']}: Figure 3 not drawn")
    for r in results:
        if r["status"] in ("error", "skipped"):
            (log.error if r["status"] == "error" else log.warning)("%s L=%d %s: %s", r["entry"], r["length"],
                                                                   r["status"], r["reason"])
    print(json.dumps({"bench": str(out / f"{tag}.json"), "errors": sum(r["status"] == "error" for r in results),
                      "skipped": sum(r["status"] == "skipped" for r in results)}))
    return payload


@hydra.main(config_path="../conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    payload = run_bench(cfg)
    if any(r["status"] == "error" for r in payload["results"]):
        raise SystemExit(1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--render"]:  # python -m lra.bench --render results/bench/<tag>.json (no Hydra)
        if len(sys.argv) != 3:
            raise SystemExit("usage: python -m lra.bench --render results/bench/<tag>.json")
        print(render(Path(sys.argv[2])))
    else:
        main()
