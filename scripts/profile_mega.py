"""Where a MEGA training step spends its time: EMA (FFT convolution) vs gated attention vs the rest.

    python scripts/profile_mega.py [--device cpu|cuda] [--lengths 1024 2048 3072 4096] [--batch 32]
                                   [--chunk-size -1 128] [--dtype fp32|bf16] [--repeats 10] [--warmup 3]
                                   [--adamw] [--profile] [--no-alternatives] [--alt-chunk 128]
                                   [--seq-scan-max-length 4096] [--threads N] [--clock wall|cpu] [--json PATH]

    python scripts/profile_mega.py --device cuda --chunk-size -1 128 --profile --json mega_profile_gpu.json
    python scripts/profile_mega.py --device cpu --batch 2 --lengths 1024 2048 --threads 1 --clock cpu

Model and data: the Table-2 efficiency protocol of ``lra.bench`` (``conf/bench.yaml``): ``conf/model/mega.yaml``
with the fixed Table-2 size ``bench.size.mega`` (D 256, 4 layers; h = FFN 160, z 64, N 16, EMA truncation
1024, softmax, post-norm layernorm from the model defaults), the Text task spec (vocab 257, 2 classes), random
byte tokens, no padding, train mode (dropout on). Defaults: ``bench.batch_size`` (32), ``bench.lengths``
(1K/2K/3K/4K), bf16 autocast on CUDA and fp32 on CPU (as ``bench.dtype: auto``). ``--chunk-size`` overrides
``model.chunk_size`` and takes several values (-1 = full attention, the bench entry ``mega/none``; 128 = Mega-chunk).

One step = forward + cross-entropy + backward (+ AdamW with ``--adamw``, as ``lra.bench`` times it).

Method (isolated timing): the inputs of layer 0's EMA (``MultiHeadEMA.forward(x, mask)``: kernel generation,
pad masking, FFT convolution, SiLU(y + omega x)) and of its gated attention
(``MovingAverageGatedAttention.attend(q, k, v, mask)``: relative bias, scores, mask, softmax, AV, full or
chunked; the projections and gates around it count as "other") are captured during a step, and each op is
timed alone on those inputs: forward + backward with a fixed random output gradient, input and parameter
gradients on, under the same autocast. The EMA's kernel generation (``MultiHeadEMA.kernel``) is also timed
alone. Per step: EMA and attention = num_layers x layer 0 (all layers have the same shapes); other = step -
EMA - attention. Every round times step, EMA, kernel and attention once, interleaved, so that load from other
processes hits all of them alike; the median over ``--repeats`` rounds after ``--warmup`` rounds is reported.
CUDA: ``torch.cuda.synchronize`` before and after every timed call, wall clock. On a shared CPU,
``--threads 1 --clock cpu`` times process CPU time instead, which other processes cannot inflate.

``--profile`` cross-checks with ``torch.profiler``: ``record_function`` ranges ``mega::ema`` and
``mega::attention`` around every layer's EMA and ``attend``; backward ops are attributed to the range of the
forward op that created their autograd node (autograd sequence numbers). Shares of profiled time: CPU time of
top-level ops on CPU, kernel time on CUDA; profiler overhead inflates small ops, so the isolated timing is
the primary figure.

EMA alternatives (measurement only, not used by the model): x -> SiLU(EMA(x) + omega x) for layer 0's EMA at
the step's shape, fp32, forward + backward:

* ``fft``: ``MultiHeadEMA.forward`` as the model runs it;
* ``fft-2n``: fairseq's formulation: kernel from a (kd, N, K) exp-Vandermonde tensor contracted with gamma,
  rFFT size 2(L+K-1) (bidirectional; K = kernel taps);
* ``fft-5smooth``: the same kernel, rFFT at the smallest 5-smooth size >= L+2K-2 (the L outputs kept are
  free of circular wrap-around from that size on); the FFT variants' error is against ``fft``;
* ``scan-chunk``: an SSD-style chunked scan in plain PyTorch (intra-chunk Toeplitz matmul over chunks of
  ``--alt-chunk`` steps, plus the carried state through an (L/T) x (L/T) decay matrix);
* ``scan-seq``: the recurrence h_t = q h_{t-1} + p beta x_t stepped over L in Python (an unfused scan).

The scans compute the untruncated EMA (``truncation: null``): dropping taps beyond K needs h_{t-K} as well, which
a plain scan does not keep. Their error is therefore against the FFT path at K = L; at L <= K both equal ``fft``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lra.atomic import write_atomic  # noqa: E402
from lra.bench import model_cfg  # noqa: E402
from lra.records import versions  # noqa: E402
from lra.tasks.base import TaskSpec  # noqa: E402
from models.mega import MultiHeadEMA, fft_size  # noqa: E402
from models.registry import build_model  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
RANGES = ("mega::ema", "mega::attention")


# ----------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = clock()
    fn()
    sync(device)
    return clock() - t0


def interleaved_medians(fns: dict, device, warmup: int, repeats: int) -> dict:
    """{name: fn} -> {name: median seconds}; one call of each per round, in order, after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            timed(fn, device)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def fwd_bwd(fn, inputs: tuple, params: list, amp) -> callable:
    """A closure running fn(*inputs) forward + backward with a fixed random output gradient.

    Float inputs get requires_grad (they do inside the model); parameter and input grads are cleared first
    (the step clears them with set_to_none too), so each call does the same work as inside a step.
    """
    inputs = tuple(t.detach().requires_grad_(t.is_floating_point()) if torch.is_tensor(t) else t for t in inputs)
    with amp():
        out = fn(*inputs)
    grad = torch.randn_like(out)

    def run():
        for t in list(inputs) + params:
            if torch.is_tensor(t):
                t.grad = None
        with amp():
            y = fn(*inputs)
        y.backward(grad)
    return run


# ----------------------------------------------------------------------------------------- model
def build(L: int, chunk: int, device):
    bench = OmegaConf.load(CONF / "bench.yaml").bench
    size = OmegaConf.to_container(bench.size, resolve=True)
    mc = model_cfg("mega", size)
    mc["chunk_size"] = chunk
    spec = TaskSpec(name="text", seq_len=L, vocab_size=257, num_classes=2, pad_id=0)
    return build_model(mc, {"name": "none"}, spec).to(device).train(), mc


def make_batch(B: int, L: int, device) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(1, 257, (B, L), generator=g).to(device)
    return {"input_ids": ids, "mask": torch.ones_like(ids, dtype=torch.bool),
            "label": torch.randint(0, 2, (B,), generator=g).to(device)}


def make_step(model, batch, amp, opt):
    def step():
        with amp():
            logits = model(batch)
        loss = F.cross_entropy(logits.float(), batch["label"])
        model.zero_grad(set_to_none=True)
        loss.backward()
        if opt is not None:
            opt.step()
    return step


def capture_layer0(model, step) -> dict:
    """Run one step and keep the inputs of layer 0's EMA and attend."""
    mega = model.encoder.layers[0].mega
    seen = {}
    hook = mega.ema.register_forward_pre_hook(lambda mod, args: seen.setdefault("ema", args))
    attend = mega.attend

    def capture(q, k, v, mask):
        seen.setdefault("attn", (q, k, v, mask))
        return attend(q, k, v, mask)
    mega.attend = capture
    try:
        step()
    finally:
        hook.remove()
        del mega.attend  # back to the class method
    return seen


# ----------------------------------------------------------------------------------------- profiler
def profile_shares(model, step, device) -> dict:
    """torch.profiler cross-check: shares of profiled time in mega::ema / mega::attention (fwd + bwd)."""
    from torch.autograd import DeviceType
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    handles, patched = [], []
    for layer in model.encoder.layers:
        mega = getattr(layer, "mega", None)
        if mega is None:
            continue
        ctx = {}

        def pre(mod, args, ctx=ctx):
            ctx["rf"] = record_function("mega::ema")
            ctx["rf"].__enter__()

        def post(mod, args, out, ctx=ctx):
            ctx.pop("rf").__exit__(None, None, None)
        handles += [mega.ema.register_forward_pre_hook(pre), mega.ema.register_forward_hook(post)]
        attend = mega.attend

        def wrapped(q, k, v, mask, attend=attend):
            with record_function("mega::attention"):
                return attend(q, k, v, mask)
        mega.attend = wrapped
        patched.append(mega)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    try:
        step()
        sync(device)
        with profile(activities=activities) as prof:
            step()
            sync(device)
    finally:
        for h in handles:
            h.remove()
        for mega in patched:
            del mega.attend
    events = [e for e in prof.events() if e.device_type == DeviceType.CPU]  # kernels count via their CPU op
    cost = (lambda e: e.device_time_total) if device.type == "cuda" else (lambda e: e.cpu_time_total)
    ranges = [e for e in events if e.name in RANGES]
    seq_label = {}
    for e in events:  # forward ops inside a range -> that range's label, by autograd sequence number
        if e.name in RANGES or e.sequence_nr is None or e.sequence_nr < 0:
            continue
        for r in ranges:
            if (r.thread == e.thread and r.time_range.start <= e.time_range.start
                    and e.time_range.end <= r.time_range.end):
                seq_label[e.sequence_nr] = r.name
                break
    out = {name: 0.0 for name in RANGES}
    for r in ranges:
        out[r.name] += cost(r)
    matched = 0
    for e in events:
        if e.cpu_parent is None and e.name.startswith("autograd::engine::evaluate_function:"):
            seqs = [c.sequence_nr for c in e.cpu_children if c.sequence_nr is not None and c.sequence_nr >= 0]
            label = next((seq_label[s] for s in seqs if s in seq_label), None)
            if label is not None:
                out[label] += cost(e)
                matched += 1
    total = sum(cost(e) for e in events if e.cpu_parent is None)
    return {"total_us": total, "ema_us": out["mega::ema"], "attn_us": out["mega::attention"],
            "ema_pct": 100 * out["mega::ema"] / total, "attn_pct": 100 * out["mega::attention"] / total,
            "backward_nodes_matched": matched, "basis": "CUDA kernel time" if device.type == "cuda" else "CPU time"}


# ----------------------------------------------------------------------------------------- EMA variants
def _ema_inputs(ema: MultiHeadEMA, x, mask):
    """-> u2 (B, kd, L) fp32: the masked input, time-reversed for the backward channels when bidirectional."""
    u = x.float() * mask[..., None].float()
    u = rearrange(u, "b l d -> b d l")
    return torch.cat([u, u.flip(-1)], dim=1) if ema.bidirectional else u


def _ema_output(ema: MultiHeadEMA, x, y2):
    """y2 (B, kd, L) per-direction EMA -> SiLU(y + omega x) (B, L, D), as MultiHeadEMA.forward."""
    D = ema.embed_dim
    y = y2[:, :D] + y2[:, D:].flip(-1) if ema.bidirectional else y2
    return F.silu(rearrange(y, "b d l -> b l d") + x * ema.omega)


def _ema_coeffs(ema: MultiHeadEMA):
    """(kd, N) each: log q, p beta, scale gamma."""
    p = torch.sigmoid(ema.delta).squeeze(-1)
    q = 1.0 - p * torch.sigmoid(ema.alpha).squeeze(-1)
    return torch.log(q), p * ema.beta.squeeze(-1), ema.gamma * ema.scale


def kernel_vandermonde(ema: MultiHeadEMA, K: int) -> torch.Tensor:
    """fairseq's kernel generation: (kd, N, K) exp-Vandermonde q^l, times p beta, contracted with gamma."""
    p = torch.sigmoid(ema.delta)  # (kd, N, 1)
    q = 1.0 - p * torch.sigmoid(ema.alpha)
    vander = torch.arange(K, device=p.device, dtype=p.dtype).view(1, 1, K) * torch.log(q)
    return torch.einsum("dnl,dn->dl", (p * ema.beta) * torch.exp(vander), ema.gamma * ema.scale)  # (kd, K)


def ema_fft_reference(ema: MultiHeadEMA, x, mask, fast_size: bool):
    """fairseq's FFT-EMA (exp-Vandermonde kernel); rFFT size 2(L+K-1) as fairseq, or, with ``fast_size``, the
    smallest 5-smooth size >= L+2K-2 (bidirectional) / L+K-1 (causal), from which the kept outputs are exact."""
    B, L, D = x.shape
    u = rearrange(x.float() * mask[..., None].float(), "b l d -> b d l")
    K = ema.kernel_length(L)
    k = kernel_vandermonde(ema, K)  # (kd, K)
    if ema.bidirectional:
        k_fwd, k_bwd = k.split(D, dim=0)
        k = F.pad(k_fwd, (K - 1, 0)) + F.pad(k_bwd.flip(-1), (0, K - 1))  # (D, 2K-1), lag 0 at K-1
        u = F.pad(u, (K - 1, 0))  # (B, D, L+K-1)
        start = 2 * K - 2
    else:
        start = 0
    n = reference_fft_size(ema, L, fast_size)
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., start:start + L]
    return F.silu(rearrange(y, "b d l -> b l d") + x * ema.omega)


def reference_fft_size(ema: MultiHeadEMA, L: int, fast_size: bool) -> int:
    K = ema.kernel_length(L)
    if not fast_size:
        return 2 * (L + K - 1) if ema.bidirectional else 2 * L
    return fft_size(L + 2 * K - 2 if ema.bidirectional else L + K - 1)


def ema_scan_chunked(ema: MultiHeadEMA, x, mask, T: int):
    """Untruncated EMA by an SSD-style chunked scan: within a chunk of T steps a Toeplitz matmul; across
    chunks the state (B, kd, N) at each chunk end, carried by the decay matrix q^(T (c - 1 - e))."""
    u2 = _ema_inputs(ema, x, mask)  # (B, kd, L)
    B, kd, L = u2.shape
    Lp = -(-L // T) * T
    uc = F.pad(u2, (0, Lp - L)).view(B, kd, Lp // T, T)  # (B, kd, C, T)
    C = Lp // T
    logq, w, c = _ema_coeffs(ema)  # (kd, N)
    t = torch.arange(T, device=x.device, dtype=torch.float32)
    qpow = torch.exp(logq[..., None] * t)  # (kd, N, T): q^t
    taps = torch.einsum("dn,dnt->dt", c * w, qpow)  # (kd, T)
    lag = torch.arange(T, device=x.device)
    lag = lag[:, None] - lag[None, :]  # (T, T): t - s
    toeplitz = taps[:, lag.clamp_min(0)] * (lag >= 0)  # (kd, T, T)
    y = torch.einsum("dts,bdcs->bdct", toeplitz, uc)  # intra-chunk
    end = torch.einsum("dns,bdcs->bdcn", w[..., None] * qpow.flip(-1), uc)  # (B, kd, C, N): chunk-end states
    ci = torch.arange(C, device=x.device)
    gap = ci[:, None] - ci[None, :] - 1  # (C, C): chunk c reads chunk e's end state after c - 1 - e chunks
    decay = torch.exp(logq[..., None, None] * (T * gap.clamp_min(0))) * (gap >= 0)  # (kd, N, C, C)
    state_in = torch.einsum("dnce,bden->bdcn", decay, end)  # state entering each chunk
    y = y + torch.einsum("dnt,bdcn->bdct", c[..., None] * qpow * logq.exp()[..., None], state_in)
    return _ema_output(ema, x, y.reshape(B, kd, Lp)[..., :L])


def ema_scan_seq(ema: MultiHeadEMA, x, mask):
    """Untruncated EMA by the recurrence stepped over time in Python."""
    u2 = _ema_inputs(ema, x, mask)  # (B, kd, L)
    logq, w, c = _ema_coeffs(ema)
    q = logq.exp()
    h = u2.new_zeros(u2.shape[0], u2.shape[1], q.shape[-1])  # (B, kd, N)
    ys = []
    for t in range(u2.shape[-1]):
        h = q * h + w * u2[:, :, t, None]
        ys.append((h * c).sum(-1))
    return _ema_output(ema, x, torch.stack(ys, dim=-1))


def ema_alternatives(ema: MultiHeadEMA, x, mask, device, args) -> list[dict]:
    x = x.detach().float()
    L = x.shape[1]
    params = list(ema.parameters())
    no_amp = lambda: torch.autocast(device.type, enabled=False)  # noqa: E731
    variants = {"fft": lambda x, m: ema(x, m),
                "fft-2n": lambda x, m: ema_fft_reference(ema, x, m, fast_size=False),
                "fft-5smooth": lambda x, m: ema_fft_reference(ema, x, m, fast_size=True),
                f"scan-chunk{args.alt_chunk}": lambda x, m: ema_scan_chunked(ema, x, m, args.alt_chunk)}
    if L <= args.seq_scan_max_length:
        variants["scan-seq"] = lambda x, m: ema_scan_seq(ema, x, m)
    with torch.no_grad():  # errors: FFT variants against the model's EMA; scans against it at K = L
        ref = ema(x, mask)
        trunc, ema.truncation = ema.truncation, None
        ref_full = ema(x, mask)
        ema.truncation = trunc
        err = {}
        for name, fn in variants.items():
            r = ref if name.startswith("fft") else ref_full
            err[name] = ((fn(x, mask) - r).abs().max() / r.abs().max()).item()
    runs = {name: fwd_bwd(fn, (x, mask), params, no_amp) for name, fn in variants.items()}
    # the sequential scan is slow: fewer rounds for it
    med = interleaved_medians({k: v for k, v in runs.items() if k != "scan-seq"}, device, args.warmup, args.repeats)
    if "scan-seq" in runs:
        med.update(interleaved_medians({"scan-seq": runs["scan-seq"]}, device, 1, max(1, min(3, args.repeats))))
    rows = []
    for name in variants:
        peak = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            runs[name]()
            sync(device)
            peak = torch.cuda.max_memory_allocated(device)
        # rFFT length; fft runs at the model's (models.mega.fft_size), the same as fft-5smooth
        size = reference_fft_size(ema, L, name != "fft-2n") if name.startswith("fft") else None
        rows.append({"length": L, "variant": name, "ms": 1e3 * med[name], "vs_fft": med[name] / med["fft"],
                     "max_rel_err": err[name], "peak_bytes": peak, "fft_size": size})
    return rows


# ----------------------------------------------------------------------------------------- main
def profile_length(L: int, chunk: int, args, device, amp_dtype) -> tuple[dict, list | None]:
    model, mc = build(L, chunk, device)
    batch = make_batch(args.batch, L, device)
    amp = lambda: torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)  # noqa: E731
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if args.adamw else None
    step = make_step(model, batch, amp, opt)
    seen = capture_layer0(model, step)
    mega = model.encoder.layers[0].mega
    ema_params = list(mega.ema.parameters())
    fns = {
        "step": step,
        "ema": fwd_bwd(mega.ema, seen["ema"], ema_params, amp),
        "kernel": fwd_bwd(lambda: mega.ema.kernel(L), (), ema_params, amp),
        "attn": fwd_bwd(mega.attend, seen["attn"], list(mega.rel_pos_bias.parameters()), amp),
    }
    med = interleaved_medians(fns, device, args.warmup, args.repeats)
    n = mc["num_layers"]
    step_s, ema_s, ker_s, attn_s = med["step"], n * med["ema"], n * med["kernel"], n * med["attn"]
    row = {"chunk_size": chunk, "length": L, "batch": args.batch, "num_layers": n,
           "step_ms": 1e3 * step_s, "ema_ms": 1e3 * ema_s, "ema_pct": 100 * ema_s / step_s,
           "ema_kernel_ms": 1e3 * ker_s, "ema_kernel_pct": 100 * ker_s / step_s,
           "attn_ms": 1e3 * attn_s, "attn_pct": 100 * attn_s / step_s,
           "other_pct": 100 * (step_s - ema_s - attn_s) / step_s}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync(device)
        row["peak_bytes"] = torch.cuda.max_memory_allocated(device)
    if args.profile:
        row["profiler"] = profile_shares(model, step, device)
    alts = None
    if not args.no_alternatives and chunk == args.chunk_size[0]:  # the EMA does not depend on the chunking
        alts = ema_alternatives(mega.ema, seen["ema"][0], seen["ema"][1], device, args)
    del model, batch, seen, fns, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row, alts


def main() -> None:
    bench = OmegaConf.load(CONF / "bench.yaml").bench
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--lengths", type=int, nargs="+", default=list(bench.lengths))
    ap.add_argument("--batch", type=int, default=int(bench.batch_size))
    ap.add_argument("--chunk-size", type=int, nargs="+", default=[-1],
                    help="model.chunk_size values: -1 full attention (the bench), 128 Mega-chunk")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default=None,
                    help="bf16 = autocast (EMA FFT stays fp32 inside); default bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--repeats", type=int, default=int(bench.repeats))
    ap.add_argument("--warmup", type=int, default=int(bench.warmup))
    ap.add_argument("--adamw", action="store_true", help="include the AdamW step in the step time")
    ap.add_argument("--profile", action="store_true", help="also the torch.profiler cross-check")
    ap.add_argument("--no-alternatives", action="store_true", help="skip the EMA alternatives")
    ap.add_argument("--alt-chunk", type=int, default=128, help="chunk T of the chunked-scan alternative")
    ap.add_argument("--seq-scan-max-length", type=int, default=4096,
                    help="time the Python sequential scan only up to this length")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--clock", choices=tuple(CLOCK), default="wall",
                    help="wall (perf_counter) or cpu (process CPU time, CPU only: immune to preemption by "
                         "other processes; sums over threads, so use it with --threads 1)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    if args.clock == "cpu" and args.device == "cuda":
        raise SystemExit("--clock cpu measures host CPU time; use --clock wall on CUDA")
    global clock
    clock = CLOCK[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    amp_dtype = torch.bfloat16 if dtype == "bf16" else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as lra.bench
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, dtype {dtype}, batch {args.batch}, threads {torch.get_num_threads()}, "
          f"{args.clock} clock, repeats {args.repeats} (median) after {args.warmup} warm-up, step = fwd + bwd"
          f"{' + AdamW' if args.adamw else ''}; load average {os.getloadavg()[0]:.2f}", flush=True)
    rows, alts = [], []
    for chunk in args.chunk_size:
        for L in args.lengths:
            try:
                row, alt = profile_length(L, chunk, args, device, amp_dtype)
            except torch.OutOfMemoryError:
                row, alt = {"chunk_size": chunk, "length": L, "status": "OOM"}, None
                torch.cuda.empty_cache()
            rows.append(row)
            alts += alt or []
            print(f"  done chunk {chunk} L {L}: " + (row.get("status") or f"step {row['step_ms']:.1f} ms, "
                  f"EMA {row['ema_pct']:.1f}%, attention {row['attn_pct']:.1f}%"), flush=True)

    print("\nPer training step (EMA and attention = num_layers x layer 0 timed alone, fwd + bwd; "
          "other = step - EMA - attention):")
    print(f"{'chunk':>6} {'L':>6} {'step ms':>9} {'EMA ms':>9} {'EMA %':>6} {'(kernel gen %)':>15} "
          f"{'attn ms':>9} {'attn %':>7} {'other %':>8}" + ("  profiler EMA % / attn %" if args.profile else ""))
    for r in rows:
        if r.get("status"):
            print(f"{r['chunk_size']:>6} {r['length']:>6} {r['status']:>9}")
            continue
        line = (f"{r['chunk_size']:>6} {r['length']:>6} {r['step_ms']:>9.1f} {r['ema_ms']:>9.1f} {r['ema_pct']:>6.1f} "
                f"{r['ema_kernel_pct']:>15.1f} {r['attn_ms']:>9.1f} {r['attn_pct']:>7.1f} {r['other_pct']:>8.1f}")
        if "profiler" in r:
            line += f"  {r['profiler']['ema_pct']:>11.1f} / {r['profiler']['attn_pct']:.1f}"
        print(line)
    if alts:
        print("\nEMA alternatives, one layer, fp32, fwd + bwd (x vs fft: > 1 = slower than the current path; "
              "error: max |diff| / max |ref|):")
        print(f"{'L':>6} {'variant':>14} {'ms':>9} {'x vs fft':>9} {'max rel err':>12} {'rFFT size':>10}"
              + (f" {'peak MiB':>9}" if device.type == "cuda" else ""))
        for a in alts:
            print(f"{a['length']:>6} {a['variant']:>14} {a['ms']:>9.2f} {a['vs_fft']:>9.2f} {a['max_rel_err']:>12.1e} "
                  f"{a['fft_size'] or '—':>10}" + (f" {a['peak_bytes'] / 2**20:>9.0f}" if a["peak_bytes"] else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"command": " ".join(sys.argv), "device": name, "dtype": dtype,
                   "threads": torch.get_num_threads(), "clock": args.clock,
                   "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "versions": versions(), "rows": rows, "ema_alternatives": alts}
        write_atomic(args.json, json.dumps(payload, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
