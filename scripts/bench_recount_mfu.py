"""Recount the MFU of a committed bench JSON with the current FLOP count of ``lra.bench.build_entry``.

The count changed once (session 4): the classifier head had been counted per token instead of per sequence,
which put MFU 2-5 % (relative) too high. Usage: ``python scripts/bench_recount_mfu.py results/bench/X.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lra.bench import build_entry  # noqa: E402


def main(path: str) -> None:
    data = json.loads(Path(path).read_text())
    bench = OmegaConf.create(data["config"])
    print(f"{path} ({data['device']}): MFU as recorded -> recounted")
    for r in data["results"]:
        if r.get("mfu") is None:
            continue
        _, flops = build_entry(r["entry"], r["length"], bench)
        print(f"{r['entry']:20s} L={r['length']:5d}  {100 * r['mfu']:5.1f}% -> {100 * r['mfu'] * flops / r['flops_per_step']:5.1f}%")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
