"""Benchmarks: each compares ours with a peer measured in the same process on the same inputs.

``cdco bench NAME`` prints one JSON object (form in ../shared/DESIGN.md, "Benchmarks"):
{"bench", "machine", "comparisons": [{"name", "ours", "peer", "unit", "higher_is_better", "ratio", "target", "meets"}]}
"""

from __future__ import annotations

import os
from typing import Any

from cdco_core.registry import Registry

# name -> run(quick) -> {"comparisons": [...], ...}; the same registry mechanism as methods and samplers.
BENCHES: Registry[dict[str, Any]] = Registry("bench")
# One intra-op thread per contender: on the shared 2-core machine, two OpenMP threads per process spin against other
# processes' threads and timings get many times slower and far noisier. CDCO_BENCH_THREADS overrides it on a
# dedicated machine. Every contender of a comparison runs at this count (torch, and FAISS's OpenMP pool).
THREADS = int(os.environ.get("CDCO_BENCH_THREADS", "1"))


def _register() -> None:
    """Each benchmark module's ``run``; imported here, when a benchmark is asked for (they import torch)."""
    from bench import embed, manifold, negatives, pipeline, train

    for name, module in {"embed": embed, "negatives": negatives, "manifold": manifold, "train": train,
                         "pipeline": pipeline}.items():
        if name not in BENCHES:
            BENCHES.register(name, module.run, description=(module.__doc__ or "").strip().splitlines()[0])


def machine() -> dict[str, Any]:
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def comparison(name: str, ours: float, peer: float, unit: str, higher_is_better: bool, target: float,
               **extra: Any) -> dict[str, Any]:
    """One row: ratio = ours / peer; meets compares it with target in the right direction."""
    ratio = ours / peer if peer else float("inf")
    meets = ratio >= target if higher_is_better else ratio <= target
    row = {"name": name, "ours": round(ours, 4), "peer": round(peer, 4), "unit": unit,
           "higher_is_better": higher_is_better, "ratio": round(ratio, 4), "target": target, "meets": bool(meets)}
    row.update(extra)
    return row


def run_bench(name: str, quick: bool = False) -> dict[str, Any]:
    _register()
    result = BENCHES.entry(name).factory(quick=quick)
    return {"bench": name, "machine": machine(), **result}
