"""Hard negatives: FAISS over the OOD pool's manifold coordinates, with a false-negative guard and a per-dataset cap.

For anchor a with manifold point u_a and raw embedding e_a, candidate OOD points p are visited in order of
manifold distance ``d(a, p) = ||u_a - u_p||_2``; p is kept when

    cos(e_a, e_p) = e_a . e_p <= fn_ceiling          (false-negative guard: too similar = likely same meaning)
    count of kept negatives from p's dataset < cap   (per-dataset cap, when configured)

until k are kept. Candidates are fetched in growing rounds (4k, 16k, ... up to ``max_candidates``); an anchor
that still has fewer than k after that keeps what it has (the step reports how many are short).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cdco_core.errors import InputError

ANCHOR_CHUNK = 2048  # anchors per vectorised filter pass: bounds the (A, K, H) gather to ~100 MB


IVF_LISTS_PER_SQRT = 4  # ivf_nlist None: 4·sqrt(M) lists, FAISS's rule of thumb for IVF-Flat
# ivf_nprobe None: this share of the lists searched. 7% keeps recall@10 at 0.966 on 100k standard-normal 16-d
# points (the worst case; 1.000 clustered, 0.998 on real manifold coordinates): bench/README.md, "negatives"
IVF_PROBE_FRACTION = 0.07
IVF_TRAIN_POINTS_PER_LIST = 40  # k-means sample per list (FAISS's minimum is 39): more costs build time, not recall
IVF_KMEANS_ITERATIONS = 5  # coarse lists only need to be roughly balanced (10 gave the same recall, twice the build)


def ivf_sizes(m: int, nlist: int | None, nprobe: int | None) -> tuple[int, int]:
    """(nlist, nprobe) for a pool of ``m`` points: given values, or the ``None`` defaults above; nlist clipped to
    ``m // 39`` (every list trains on FAISS's minimum of 39 points), nprobe to nlist."""
    lists = nlist if nlist is not None else round(IVF_LISTS_PER_SQRT * float(np.sqrt(m)))
    lists = max(1, min(lists, m // 39))
    probe = nprobe if nprobe is not None else round(IVF_PROBE_FRACTION * lists)
    return lists, max(1, min(probe, lists))


def build_index(points: np.ndarray, kind: str = "flat", ivf_nlist: int | None = None, ivf_nprobe: int | None = None,
                hnsw_m: int = 32, seed: int = 0) -> Any:
    """A FAISS L2 index over ``points`` (M, d).

    Args:
        points: (M, d) manifold coordinates of the OOD pool.
        kind: "flat" (exact), "ivf" (inverted lists; see :func:`ivf_sizes`; the coarse k-means runs
            ``IVF_KMEANS_ITERATIONS`` iterations on ``IVF_TRAIN_POINTS_PER_LIST`` points per list, so the build
            costs about as much as a fraction of one exact search), or "hnsw" (graph, ``M=hnsw_m``).
        ivf_nlist, ivf_nprobe: None = derived from the pool size (:func:`ivf_sizes`).
        seed: seed of the IVF k-means.

    Raises:
        InputError: unknown kind or empty pool.
    """
    import faiss

    x = np.ascontiguousarray(points, dtype=np.float32)
    m, d = x.shape
    if m == 0:
        raise InputError("negatives: the OOD pool has no points to index")
    if kind == "flat":
        index = faiss.IndexFlatL2(d)
    elif kind == "ivf":
        nlist, nprobe = ivf_sizes(m, ivf_nlist, ivf_nprobe)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.cp.seed = seed
        index.cp.niter = IVF_KMEANS_ITERATIONS
        index.cp.max_points_per_centroid = IVF_TRAIN_POINTS_PER_LIST
        index.train(x)
        index.nprobe = nprobe
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m)
        index.hnsw.efConstruction = max(40, 2 * hnsw_m)
    else:
        raise InputError(f"negatives.index {kind!r} is not one of: flat, ivf, hnsw")
    index.add(x)
    return index


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest pool points per query: (distances (A, k) Euclidean, not squared; indices (A, k), -1 = none)."""
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = max(64, 2 * k)  # efSearch >= k, with headroom for recall
    d2, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return np.sqrt(np.maximum(d2, 0.0)), idx


def filter_candidates(cand: np.ndarray, anchor_vecs: np.ndarray, pool_vecs: np.ndarray, pool_codes: np.ndarray,
                      k: int, fn_ceiling: float, per_dataset_cap: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Apply the false-negative guard and the per-dataset cap to ordered candidates; keep the first k.

    Args:
        cand: (A, K) pool indices in visiting order, -1 for "no candidate".
        anchor_vecs: (A, H) L2-normalised raw embeddings of the anchors.
        pool_vecs: (M, H) L2-normalised raw embeddings of the pool.
        pool_codes: (M,) dataset code of each pool point.

    Returns:
        (positions (A, k) into ``cand``'s columns, kept mask (A, k)); a row may keep fewer than k.
    """
    valid = cand >= 0  # (A, K)
    safe = np.where(valid, cand, 0)
    cos = np.einsum("ah,akh->ak", anchor_vecs, pool_vecs[safe])  # (A, K) raw cosine
    valid &= cos <= fn_ceiling
    if per_dataset_cap is not None:
        codes = pool_codes[safe]  # (A, K)
        seen = np.zeros(cand.shape, dtype=np.int64)
        for code in np.unique(codes[valid]):
            hit = valid & (codes == code)
            seen[hit] = np.cumsum(hit, axis=1)[hit]  # 1-based count of this dataset so far in the row
        valid &= seen <= per_dataset_cap
    keep = valid & (np.cumsum(valid, axis=1) <= k)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept positions first, in visiting order
    return order, np.take_along_axis(keep, order, axis=1)


def select_negatives(anchor_coords: np.ndarray, anchor_vecs: np.ndarray, pool_coords: np.ndarray,
                     pool_vecs: np.ndarray, pool_codes: np.ndarray, k: int, fn_ceiling: float,
                     per_dataset_cap: int | None = None, index: Any = None, mode: str = "manifold",
                     seed: int = 0, max_candidates: int = 1024) -> dict[str, np.ndarray]:
    """Pick up to k OOD negatives per anchor (see the module docstring for the rule).

    Args:
        anchor_coords: (A, d) anchors' manifold coordinates.
        anchor_vecs: (A, H) anchors' raw embeddings (unit norm).
        pool_coords: (M, d) pool's manifold coordinates.
        pool_vecs: (M, H) pool's raw embeddings (unit norm).
        pool_codes: (M,) integer dataset code per pool point (for the cap).
        k: negatives per anchor.
        fn_ceiling: largest raw cosine a negative may have.
        per_dataset_cap: at most this many negatives from one OOD dataset per anchor; None = no cap.
        index: FAISS index over ``pool_coords`` (built flat when None); unused in random mode.
        mode: "manifold" (nearest first) or "random" (uniform draws, same guard and cap: the ablation).
        seed: seed of the random mode.
        max_candidates: most candidates inspected per anchor.

    Returns:
        {"index": (A, k) pool indices, -1 where fewer than k passed, "distance": (A, k) manifold distances,
        "cosine": (A, k) raw cosines} (NaN where index is -1).
    """
    if mode not in {"manifold", "random"}:
        raise InputError(f"negatives.mode {mode!r} is not one of: manifold, random")
    a, m = len(anchor_coords), len(pool_coords)
    if m == 0:
        raise InputError("negatives: the OOD pool is empty")
    out_idx = np.full((a, k), -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if mode == "manifold" and index is None:
        index = build_index(pool_coords)
    limit = min(m, max(max_candidates, k))
    pending = np.arange(a)
    n_cand = min(limit, max(4 * k, k + 16))
    while len(pending):
        short = []
        for chunk in np.array_split(pending, max(1, -(-len(pending) // ANCHOR_CHUNK))):
            if mode == "manifold":
                cand = search(index, anchor_coords[chunk], n_cand)[1]  # (C, K)
            else:  # draws with replacement; repeats are dropped so every kept negative is distinct
                cand = rng.integers(0, m, size=(len(chunk), n_cand))
                cand = np.where(_first_occurrence(cand), cand, -1)
            pos, kept = filter_candidates(cand, anchor_vecs[chunk], pool_vecs, pool_codes, k, fn_ceiling,
                                          per_dataset_cap)
            out_idx[chunk] = np.where(kept, np.take_along_axis(cand, pos, axis=1), -1)
            short.append(chunk[kept.sum(axis=1) < k])
        pending = np.concatenate(short)
        if n_cand >= limit:
            break
        n_cand = min(limit, n_cand * 4)
    return {"index": out_idx, **pair_measures(out_idx, anchor_coords, anchor_vecs, pool_coords, pool_vecs)}


def _first_occurrence(cand: np.ndarray) -> np.ndarray:
    """(A, K) mask: True where the value has not appeared earlier in its row."""
    order = np.argsort(cand, axis=1, kind="stable")
    sorted_vals = np.take_along_axis(cand, order, axis=1)
    first_sorted = np.ones_like(sorted_vals, dtype=bool)
    first_sorted[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    mask = np.empty_like(first_sorted)
    np.put_along_axis(mask, order, first_sorted, axis=1)
    return mask


def pair_measures(idx: np.ndarray, anchor_coords: np.ndarray, anchor_vecs: np.ndarray,
                  pool_coords: np.ndarray, pool_vecs: np.ndarray) -> dict[str, np.ndarray]:
    """Manifold distance and raw cosine of every (anchor, negative) pair; NaN where idx is -1."""
    safe = np.where(idx >= 0, idx, 0)
    dist = np.empty(idx.shape, dtype=np.float32)
    cos = np.empty(idx.shape, dtype=np.float32)
    for rows in np.array_split(np.arange(len(idx)), max(1, -(-len(idx) // ANCHOR_CHUNK))):
        diff = anchor_coords[rows, None, :] - pool_coords[safe[rows]]  # (C, k, d)
        dist[rows] = np.sqrt((diff * diff).sum(-1))
        cos[rows] = np.einsum("ah,akh->ak", anchor_vecs[rows], pool_vecs[safe[rows]])
    dist[idx < 0] = np.nan
    cos[idx < 0] = np.nan
    return {"distance": dist, "cosine": cos}
