"""Print a comparison's results (``cdco compare``'s results.json) as the README's Markdown: the endpoint table
(mean ± sd over seeds, the best of each column in bold) and the paired bootstrap of the endpoints against each
comparator.

    python bench/results_table.py docs/results/benchmark-cpu/results.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

COLUMNS = ["primary", "ID", "OOD_unseen.n256", "KI.n256", "OOD_seen.n256", "zero_shot", "OOD_unseen", "KI",
           "trainable params", "s/step"]
ENDPOINTS = ["primary", "ID", "OOD_unseen.n256", "KI.n256", "OOD_seen.n256", "zero_shot"]


def _mean(cell: str) -> float:
    return float(cell.split()[0])


def endpoint_table(res: dict) -> str:
    rows = [r for r in res["table"] if not r["method"].startswith("majority class")]
    scored = COLUMNS[:8]
    best = {c: max(_mean(r[c]) for r in rows if r.get(c) not in (None, "", "–")) for c in scored}
    out = ["| method | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = []
        for c in COLUMNS:
            v = re.sub(r" \(n=\d+\)", "", str(r.get(c, "–")))
            cells.append(f"**{v}**" if c in best and v not in ("–", "") and _mean(v) == best[c] else v)
        out.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def bootstrap_table(res: dict) -> str:
    by = {(b["reference"], b["baseline"], b["scope"]): b for b in res["bootstrap"]}
    methods = [m for m in res["methods"]]
    out = []
    for comp in res["comparators"]:
        out += [f"Against `{comp}` (Δ, 95% CI, p):", "",
                "| method | " + " | ".join(ENDPOINTS) + " |", "|---|" + "---|" * len(ENDPOINTS)]
        for m in methods:
            if m == comp:
                continue
            cells = []
            for e in ENDPOINTS:
                b = by.get((m, comp, e))
                if b is None and (comp, m, e) in by:  # recorded the other way round: negate
                    r = by[(comp, m, e)]
                    b = {"delta": -r["delta"], "ci_low": -r["ci_high"], "ci_high": -r["ci_low"],
                         "p_value": r["p_value"]}
                cells.append("–" if b is None else
                             f"{b['delta']:+.3f} [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}] p={b['p_value']:.3f}")
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    args = ap.parse_args()
    res = json.loads(args.results.read_text(encoding="utf-8"))
    print(endpoint_table(res))
    print()
    print(bootstrap_table(res))


if __name__ == "__main__":
    main()
