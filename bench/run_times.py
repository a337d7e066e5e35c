"""Where a comparison's time went, read back from a ``CDCO_HOME``'s published step folders (no timer of its own).

Per method, the mean over its finished seeds of: the training seconds (the stages' own ``train.seconds``), the
evaluation (the evaluate record's mtime minus the last stage's) and the run's wall time (the first stage's start,
its record's mtime minus its seconds, to the evaluate record). Runs still in progress are left out.

    python bench/run_times.py /path/to/CDCO_HOME
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def _published(home: Path, step: str) -> list[tuple[dict[str, Any], float]]:
    """(outputs, the record's mtime) of every published folder of ``step`` whose record verifies (the cache's own
    :func:`~cdco_core.cache.read_record`: every listed file still has its sha256); anything else is left out."""
    from cdco_core.cache import RECORD, read_record

    out = []
    for d in sorted((home / "steps" / step).glob("*")):
        try:
            key = json.loads((d / RECORD).read_text(encoding="utf-8"))["key"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # in progress (.partial), or not a record
        record = read_record(d, key)
        if record is not None:
            out.append((record.outputs, (d / RECORD).stat().st_mtime))
    return out


def run_times(home: Path) -> dict[str, dict[str, float]]:
    """method -> {"runs", "train_s", "evaluate_s", "wall_s"} (means over the method's finished runs)."""
    stages: dict[tuple[str, int], list[tuple[int, float, float]]] = defaultdict(list)
    for o, mtime in _published(home, "train"):
        stages[(o["method"], o["seed"])].append((o["index"], mtime, o["train"]["seconds"]))
    ends = {(o["method"], o["seed"]): mtime for o, mtime in _published(home, "evaluate")}
    runs: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for run, st in stages.items():
        if run not in ends:
            continue
        st.sort()
        start = st[0][1] - st[0][2]
        runs[run[0]].append((sum(s for _, _, s in st), ends[run] - st[-1][1], ends[run] - start))
    return {m: {"runs": len(rs), **{k: sum(r[i] for r in rs) / len(rs)
                                    for i, k in enumerate(("train_s", "evaluate_s", "wall_s"))}}
            for m, rs in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("home", type=Path, help="the CDCO_HOME the comparison ran in")
    times = run_times(ap.parse_args().home)
    print("| method | runs | training min | evaluation min | run min |\n|---|---|---|---|---|")
    for m, t in times.items():
        print(f"| {m} | {t['runs']} | {t['train_s'] / 60:.1f} | {t['evaluate_s'] / 60:.1f} | {t['wall_s'] / 60:.1f} |")
    total = sum(t["wall_s"] * t["runs"] for t in times.values())
    print(f"\n{sum(t['runs'] for t in times.values())} runs, their run times summed: {total / 60:.1f} min")


if __name__ == "__main__":
    main()
