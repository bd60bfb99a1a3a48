"""``python -m lra.results``: tables generated from run records only, beside the published numbers.

Reads every ``*.json`` run record under ``--runs`` (default ``results/runs``) and writes
``<out>/accuracy.md`` (default ``results/tables``): one row per (model, attention), one column per task,
each cell ``mean ± std (n seeds)`` of the test accuracy at the best-validation checkpoint, in percent.
Rules: a missing cell is "—" (never 0); the average is recomputed from the per-task means over the five
LRA Table 1 tasks (Path-X excluded, as in the paper) and is "—" unless all five are present; runs of
different protocols never share a table (our records are protocol ``pytorch-harness``; the published
table keeps its own protocol column). Also lists, per row, throughput, peak memory and the parameter
ratio against the LRA Transformer of the same task.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

from lra.atomic import write_atomic

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["listops", "text", "retrieval", "image", "pathfinder", "pathx"]
AVG_TASKS = ["listops", "text", "retrieval", "image", "pathfinder"]
PUBLISHED = ROOT.parent / "shared" / "reference" / "published-results.csv"


def load_records(runs_dir: Path) -> list[dict]:
    recs = []
    for p in sorted(Path(runs_dir).rglob("*.json")):
        try:
            r = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not a valid run record ({e})") from e
        if {"task", "model", "attention", "metrics"} <= set(r):
            r["_path"] = str(p)
            recs.append(r)
    return recs


def _fmt(vals: list[float]) -> str:
    if not vals:
        return "—"
    m = 100 * statistics.fmean(vals)
    sd = 100 * statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{m:.2f} ± {sd:.2f} ({len(vals)})"


def accuracy_table(recs: list[dict]) -> str:
    groups: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    extra: dict[tuple, dict] = defaultdict(dict)
    for r in recs:
        acc = r["metrics"].get("test/acc")
        if acc is None:
            continue
        key = (r.get("protocol", "pytorch-harness"), r["model"], r["attention"])
        groups[key][r["task"]].append(float(acc))
        e = extra[key].setdefault(r["task"], {"sps": [], "mem": [], "ratio": None, "gpu": set()})
        if r.get("throughput", {}).get("train/steps_per_s"):
            e["sps"].append(r["throughput"]["train/steps_per_s"])
        if (r.get("memory") or {}).get("peak_bytes"):
            e["mem"].append(r["memory"]["peak_bytes"])
        e["ratio"] = (r.get("params_vs_lra_transformer") or {}).get("ratio")
        e["gpu"].add((r.get("versions") or {}).get("gpu") or "cpu")
    lines = ["# Accuracy from run records", "",
             "Test accuracy (%) at the best-validation checkpoint: mean ± std (number of seeds). "
             "avg = mean of the five LRA Table 1 task means (Path-X excluded); — when any is missing.", ""]
    for proto in sorted({k[0] for k in groups}):
        lines += [f"## protocol: {proto}", "",
                  "| model | attention | " + " | ".join(TASKS) + " | avg |", "|" + "---|" * (len(TASKS) + 3)]
        for key in sorted(k for k in groups if k[0] == proto):
            by_task = groups[key]
            means = [statistics.fmean(by_task[t]) for t in AVG_TASKS if by_task.get(t)]
            avg = f"{100 * statistics.fmean(means):.2f}" if len(means) == len(AVG_TASKS) else "—"
            lines.append(f"| {key[1]} | {key[2]} | " + " | ".join(_fmt(by_task.get(t, [])) for t in TASKS) +
                         f" | {avg} |")
        lines += ["", "Efficiency inside the same runs (median steps/s, max peak memory GiB, params / LRA "
                  "Transformer of the task, device):", "",
                  "| model | attention | task | steps/s | peak GiB | param ratio | device |", "|---|---|---|---|---|---|---|"]
        for key in sorted(k for k in extra if k[0] == proto):
            for t in TASKS:
                e = extra[key].get(t)
                if not e:
                    continue
                sps = f"{statistics.median(e['sps']):.2f}" if e["sps"] else "—"
                mem = f"{max(e['mem']) / 2**30:.2f}" if e["mem"] else "—"
                ratio = f"{e['ratio']:.2f}" if e["ratio"] is not None else "—"
                lines.append(f"| {key[1]} | {key[2]} | {t} | {sps} | {mem} | {ratio} | {', '.join(sorted(e['gpu']))} |")
        lines.append("")
    if PUBLISHED.is_file():
        with open(PUBLISHED) as f:
            pub = list(csv.DictReader(f))
        lines += ["## Published (from shared/reference/published-results.csv; their own protocols)", "",
                  "| source | model | " + " | ".join(TASKS) + " | avg | protocol |", "|" + "---|" * (len(TASKS) + 4)]
        for r in pub:
            cells = [r.get(t) or "—" for t in TASKS]
            lines.append(f"| {r['source']} | {r['model']} | " + " | ".join(cells) +
                         f" | {r.get('avg') or '—'} | {r.get('protocol') or '—'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default=str(ROOT / "results" / "runs"))
    ap.add_argument("--out", default=str(ROOT / "results" / "tables"))
    args = ap.parse_args(argv)
    recs = load_records(Path(args.runs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "accuracy.md"
    write_atomic(path, accuracy_table(recs))
    print(f"{len(recs)} run records -> {path}")
    return path


if __name__ == "__main__":
    main()
