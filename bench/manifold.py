"""The manifold step's cost: numba cold start against cached compilation, and UMAP fit+transform scaling.

Cold start: each contender runs in a fresh process (import umap, fit 800 points, transform 200): "plain" is umap
as a user calls it (numba's disk cache only where the library enabled it: pynndescent), "ours" is
``cdco_core.odms.manifold.fit_manifold``, which also switches the disk cache on for umap's own kernels. Each runs
twice on its own empty ``NUMBA_CACHE_DIR``: cold (compiles) then warm (loads the cache).

Scaling: ``fit_manifold`` with the default config (8 components, 15 neighbours, fitted on at most 20,000
points, the rest transformed) on 5k-40k synthetic embedding-like points (a 50-cluster Gaussian mixture in 384-d,
L2-normalised): embedding 40k real texts does not fit this machine's budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import comparison

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
x = np.random.default_rng(0).standard_normal((1000, 384)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
if sys.argv[1] == "ours":
    from cdco_core.odms.manifold import fit_manifold
    fit_manifold(x, 8, 15, 0.1, 800, 0)
else:
    import umap
    r = umap.UMAP(n_components=8, n_neighbors=15, metric="cosine", random_state=0, n_jobs=1).fit(x[:800])
    r.transform(x[800:])
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def probe(kind: str, cache_dir: str) -> float:
    """Seconds from a fresh interpreter's first import to a fitted and applied UMAP."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    proc = subprocess.run([sys.executable, "-c", PROBE, kind], env=env, capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


def cold_vs_cached() -> dict[str, float]:
    out = {}
    for kind in ("plain", "ours"):
        with tempfile.TemporaryDirectory() as cache:
            out[f"{kind}_cold_s"] = probe(kind, cache)
            out[f"{kind}_warm_s"] = probe(kind, cache)
    return out


def clustered_points(n: int, dim: int = 384, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """(n, dim) L2-normalised points from a Gaussian mixture (embedding-like: clustered on the sphere)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def scaling(sizes: list[int]) -> list[dict[str, Any]]:
    from cdco_core.config import ManifoldConfig
    from cdco_core.odms.manifold import fit_manifold

    m = ManifoldConfig()
    # Compile outside the timing: >= 4096 points switch UMAP to NN-descent and transform to pynndescent's search,
    # each with its own kernels, so the warm-up must take that path (a first try warmed up on 300 points only and
    # its 5k row and first transform were mostly compilation).
    fit_manifold(clustered_points(4300), m.n_components, m.n_neighbors, m.min_dist, 4200, 0)
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        _, _, sample, t = fit_manifold(clustered_points(n), m.n_components, m.n_neighbors, m.min_dist,
                                       m.sample_size, m.seed)
        rows.append({"points": n, "fitted_on": len(sample), "fit_s": round(t["fit_s"], 2),
                     "transform_s": round(t["transform_s"], 2), "total_s": round(time.perf_counter() - t0, 2)})
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    cold = cold_vs_cached()
    rows = scaling([1000, 2000] if quick else [5000, 10000, 20000, 40000])
    return {
        "comparisons": [
            comparison("umap_cached_compilation_vs_cold_start", cold["ours_warm_s"], cold["ours_cold_s"], "s",
                       False, 0.5),
            comparison("umap_ours_warm_vs_plain_umap_warm", cold["ours_warm_s"], cold["plain_warm_s"], "s",
                       False, 1.0, note="plain umap caches only pynndescent's kernels; ours caches umap's too"),
        ],
        "cold_start": {k: round(v, 2) for k, v in cold.items()},
        "scaling": rows,
        "setup": {"scaling_data": "synthetic: 50-cluster Gaussian mixture, 384-d, L2-normalised",
                  "config": "manifold defaults: 8 components, 15 neighbours, sample_size 20000"},
    }
