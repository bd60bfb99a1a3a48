"""Benchmark and cross-check the YOSO Triton kernels against HF transformers 4.x's CUDA kernels (mlpen v1).

    python scripts/bench_yoso.py [--batch 32 --heads 2 --length 4000 --head-dim 32 --hash-code-len 12]
                                 [--num-hash 32] [--hf-src DIR] [--json out.json]

Needs CUDA (exits with a message otherwise). The HF sources (``fast_lsh_cumulation*.cu/.cpp``) are taken from
``--hf-src`` or from an installed transformers 4.x (``transformers/kernels/yoso``; 5.x no longer ships them)
and JIT-compiled with ``torch.utils.cpp_extension.load`` (nvcc + ninja). Without them only our kernels are
timed. What it does, on fp32 inputs, with CUDA events (median of ``--iters`` after ``--warmup``):

* hash: HF ``fast_hash`` draws its Dmat with ``at::randint`` on the CUDA generator; re-seeding and drawing the
  same tensor with ``torch.randint`` reproduces it, so our codes are compared with HF's (equal except at sign
  ties) and both are timed;
* cumulation (forward) and weighted cumulation (backward dQ) on the *same* codes: max |ours − HF| and time;
* prints ours/HF time ratios (> 1 means ours is slower) and peak memory;
* YOSO-E (expectation, no hashing): the streaming Triton kernels (``kernels/yoso/expectation.py``) against the
  PyTorch reference (``YosoExpectation``, chunked E), forward + backward for both backward modes, with
  max |diff| of the output and the ratio triton/reference (skip with ``--no-yoso-e``).
HF's kernels need L % 8 == 0, d_v % 32 == 0 and num_hash ≤ 32 or a multiple of 32; use such sizes.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.yoso.reference import hash_dim, num_parts  # noqa: E402


def _hf_sources(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    try:
        import transformers
    except ImportError:
        return None
    p = Path(transformers.__file__).parent / "kernels" / "yoso"
    return p if (p / "fast_lsh_cumulation.cu").exists() else None


def _load_hf(src: Path, build_dir: Path):
    from torch.utils.cpp_extension import load
    build_dir.mkdir(parents=True, exist_ok=True)
    names = ("fast_lsh_cumulation_torch.cpp", "fast_lsh_cumulation.cu", "fast_lsh_cumulation_cuda.cu")
    files = [src / f for f in names]
    return load("fast_lsh_cumulation", [str(f) for f in files], build_directory=str(build_dir), verbose=False)


def _time(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def _peak(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _bench_yoso_e(q, k, v, grad, mask, tau: int, iters: int, warmup: int) -> dict:
    """YOSO-E forward + backward: streaming Triton kernels vs the PyTorch reference (fp32, TF32 off)."""
    from kernels.yoso.expectation import yoso_e_triton
    from kernels.yoso.reference import yoso_e_ref

    q, k = (torch.nn.functional.normalize(t, dim=-1).contiguous() for t in (q, k))  # (BH, L, d) unit rows
    res = {}
    for mode in ("surrogate", "exact"):
        def step(fn, mode=mode):
            args = [t.detach().requires_grad_(True) for t in (q, k, v)]
            out = fn(*args, mask, mask, tau, mode)
            out.backward(grad)
            return out

        with torch.no_grad():
            diff = yoso_e_triton(q, k, v, mask, mask, tau, mode) - yoso_e_ref(q, k, v, mask, mask, tau, mode)
        key = f"yoso_e_{mode}"
        res[f"{key}_fwd_max_abs_diff"] = float(diff.abs().max())
        for impl, fn in (("triton", yoso_e_triton), ("reference", yoso_e_ref)):
            res[f"{key}_{impl}_ms"] = _time(lambda fn=fn: step(fn), iters, warmup)
            res[f"{key}_{impl}_peak_mib"] = _peak(lambda fn=fn: step(fn))
        res[f"{key}_ratio_triton_over_reference"] = res[f"{key}_triton_ms"] / res[f"{key}_reference_ms"]
        print(f"YOSO-E fwd+bwd ({mode}, BH={q.shape[0]} L={q.shape[1]} d={q.shape[2]} tau={tau}): "
              f"triton {res[f'{key}_triton_ms']:8.3f} ms ({res[f'{key}_triton_peak_mib']:8.1f} MiB) | "
              f"reference {res[f'{key}_reference_ms']:8.3f} ms ({res[f'{key}_reference_peak_mib']:8.1f} MiB) | "
              f"triton/reference {res[f'{key}_ratio_triton_over_reference']:5.2f}x | "
              f"max|out diff| {res[f'{key}_fwd_max_abs_diff']:.2e}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--length", type=int, default=4000)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--hash-code-len", type=int, default=12)
    ap.add_argument("--num-hash", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--hf-src", default=None, help="directory with HF 4.x kernels/yoso sources")
    ap.add_argument("--build-dir", default=".gpu/yoso_build")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-yoso-e", action="store_true", help="skip the YOSO-E streaming-kernel timings")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_yoso.py needs CUDA: it times the Triton kernels against HF's CUDA kernels. On CPU, run "
                 "`TRITON_INTERPRET=1 pytest tests/kernels/test_yoso.py` for correctness instead.")
    from kernels.yoso import kernel as K

    torch.backends.cuda.matmul.allow_tf32 = False
    BH, L, d, tau, nh = args.batch * args.heads, args.length, args.head_dim, args.hash_code_len, args.num_hash
    D, cap = hash_dim(d), 1 << tau
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(BH, L, D, device=dev, generator=g), dim=-1)  # HF pads d to ≥ 32
    q[..., d:] = 0
    k = torch.nn.functional.normalize(q + 0.5 * torch.randn(BH, L, D, device=dev, generator=g), dim=-1)
    k[..., d:] = 0
    v = torch.randn(BH, L, max(32, d), device=dev, generator=g)
    grad = torch.randn_like(v)
    mask_i = torch.ones(BH, L, dtype=torch.int32, device=dev)
    mask_b = mask_i.bool()
    parts = num_parts(nh, tau, D)
    res = {"config": vars(args), "device": torch.cuda.get_device_name(), "torch": torch.__version__}

    def our_hash(dm):
        r = K.rotation_matrices(dm).contiguous()  # composed once, shared by q and k
        return (K.fast_hash_triton(q, dm, nh, tau, mask_b, r), K.fast_hash_triton(k, dm, nh, tau, mask_b, r))

    src = _hf_sources(args.hf_src)
    hf = None
    if src is None:
        print("HF CUDA sources not found (transformers 4.x or --hf-src): timing our kernels only")
    else:
        try:
            hf = _load_hf(src, Path(args.build_dir))
        except Exception as e:  # report and go on with ours only
            print(f"HF CUDA kernels failed to build from {src}: {type(e).__name__}: {str(e)[-2000:]}")
    res["hf_built"] = hf is not None

    # --- codes: reproduce HF's Dmat draw, compare
    torch.cuda.manual_seed(1234)
    dm = (2 * torch.randint(0, 2, (BH, 3, parts, D), dtype=torch.int32, device=dev) - 1).float()
    qc, kc = our_hash(dm)
    if hf is not None:
        torch.cuda.manual_seed(1234)
        hq, hk = hf.fast_hash(mask_i, q, mask_i, k, nh, tau, True, 1)
        res["hash_code_mismatch_frac"] = float(((hq != qc).float().mean() + (hk != kc).float().mean()) / 2)
        print(f"hash codes vs HF (same Dmat): mismatch fraction {res['hash_code_mismatch_frac']:.2e} "
              "(sign ties only expected)")
        qc, kc = hq, hk  # identical inputs for the cumulation comparison

    # --- correctness on shared codes
    ours_fwd = K.lsh_cumulation_triton(qc, kc, mask_b, mask_b, v, tau)
    ours_w = K.lsh_weighted_cumulation_triton(mask_b, qc, grad, mask_b, kc, v, k, tau)
    if hf is not None:
        hf_fwd = hf.lsh_cumulation(mask_i, qc, mask_i, kc, v, cap, True, 1)
        hf_w = hf.lsh_weighted_cumulation(mask_i, qc, grad, mask_i, kc, v, k, cap, True, 4)
        res["fwd_max_abs_diff"] = float((ours_fwd - hf_fwd).abs().max())
        res["wcum_max_abs_diff"] = float((ours_w - hf_w).abs().max())
        res["fwd_scale"], res["wcum_scale"] = float(hf_fwd.abs().max()), float(hf_w.abs().max())
        print(f"cumulation vs HF: max|diff| {res['fwd_max_abs_diff']:.2e} (max|out| {res['fwd_scale']:.2e}); "
              f"weighted: {res['wcum_max_abs_diff']:.2e} (max|out| {res['wcum_scale']:.2e})")

    # --- timings
    it, wu = args.iters, args.warmup
    timings = {
        "hash_ours": lambda: our_hash(dm),
        "fwd_cum_ours": lambda: K.lsh_cumulation_triton(qc, kc, mask_b, mask_b, v, tau),
        "bwd_ours": lambda: (K.lsh_cumulation_triton(kc, qc, mask_b, mask_b, grad, tau),
                             K.lsh_weighted_cumulation_triton(mask_b, qc, grad, mask_b, kc, v, k, tau),
                             K.lsh_weighted_cumulation_triton(mask_b, kc, v, mask_b, qc, grad, q, tau)),
    }
    if hf is not None:
        timings.update({
            "hash_hf": lambda: hf.fast_hash(mask_i, q, mask_i, k, nh, tau, True, 1),
            "fwd_cum_hf": lambda: hf.lsh_cumulation(mask_i, qc, mask_i, kc, v, cap, True, 1),
            "bwd_hf": lambda: (hf.lsh_cumulation(mask_i, kc, mask_i, qc, grad, cap, True, 1),
                               hf.lsh_weighted_cumulation(mask_i, qc, grad, mask_i, kc, v, k, cap, True, 4),
                               hf.lsh_weighted_cumulation(mask_i, kc, v, mask_i, qc, grad, q, cap, True, 4)),
        })
    for name, fn in timings.items():
        res[f"{name}_ms"] = _time(fn, it, wu)
        res[f"{name}_peak_mib"] = _peak(fn)
    print(f"BH={BH} L={L} d={d} tau={tau} num_hash={nh} on {res['device']}")
    for part in ("hash", "fwd_cum", "bwd"):
        line = f"  {part:8s} ours {res[f'{part}_ours_ms']:8.3f} ms ({res[f'{part}_ours_peak_mib']:8.1f} MiB)"
        if hf is not None:
            ratio = res[f"{part}_ours_ms"] / res[f"{part}_hf_ms"]
            res[f"{part}_ratio_ours_over_hf"] = ratio
            line += (f" | HF {res[f'{part}_hf_ms']:8.3f} ms ({res[f'{part}_hf_peak_mib']:8.1f} MiB)"
                     f" | ours/HF {ratio:5.2f}x")
        print(line)
    if not args.no_yoso_e:
        res.update(_bench_yoso_e(q[..., :d], k[..., :d], v, grad, mask_b, tau, it, wu))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0 if all(math.isfinite(x) for x in res.values() if isinstance(x, float)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
