"""The ODMS manifold: UMAP (cosine metric) fitted on a seeded sample of the ID+OOD union; every point mapped.

The fitted reducer is persisted with joblib (pickle underneath) so new points can be mapped later. Pickle can
run code, so :func:`load_reducer` refuses a file whose sha256 differs from the one this code recorded when it
wrote it (the digest lives in the step's ``meta.json``).
"""

from __future__ import annotations

import os
import stat
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cdco_core.errors import InputError
from cdco_core.io import atomic_path, sha256_file


def numba_cache_dir() -> Path:
    """``$NUMBA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/cdco/numba`` (``~/.cache/cdco/numba``).

    Per user and per machine, outside ``CDCO_HOME``: compiled kernels do not depend on the data, so every home
    shares them, and a data home shared with others never holds files that numba unpickles.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cdco" / "numba"


def check_private_dir(path: Path) -> None:
    """Refuse a folder another user could write: owned by someone else, or group/world-writable.

    Raises:
        InputError: names the folder, its owner and mode, and the fix.
    """
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise InputError(
            f"numba cache folder {path} (owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}) can be written by "
            f"another user, and numba unpickles its files; make it yours and private (chmod 700), or set "
            "NUMBA_CACHE_DIR to a private folder"
        )


def use_numba_cache() -> Path:
    """Point numba's on-disk compilation cache at :func:`numba_cache_dir`, created private (0700).

    Must run before numba is first imported (umap and pynndescent import it): numba reads
    ``NUMBA_CACHE_DIR`` once. Functions compiled with ``cache=True`` (most of pynndescent, part of umap)
    are then loaded from disk instead of recompiled in a new process. Numba loads its index files with
    pickle, so a folder another user can write is refused (:func:`check_private_dir`).

    Raises:
        InputError: the folder (or the ``cdco`` folder holding it) is not private to this user.
    """
    path = numba_cache_dir()
    default = not os.environ.get("NUMBA_CACHE_DIR")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"numba cache folder {path} cannot be created ({e.strerror or e}); set XDG_CACHE_HOME "
                         "or NUMBA_CACHE_DIR to a private writable folder") from None
    for folder in (path, path.parent) if default else (path,):  # ours: the folder and the cdco/ one above it
        check_private_dir(folder)
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    return path


UMAP_MODULES = ("umap.umap_", "umap.layouts", "umap.distances", "umap.utils", "umap.sparse", "umap.spectral")


def import_umap() -> Any:
    """Import umap with numba's disk cache on for all of its jitted functions; returns the module.

    pynndescent compiles with ``cache=True`` already, but most of umap's own kernels (the layout optimiser,
    the fuzzy simplicial set) do not, so every new process recompiled them (~10 s here). A numba dispatcher can
    switch its disk cache on before its first compilation (``Dispatcher.enable_caching``); doing that for
    umap's modules makes a warm process fit a small manifold in well under a second (``cdco bench manifold``).
    """
    use_numba_cache()
    import importlib

    import umap
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    for name in UMAP_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # optional submodules differ between umap versions
            continue
        for obj in vars(module).values():
            if isinstance(obj, Dispatcher) and isinstance(obj._cache, NullCache):
                obj.enable_caching()
    return umap


def sample_indices(n: int, sample_size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform sample of ``min(n, sample_size)`` rows without replacement."""
    if sample_size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=sample_size, replace=False))


def _check_rows(rows: int, n_components: int) -> None:
    """Refuse a sample UMAP cannot fit in ``n_components`` dimensions (before any work)."""
    if rows < max(n_components + 2, 4):
        raise InputError(
            f"manifold: {rows} embedded rows is too few to fit UMAP with manifold.n_components={n_components}; "
            "raise data.max_rows or lower manifold.n_components"
        )


def fit_manifold(vectors: np.ndarray, n_components: int, n_neighbors: int, min_dist: float,
                 sample_size: int, seed: int, on_phase: Callable[[int, str], None] | None = None,
                 ) -> tuple[np.ndarray, Any, np.ndarray, dict[str, float]]:
    """Fit UMAP (cosine) on a seeded sample and map every row.

    Sampled rows take their fitted coordinates (``embedding_``); the others go through ``transform``.
    ``random_state`` and ``transform_seed`` are both the seed, so the same inputs give the same coordinates
    (UMAP then runs single-threaded, which is what makes it reproducible).

    Args:
        vectors: (N, H) float32 L2-normalised embeddings.
        n_components: manifold dimension d.
        n_neighbors: UMAP's k; clipped to ``sample - 1`` for tiny corpora.
        min_dist: UMAP's minimum distance between embedded points.
        sample_size: rows UMAP is fitted on.
        seed: sampling and UMAP seed.
        on_phase: called as each of the two phases starts and when both are done: ``(0, "fit ...")``,
            ``(1, "transform ...")``, ``(2, "done")`` (a progress display: the fit is most of the time, and on
            its first call in a process most of that is numba compiling UMAP).

    Returns:
        (coords (N, d) float32, fitted reducer, sample indices, timings {"fit_s", "transform_s"}).

    Raises:
        InputError: fewer rows than UMAP can fit in ``n_components`` dimensions.
    """
    umap = import_umap()
    n = len(vectors)
    idx = sample_indices(n, sample_size, seed)
    _check_rows(len(idx), n_components)
    reducer = umap.UMAP(n_components=n_components, n_neighbors=min(n_neighbors, len(idx) - 1),
                        min_dist=min_dist, metric="cosine", random_state=seed, transform_seed=seed, n_jobs=1)
    phase = on_phase or (lambda i, what: None)
    phase(0, f"fit on {len(idx)} rows")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")  # n_jobs=1 is the point of seeding
        warnings.filterwarnings("ignore", message=".*spectral initialisation.*")
        reducer.fit(vectors[idx])
        fit_s = time.perf_counter() - t0
        coords = np.empty((n, n_components), dtype=np.float32)
        coords[idx] = reducer.embedding_
        rest = np.setdiff1d(np.arange(n), idx, assume_unique=True)
        t1 = time.perf_counter()
        phase(1, f"transform {len(rest)} rows")
        if len(rest):
            coords[rest] = reducer.transform(vectors[rest])
    phase(2, "done")
    return coords, reducer, idx, {"fit_s": fit_s, "transform_s": time.perf_counter() - t1}


def fit_manifold_apart(vectors: np.ndarray, n_components: int, n_neighbors: int, min_dist: float,
                       sample_size: int, seed: int, reducer_path: Path,
                       on_phase: Callable[[int, str], None] | None = None,
                       ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """:func:`fit_manifold` in a spawned process that also saves the reducer to ``reducer_path``.

    Why a process: numba compiles UMAP's kernels on a machine's first fit, and the compiler's memory (0.4 GB over
    the demo's manifold step) then stays in the process that compiled; umap, numba and llvmlite stay imported in it
    too. The caller (the flow's process, which goes on to train and evaluate) never imports them. The fit is the
    same call with the same seed: the coordinates equal an in-process fit's, and the saved reducer maps new points
    as that one does (a test compares both; its pickle's bytes differ from process to process either way).
    Phases reach ``on_phase`` as they happen. In a daemonic process (a Dask worker of the team stack), which may
    not start children, the fit runs in the calling process.

    Returns:
        (coords (N, d) float32, sample indices, timings {"fit_s", "transform_s"}).

    Raises:
        InputError: too few rows (checked here, before the process starts).
        RuntimeError: the process failed (its traceback in the message) or died.
    """
    import multiprocessing

    idx = sample_indices(len(vectors), sample_size, seed)
    _check_rows(len(idx), n_components)
    if multiprocessing.current_process().daemon:  # a Dask worker may not start processes: fit here, as before
        coords, reducer, idx, timings = fit_manifold(vectors, n_components, n_neighbors, min_dist, sample_size, seed,
                                                     on_phase)
        save_reducer(reducer, Path(reducer_path))
        return coords, idx, timings
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of this process's threads or imports
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_fit_in_child, name="cdco-manifold", args=(
        theirs, vectors, n_components, n_neighbors, min_dist, sample_size, seed, str(reducer_path)))
    child.start()
    theirs.close()
    try:
        while True:
            try:
                kind, value = ours.recv()
            except EOFError:
                child.join()
                raise RuntimeError(f"manifold: the fitting process died (exit code {child.exitcode})") from None
            if kind == "phase" and on_phase is not None:
                on_phase(*value)
            elif kind == "error":
                raise RuntimeError(f"manifold: the fit failed in its process:\n{value}")
            elif kind == "done":
                coords, sample, timings = value
                return coords, sample, timings
    finally:
        ours.close()
        child.join()


def _fit_in_child(conn: Any, vectors: np.ndarray, n_components: int, n_neighbors: int, min_dist: float,
                  sample_size: int, seed: int, reducer_path: str) -> None:
    """The spawned process of :func:`fit_manifold_apart`: fit, save the reducer, send the results back."""
    import traceback

    try:
        coords, reducer, idx, timings = fit_manifold(
            vectors, n_components, n_neighbors, min_dist, sample_size, seed,
            on_phase=lambda i, what: conn.send(("phase", (i, what))))
        save_reducer(reducer, Path(reducer_path))
        conn.send(("done", (coords, idx, timings)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def save_reducer(reducer: Any, path: Path) -> str:
    """Persist the fitted reducer atomically; returns its sha256 (record it: :func:`load_reducer` needs it)."""
    import joblib

    with atomic_path(path) as tmp:
        joblib.dump(reducer, tmp)
    return sha256_file(path)


def load_reducer(path: Path, expected_sha256: str) -> Any:
    """Load a reducer written by :func:`save_reducer`, only if its sha256 is the one recorded at write time.

    Raises:
        InputError: the file is missing or its digest differs (it was edited or replaced; never unpickled).
    """
    import joblib

    path = Path(path)
    if not path.exists():
        raise InputError(f"manifold reducer {path} not found; re-run `cdco step manifold`")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise InputError(
            f"manifold reducer {path} has sha256 {actual[:12]}..., expected {expected_sha256[:12]}...; "
            "refusing to unpickle a file this code did not write. Delete it and re-run `cdco step manifold`"
        )
    import_umap()
    return joblib.load(path)
