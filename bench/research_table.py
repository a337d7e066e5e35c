"""The CDCO research's dev-split tables from ``bench/research_dev.py``'s files: one row per (method, settings,
seed), then, for every run with several seeds, mean ± sd over its seeds and its paired difference from the
reference run (``lora_mtl/ref``) on the same seeds.

    python bench/research_table.py [bench/research/dev]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ID_TASKS = ("sst2", "cola", "mrpc", "rte", "stsb", "qnli", "mnli")
MAIN = {"cola": "mcc", "mrpc": "f1", "stsb": "pearson"}  # the rest: accuracy
REFERENCE = "lora_mtl/ref"
SUMMARY = ("primary", "ID", "OOD_seen.n256", "OOD_seen")


def rows(folder: Path) -> list[dict]:
    out = []
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text(encoding="utf-8"))
        m, a = r["metrics"], r["averages"]
        row = {"run": f"{r['method']}/{r['name']}", "seed": r["seed"], "primary": a["primary"], "ID": a["ID"],
               "OOD_seen.n256": a["OOD_seen.n256"], "OOD_seen": a["OOD_seen"]}
        row.update({t: m[t][MAIN.get(t, "accuracy")] for t in ID_TASKS if t in m})
        out.append(row)
    return out


def markdown(table: list[dict]) -> str:
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(table, key=lambda r: -r["primary"]):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(lines)


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def seeds_summary(table: list[dict]) -> str:
    """Runs with two or more seeds: mean ± sd (sample sd) of each endpoint, and the mean paired difference from
    ``REFERENCE`` over the seeds both have (Δ; its sd over seeds in brackets)."""
    by_run: dict[str, dict[int, dict]] = {}
    for r in table:
        by_run.setdefault(r["run"], {})[r["seed"]] = r
    ref = by_run.get(REFERENCE, {})
    cols = ["run", "seeds", *SUMMARY, *(f"Δ {k}" for k in ("primary", "ID", "OOD_seen.n256"))]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    multi = {run: seeds for run, seeds in by_run.items() if len(seeds) > 1}
    for run, seeds in sorted(multi.items(), key=lambda kv: -statistics.mean(r["primary"] for r in kv[1].values())):
        cells = [run, ",".join(str(k) for k in sorted(seeds))]
        cells += [_mean_sd([r[k] for r in seeds.values()]) for k in SUMMARY]
        paired = sorted(set(seeds) & set(ref))
        for k in ("primary", "ID", "OOD_seen.n256"):
            d = [seeds[s][k] - ref[s][k] for s in paired]
            cells.append("–" if run == REFERENCE or len(d) < 2 else
                         f"{statistics.mean(d):+.3f} ({statistics.stdev(d):.3f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if multi else ""


if __name__ == "__main__":
    t = rows(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/research/dev"))
    print(markdown(t))
    summary = seeds_summary(t)
    if summary:
        print(f"\nOver seeds (runs with two or more; Δ: paired difference from {REFERENCE} on the same seeds):\n")
        print(summary)
