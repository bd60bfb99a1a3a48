"""Compile every Triton kernel configuration the launchers pick for real GPUs, without a GPU.

The kernels in ``kernels/`` are tested on CPU under ``TRITON_INTERPRET=1``, which checks what they compute but
not whether they fit on a GPU: a tile that needs more shared memory than the device has fails only at launch
("out of resources"), and register spills only show as slowness. This script runs each launcher on ``meta``
tensors at the shapes the models use, captures the kernel launches (kernel, argument dtypes, constexprs,
``num_warps``; nothing runs), compiles each distinct one with Triton for the chosen CUDA targets and runs
``ptxas -v`` on the PTX. It prints a table (registers, spill bytes, shared memory against the device limit)
and exits 1 when a configuration fails to compile, needs more shared memory than the target has, or spills
more than ``--max-spill`` bytes per thread where the launcher does not document a spill (the YOSO-E tiles are
chosen spill-free up to width 128: see ``--sweep-yoso-e`` and ``kernels.yoso.expectation._GPU_TILES``).

Launches are specialised as Triton's launcher would specialise them (integer arguments equal to 1, such as unit
strides, become constants; 16-divisible integers and pointers get divisibility hints; ``meta`` tensors count as
16-byte aligned), at sequence length 1000 (not 16-divisible, the general case). What it does not check: the
numbers (the interpreter tests and the CUDA tests do that) and speed. The compiler is the local Triton's
(``triton.__version__`` is printed); a GPU image may carry another version, whose register allocation differs.

    python scripts/check_kernels_cuda.py                    # every configuration, sm_80 and sm_90
    python scripts/check_kernels_cuda.py --quick --targets sm_90 --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("check_kernels_cuda.py compiles for GPUs: run it without TRITON_INTERPRET=1")

# Triton 3.9 warns that FP fusion (FMA contraction) will stop being the default; compile as kernels run today.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.compiler.compiler import make_backend  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kernels.yoso import expectation, kernel  # noqa: E402
from lra.atomic import write_atomic  # noqa: E402

# Max shared memory per block (opt-in), bytes: CUDA C Programming Guide, "Technical Specifications per
# Compute Capability" (8.0: 163 KB; 9.0: 227 KB).
TARGETS = {"sm_80": (80, 163 * 1024), "sm_90": (90, 227 * 1024)}


@contextlib.contextmanager
def capture_launches(into: list):
    """Replace ``JITFunction.run`` (what ``kernel[grid](...)`` calls) with a recorder for the duration."""
    original = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        into.append((self, args, dict(kwargs)))

    JITFunction.run = record
    try:
        yield into
    finally:
        JITFunction.run = original


class Launch:
    """One captured launch, specialised the way Triton's launcher would specialise it for a target.

    Triton's own binder (``create_function_from_signature``) and ``JITFunction._pack_args`` produce the
    signature, the constexprs (including integer arguments equal to 1, e.g. unit strides) and the
    16-divisibility attributes; ``meta`` tensors count as 16-byte aligned, as fresh allocations are.
    """

    def __init__(self, fn: JITFunction, args: tuple, kwargs: dict, case: str, known_spill: bool = False):
        self.fn, self.args, self.kwargs, self.case = fn, args, kwargs, case
        self.known_spill = known_spill  # the launcher documents that this configuration spills

    def specialise(self, target: str):
        arch = TARGETS[target][0]
        backend = make_backend(GPUTarget("cuda", arch, 32))
        binder = create_function_from_signature(self.fn.signature, self.fn.params, backend)
        bound, spec, options = binder(*self.args, **self.kwargs)
        options, signature, constexprs, attrs = self.fn._pack_args(backend, dict(self.kwargs), bound, spec,
                                                                   options)
        return backend, options, signature, constexprs, attrs

    @property
    def key(self) -> tuple:
        """Distinct kernel, constexprs, tensor dtypes and warps (launches differing only in an integer's
        specialisation, e.g. a hash offset of 0 vs 8, count once)."""
        consts = tuple((k, v) for k, v in self.kwargs.items())
        dts = tuple(str(a.dtype) for a in self.args if isinstance(a, torch.Tensor))
        return (self.fn.__name__, consts, dts)

    def describe(self) -> str:
        names = self.fn.arg_names
        consts = " ".join(f"{k}={v}" for k, v in self.kwargs.items() if k in names and k.isupper())
        dts = sorted({str(a.dtype).replace("torch.", "") for a in self.args if isinstance(a, torch.Tensor)
                      and a.dtype.is_floating_point})
        return f"{consts} warps={self.kwargs.get('num_warps', 4)} tensors={'/'.join(dts)}"


def _ptxas(arch: int) -> str:
    import triton.backends.nvidia as nv
    # Triton uses its CUDA 12 ptxas below sm_90 and the newer one ("ptxas-blackwell") from sm_90 on.
    name = "ptxas" if arch < 90 else "ptxas-blackwell"
    path = Path(nv.__file__).parent / "bin" / name
    if not path.exists():
        path = Path(nv.__file__).parent / "bin" / "ptxas"
    return str(path)


def compile_one(launch: Launch, target: str, max_spill: int = 0) -> dict:
    arch, smem_limit = TARGETS[target]
    row = {"kernel": launch.fn.__name__, "config": launch.describe(), "case": launch.case, "target": target,
           "smem_limit": smem_limit}
    t0 = time.perf_counter()
    try:
        backend, options, signature, constexprs, attrs = launch.specialise(target)
        compiled = triton.compile(ASTSource(launch.fn, signature, constexprs, attrs),
                                  target=GPUTarget("cuda", arch, 32), options=options.__dict__)
    except Exception as exc:  # compile errors are the finding; keep going to report them all
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return row
    row["smem"] = int(compiled.metadata.shared)
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "k.ptx"
        ptx.write_text(compiled.asm["ptx"])
        res = subprocess.run([_ptxas(arch), "-v", "--gpu-name", f"sm_{arch}a" if arch >= 90 else f"sm_{arch}",
                              str(ptx), "-o", os.devnull], capture_output=True, text=True)
    if res.returncode != 0:
        row.update(ok=False, error=f"ptxas: {res.stderr.strip().splitlines()[-1][:200]}")
        return row
    regs = re.search(r"Used (\d+) registers", res.stderr)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", res.stderr)
    row["registers"] = int(regs.group(1)) if regs else None
    row["spill_bytes"] = int(spill.group(1)) + int(spill.group(2)) if spill else None
    row["seconds"] = round(time.perf_counter() - t0, 2)
    problems = []
    if row["smem"] > smem_limit:
        problems.append(f"shared memory {row['smem']} B > {smem_limit} B")
    if row["spill_bytes"] and row["spill_bytes"] > max_spill and not launch.known_spill:
        problems.append(f"{row['spill_bytes']} B of register spills")
    row["known_spill"] = launch.known_spill
    row["ok"] = not problems
    if problems:
        row["error"] = "; ".join(problems)
    return row


def collect(quick: bool) -> list[Launch]:
    """Run the launchers on meta tensors at the models' shapes and keep one Launch per distinct config."""
    meta = torch.device("meta")
    found: dict[tuple, Launch] = {}

    def run(case: str, fn, *args, known_spill: bool = False, **kwargs):
        calls: list = []
        with capture_launches(calls):
            fn(*args, **kwargs)
        if not calls:
            raise RuntimeError(f"{case}: the launcher started no kernel")
        for jit, a, kw in calls:
            launch = Launch(jit, a, kw, case, known_spill)
            found.setdefault(launch.key, launch)

    BH, L = 8, 1000
    dims = (64,) if quick else (16, 32, 64, 128, 256)
    dtypes = (torch.bfloat16,) if quick else (torch.float32, torch.bfloat16, torch.float16)
    taus = (12,) if quick else (8, 12)
    mask = torch.ones(BH, L, dtype=torch.bool, device=meta)
    for d in dims:
        for dt in dtypes:
            x = torch.empty(BH, L, d, dtype=dt, device=meta)
            for tau in taus:
                case = f"yoso_e d={d} {dt} tau={tau}"
                wide = d > 128  # no 256-wide tiling is spill-free (expectation._GPU_TILES)
                run(case, expectation.yoso_e_forward_triton, x, x, x, mask, mask, tau, known_spill=wide)
                for mode in ("surrogate",) if quick else expectation.MODES:
                    run(case, expectation.yoso_e_backward_triton, x.float(), x, x, x, mask, mask, tau, mode,
                        known_spill=wide)
    # YOSO LSH: hashing of unit q/k rows, the bucket cumulation (forward, dV) and the weighted cumulation
    # (dQ, dK) with both methods, at the LRA head dims (hash width = next power of two of d, >= 32).
    nh = 32
    for d in (32, 64) if quick else (16, 32, 64, 128):
        D = max(32, 1 << (d - 1).bit_length())
        for dt in dtypes:
            x = torch.empty(BH, L, d, dtype=dt, device=meta)
            for tau in taus:
                case = f"yoso d={d} {dt} tau={tau}"
                parts = -(-nh * tau // D)
                dmat = torch.empty(BH, 3, parts, D, device=meta)
                run(case, kernel.fast_hash_triton, x, dmat, nh, tau, mask)
                codes = torch.empty(BH, L, nh, dtype=torch.int32, device=meta)
                run(case, kernel.lsh_cumulation_triton, codes, codes, mask, mask, x, tau, hash_group=1)
                run(case, kernel.lsh_weighted_cumulation_triton, mask, codes, x, mask, codes, x, x, tau)
                if not quick:
                    run(case, kernel.lsh_weighted_cumulation_triton, mask, codes, x, mask, codes, x, x, tau,
                        hash_group=1, method="table")
    return list(found.values())


def sweep_yoso_e(targets: list[str], dims: list[int]) -> list[dict]:
    """Compile the YOSO-E kernels at every candidate tiling (row blocks up to 8192 / width, x warps) per head
    width and report which are spill-free: how :func:`kernels.yoso.expectation._config`'s table was chosen
    (bf16 inputs, tau = 12, both backward modes; the largest spill-free tile wins, no timing involved)."""
    meta = torch.device("meta")
    BH, L, tau = 8, 1000, 12
    mask = torch.ones(BH, L, dtype=torch.bool, device=meta)
    original = expectation._config
    rows = []
    try:
        for d in dims:
            blocks = [b for b in (16, 32, 64, 128) if b * d <= 8192]
            for bm in blocks:
                for bn in blocks:
                    for warps in (4, 8):
                        expectation._config = lambda d_, dv_, kernel_, interpreted, c=(bm, bn, warps): (
                            c[0], c[1], max(16, expectation._pow2(d_)), max(16, expectation._pow2(dv_)), c[2])
                        calls: list = []
                        with capture_launches(calls):
                            x = torch.empty(BH, L, d, dtype=torch.bfloat16, device=meta)
                            expectation.yoso_e_forward_triton(x, x, x, mask, mask, tau)
                            for mode in expectation.MODES:
                                expectation.yoso_e_backward_triton(x.float(), x, x, x, mask, mask, tau, mode)
                        for jit, a, kw in calls:
                            launch = Launch(jit, a, kw, f"sweep d={d}")
                            for target in targets:
                                r = compile_one(launch, target)
                                r.update(d=d, block_m=bm, block_n=bn, warps=warps)
                                rows.append(r)
                        print(f"d={d} BM={bm} BN={bn} warps={warps}: "
                              f"{sum(r['ok'] for r in rows[-len(calls) * len(targets):])}/"
                              f"{len(calls) * len(targets)} spill-free", flush=True)
    finally:
        expectation._config = original
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| kernel | config | target | registers | spill bytes | shared memory (limit) | ok |",
           "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        smem = f"{r['smem'] / 1024:.1f} KiB ({r['smem_limit'] // 1024} KiB)" if "smem" in r else "—"
        ok = ("yes (known spill)" if r.get("known_spill") and r.get("spill_bytes") else "yes") if r["ok"] \
            else f"**no**: {r.get('error', '')}"
        out.append(f"| `{r['kernel']}` | {r['config']} | {r['target']} | {r.get('registers', '—')} | "
                   f"{r.get('spill_bytes', '—')} | {smem} | {ok} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--quick", action="store_true", help="bf16, d=64 (LSH: 32/64), tau=12 only")
    p.add_argument("--max-spill", type=int, default=16, metavar="BYTES",
                   help="spill bytes per thread tolerated (a few registers' worth is harmless; default 16)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON (written, then renamed)")
    p.add_argument("--md", type=Path, help="also write the table as markdown with the command (written, then renamed)")
    p.add_argument("--sweep-yoso-e", action="store_true",
                   help="compile every candidate YOSO-E tiling and write the rows to --json (slow: ~30 min)")
    p.add_argument("--dims", nargs="+", type=int, default=[16, 32, 64, 128, 256], help="--sweep-yoso-e widths")
    args = p.parse_args(argv)
    if args.sweep_yoso_e:
        rows = sweep_yoso_e(args.targets, args.dims)
        if args.json:
            write_atomic(args.json, json.dumps({"triton": triton.__version__, "rows": rows}, indent=1))
        return 0
    launches = collect(args.quick)
    print(f"triton {triton.__version__}, torch {torch.__version__}: {len(launches)} distinct kernel "
          f"configurations x {len(args.targets)} targets", flush=True)
    rows = []
    for launch in launches:
        for target in args.targets:
            rows.append(compile_one(launch, target, args.max_spill))
    print(markdown(rows))
    bad = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(bad)}/{len(rows)} compiled within the target's shared memory with at most "
          f"{args.max_spill} B of spills (or a documented spill)")
    if args.json:
        write_atomic(args.json, json.dumps({"triton": triton.__version__, "torch": torch.__version__,
                                             "rows": rows}, indent=1))
    if args.md:
        cmd = "python scripts/check_kernels_cuda.py " + " ".join(argv if argv is not None else sys.argv[1:])
        head = (f"# Triton kernels compiled offline for CUDA targets\n\n`{cmd.strip()}` (triton "
                f"{triton.__version__}, torch {torch.__version__}; no GPU involved). Registers and spill bytes are "
                "per thread (`ptxas -v`); shared memory is Triton's allocation against the per-block opt-in limit. "
                f"{len(rows) - len(bad)}/{len(rows)} rows pass.\n\n")
        write_atomic(args.md, head + markdown(rows) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
