"""``python -m lra.bench_plots --bench results/bench/<tag>.json [--runs results/runs] [--task text] [--length L]``:
the LRA Figure 3 bubble chart — test accuracy (run records) against training steps/s (bench, at ``--length``,
default the bench's longest), bubble area proportional to peak memory (bench), the largest bubble a fixed size.
One bubble per entry that has both a bench measurement and run records of ``--task`` trained at that length
(``config.task.max_length``); its accuracy is the mean over those records, and the label gives their number.
A Mega run with ``model.chunk_size`` > 0 is the bench's ``mega-chunk/none``. Entries with only one side are
listed as missing. ``python -m lra.bench`` draws this chart itself after the bench.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from lra.atomic import atomic_path
from lra.results import ROOT, load_records

LARGEST_AREA = 2000.0  # points^2: the bubble of the largest peak memory in the chart


def record_entry(r: dict) -> str:
    """The bench entry a run record measured: ``<model>/<attention>``, ``mega-chunk/none`` for chunked Mega."""
    if r["model"] == "mega" and (r["config"]["model"].get("chunk_size") or 0) > 0:
        return "mega-chunk/none"
    return f"{r['model']}/{r['attention']}"


def bubble_points(bench: dict, recs: list[dict], task: str, length: int) -> tuple[list[dict], list[str]]:
    speed = {r["entry"]: r for r in bench["results"] if r["length"] == length and r["status"] == "ok"}
    accs: dict[str, list[float]] = {}
    for r in recs:
        if (r["task"] == task and r["metrics"].get("test/acc") is not None
                and r["config"]["task"]["max_length"] == length):
            accs.setdefault(record_entry(r), []).append(float(r["metrics"]["test/acc"]))
    pts, missing = [], []
    for entry in sorted(set(speed) | set(accs)):
        if entry in speed and entry in accs and speed[entry].get("peak_bytes"):
            pts.append({"entry": entry, "acc": 100 * statistics.fmean(accs[entry]), "n": len(accs[entry]),
                        "steps_per_s": speed[entry]["steps_per_s"], "mem_gib": speed[entry]["peak_bytes"] / 2**30})
        else:
            missing.append(entry)
    return pts, missing


def draw_fig3(bench: dict, recs: list[dict], task: str, length: int, out: Path) -> dict:
    """Draw the chart to ``out`` -> {"figure": out or None, "reason", "points" (with their "area"), "missing"};
    nothing is drawn when no entry has both a bench measurement and a run record of ``task`` at ``length``."""
    pts, missing = bubble_points(bench, recs, task, length)
    if not pts:
        return {"figure": None, "reason": f"no run records for task {task} at length {length} matching a measured "
                                          "bench entry", "points": pts, "missing": missing}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    largest = max(p["mem_gib"] for p in pts)
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, p in enumerate(sorted(pts, key=lambda p: p["steps_per_s"])):
        p["area"] = LARGEST_AREA * p["mem_gib"] / largest
        ax.scatter(p["steps_per_s"], p["acc"], s=p["area"], alpha=0.5)
        # labels cycle above / below / higher above their bubble, so neighbours at equal accuracy (exact backends) stay legible
        ax.annotate(f"{p['entry']} (n={p['n']})", (p["steps_per_s"], p["acc"]), xytext=(0, (9, -13, 21)[i % 3]),
                    textcoords="offset points", fontsize=8, ha="center")
    ax.set(xlabel=f"training steps/s at L={length} ({bench['device']})",
           ylabel=f"{task} test accuracy (%), mean of n runs at L={length}",
           title="LRA Figure 3 style: accuracy vs speed, area = peak memory")
    ax.text(0.01, 0.01, f"bubble area ∝ peak memory; largest = {largest:.3g} GiB", transform=ax.transAxes,
            fontsize=8, va="bottom")
    ax.margins(0.15)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return {"figure": out, "reason": "", "points": pts, "missing": missing}


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", required=True)
    ap.add_argument("--runs", default=str(ROOT / "results" / "runs"))
    ap.add_argument("--task", default="text")
    ap.add_argument("--length", type=int, default=None, help="default: the bench's longest length")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    bench = json.loads(Path(args.bench).read_text())
    length = args.length or max(bench["config"]["lengths"])
    out = Path(args.out or Path(args.bench).with_name(Path(args.bench).stem + f"_fig3_{args.task}.png"))
    fig = draw_fig3(bench, load_records(Path(args.runs)), args.task, length, out)
    if fig["figure"] is None:
        raise SystemExit(f"{fig['reason']} (bench {args.bench}, runs {args.runs}): Figure 3 not drawn")
    print(json.dumps({"figure": str(out), "points": fig["points"], "missing": fig["missing"]}, indent=1))
    return out


if __name__ == "__main__":
    main()
