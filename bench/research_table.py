"""The CDCO research's dev-split table: one row per (method, settings, seed) file from ``bench/research_dev.py``.

    python bench/research_table.py [bench/research/dev]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ID_TASKS = ("sst2", "cola", "mrpc", "rte", "stsb", "qnli", "mnli")
MAIN = {"cola": "mcc", "mrpc": "f1", "stsb": "pearson"}  # the rest: accuracy


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


if __name__ == "__main__":
    print(markdown(rows(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/research/dev"))))
