"""The manifold step fits UMAP in a process of its own (numba's compiler memory and umap's imports stay there):
the same coordinates and reducer bytes as a fit in this process, the phases as they happen, errors named."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cdco_core.io import sha256_file
from cdco_core.odms.manifold import fit_manifold, fit_manifold_apart, load_reducer

ARGS = {"n_components": 4, "n_neighbors": 8, "min_dist": 0.1, "sample_size": 250, "seed": 3}


def _vectors(n: int = 300, dim: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_fit_apart_equals_a_fit_here(tmp_path):
    vecs = _vectors()
    phases: list[tuple[int, str]] = []
    coords, sample, timings = fit_manifold_apart(vecs, **ARGS, reducer_path=tmp_path / "apart.joblib",
                                                 on_phase=lambda i, what: phases.append((i, what.split()[0])))
    assert phases == [(0, "fit"), (1, "transform"), (2, "done")]
    assert set(timings) == {"fit_s", "transform_s"}
    here, reducer, idx, _ = fit_manifold(vecs, **ARGS)
    assert np.array_equal(coords, here) and np.array_equal(sample, idx) and len(idx) == 250
    # the saved reducer maps new points as this process's does (its bytes differ: a pickled numba dispatcher is
    # not the same byte string in two processes, which is true of two in-process fits in two runs as well)
    new = _vectors(12, 32, seed=1)
    apart = load_reducer(tmp_path / "apart.joblib", sha256_file(tmp_path / "apart.joblib"))
    assert np.array_equal(apart.transform(new), reducer.transform(new))


def test_the_caller_never_imports_numba(tmp_path):
    script = (
        "import sys, numpy as np\n"
        "from cdco_core.odms.manifold import fit_manifold_apart\n"
        "x = np.random.default_rng(0).normal(size=(120, 16)).astype(np.float32)\n"
        "x /= np.linalg.norm(x, axis=1, keepdims=True)\n"
        f"c, _, _ = fit_manifold_apart(x, 2, 5, 0.1, 100, 0, {str(tmp_path / 'r.joblib')!r})\n"
        "print(c.shape, 'numba' in sys.modules, 'umap' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=600)
    assert out.stdout.split("\n")[0] == "(120, 2) False False", out.stderr[-2000:]
    assert (tmp_path / "r.joblib").stat().st_size > 0


def test_a_failed_fit_is_raised_with_its_traceback(tmp_path):
    vecs = _vectors()
    vecs[5, 0] = np.nan
    with pytest.raises(RuntimeError, match=r"(?s)manifold: the fit failed in its process:.*(NaN|nan)"):
        fit_manifold_apart(vecs, **ARGS, reducer_path=tmp_path / "r.joblib")
    assert not (tmp_path / "r.joblib").exists()


def _fit_in_a_daemon(path: str, out) -> None:
    x = _vectors(120, 16)
    coords, _, _ = fit_manifold_apart(x, 2, 5, 0.1, 100, 0, path)
    out.put(coords.shape)


def test_a_daemonic_process_fits_in_place(tmp_path):
    # a Dask worker is daemonic and may not start children: the fit then runs where it is called
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_fit_in_a_daemon, args=(str(tmp_path / "r.joblib"), out), daemon=True)
    p.start()
    p.join(600)
    assert p.exitcode == 0 and out.get(timeout=5) == (120, 2)
    assert (tmp_path / "r.joblib").stat().st_size > 0
