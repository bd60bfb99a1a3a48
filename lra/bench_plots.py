"""``python -m lra.bench_plots --bench results/bench/<tag>.json [--runs results/runs] [--task text]``:
the LRA Figure 3 bubble chart — test accuracy (run records) against training steps/s (bench, at
``--length``), bubble area proportional to peak memory (bench). One bubble per (model, attention) that
has both a run record for ``--task`` and a bench measurement; the others are listed as missing.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from lra.atomic import atomic_path
from lra.results import ROOT, load_records


def bubble_points(bench: dict, recs: list[dict], task: str, length: int) -> tuple[list[dict], list[str]]:
    speed = {r["entry"]: r for r in bench["results"] if r["length"] == length and r["status"] == "ok"}
    accs: dict[str, list[float]] = {}
    for r in recs:
        if r["task"] == task and r["metrics"].get("test/acc") is not None:
            accs.setdefault(f"{r['model']}/{r['attention']}", []).append(float(r["metrics"]["test/acc"]))
    pts, missing = [], []
    for entry in sorted(set(speed) | set(accs)):
        if entry in speed and entry in accs and speed[entry].get("peak_bytes"):
            pts.append({"entry": entry, "acc": 100 * statistics.fmean(accs[entry]),
                        "steps_per_s": speed[entry]["steps_per_s"], "mem_gib": speed[entry]["peak_bytes"] / 2**30})
        else:
            missing.append(entry)
    return pts, missing


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", required=True)
    ap.add_argument("--runs", default=str(ROOT / "results" / "runs"))
    ap.add_argument("--task", default="text")
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    bench = json.loads(Path(args.bench).read_text())
    pts, missing = bubble_points(bench, load_records(Path(args.runs)), args.task, args.length)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5))
    for p in pts:
        ax.scatter(p["steps_per_s"], p["acc"], s=300 * p["mem_gib"], alpha=0.5)
        ax.annotate(p["entry"], (p["steps_per_s"], p["acc"]), fontsize=8, ha="center")
    ax.set(xlabel=f"training steps/s at L={args.length} ({bench['device']})", ylabel=f"{args.task} test accuracy (%)",
           title="LRA Figure 3 style: accuracy vs speed, area = peak memory")
    out = Path(args.out or Path(args.bench).with_name(Path(args.bench).stem + f"_fig3_{args.task}.png"))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    print(json.dumps({"figure": str(out), "points": pts, "missing": missing}, indent=1))
    return out


if __name__ == "__main__":
    main()
