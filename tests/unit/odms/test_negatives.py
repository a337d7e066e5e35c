"""FAISS index and hard-negative selection on small hand-built pools."""

from __future__ import annotations

import numpy as np
import pytest

from cdco_core.errors import InputError
from cdco_core.odms.negatives import build_index, search, select_negatives


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_flat_index_equals_brute_force():
    rng = np.random.default_rng(0)
    pool, queries = rng.normal(size=(300, 6)).astype(np.float32), rng.normal(size=(25, 6)).astype(np.float32)
    dist, idx = search(build_index(pool, "flat"), queries, 7)
    brute = np.linalg.norm(queries[:, None, :] - pool[None], axis=-1)  # (25, 300)
    assert np.array_equal(idx, np.argsort(brute, axis=1)[:, :7])
    assert np.allclose(dist, np.sort(brute, axis=1)[:, :7], atol=1e-4)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_most_true_neighbours(kind):
    rng = np.random.default_rng(1)
    pool, queries = rng.normal(size=(2000, 4)).astype(np.float32), rng.normal(size=(50, 4)).astype(np.float32)
    exact = search(build_index(pool, "flat"), queries, 5)[1]
    approx = search(build_index(pool, kind, ivf_nlist=16, ivf_nprobe=8, hnsw_m=16), queries, 5)[1]
    recall = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.9


def test_unknown_index_kind_is_rejected():
    with pytest.raises(InputError, match="negatives.index 'lsh' is not one of"):
        build_index(np.zeros((3, 2), np.float32), "lsh")


def _line_pool():
    """One anchor at 0; pool points at manifold positions 1..6 on a line (so nearest = lowest index)."""
    anchor_xy = np.zeros((1, 2), np.float32)
    pool_xy = np.stack([np.arange(1, 7), np.zeros(6)], axis=1).astype(np.float32)
    anchor_vec = _unit(np.array([[1.0, 0.0]]))
    # raw cosines to the anchor: 0.99, 0.5, 0.95, 0.1, 0.2, 0.3
    cos = np.array([0.99, 0.5, 0.95, 0.1, 0.2, 0.3])
    pool_vec = np.stack([cos, np.sqrt(1 - cos**2)], axis=1).astype(np.float32)
    return anchor_xy, anchor_vec, pool_xy, pool_vec


def test_fn_ceiling_skips_too_similar_candidates():
    a_xy, a_vec, p_xy, p_vec = _line_pool()
    sel = select_negatives(a_xy, a_vec, p_xy, p_vec, np.zeros(6, int), k=3, fn_ceiling=0.9)
    assert sel["index"].tolist() == [[1, 3, 4]]  # 0 (cos .99) and 2 (cos .95) skipped
    assert np.allclose(sel["cosine"], [[0.5, 0.1, 0.2]], atol=1e-5)
    assert np.allclose(sel["distance"], [[2.0, 4.0, 5.0]])


def test_per_dataset_cap_and_short_rows():
    a_xy, a_vec, p_xy, p_vec = _line_pool()
    codes = np.array([0, 0, 0, 0, 1, 1])
    sel = select_negatives(a_xy, a_vec, p_xy, p_vec, codes, k=3, fn_ceiling=1.0, per_dataset_cap=1)
    assert sel["index"].tolist() == [[0, 4, -1]]  # one from each dataset, then nothing left
    assert np.isnan(sel["distance"][0, 2]) and np.isnan(sel["cosine"][0, 2])
    sel = select_negatives(a_xy, a_vec, p_xy, p_vec, codes, k=4, fn_ceiling=0.9, per_dataset_cap=2)
    assert sel["index"].tolist() == [[1, 3, 4, 5]]


def test_random_mode_is_seeded_distinct_and_guarded():
    rng = np.random.default_rng(2)
    a_vec, p_vec = _unit(rng.normal(size=(40, 8))), _unit(rng.normal(size=(500, 8)))
    a_xy, p_xy = rng.normal(size=(40, 3)).astype(np.float32), rng.normal(size=(500, 3)).astype(np.float32)
    args = (a_xy, a_vec, p_xy, p_vec, np.zeros(500, int))
    one = select_negatives(*args, k=6, fn_ceiling=0.3, mode="random", seed=5)
    assert np.array_equal(one["index"], select_negatives(*args, k=6, fn_ceiling=0.3, mode="random", seed=5)["index"])
    assert (one["index"] >= 0).all() and all(len(set(r)) == 6 for r in one["index"])
    assert (one["cosine"] <= 0.3).all()
    near = select_negatives(*args, k=6, fn_ceiling=0.3)
    assert np.nanmean(near["distance"]) < np.nanmean(one["distance"])  # manifold mode picks closer points


def test_ivf_sizes_follow_the_pool_unless_given():
    from cdco_core.odms.negatives import ivf_sizes

    assert ivf_sizes(100_000, None, None) == (1265, 89)  # 4·sqrt(M) lists, 7% of them searched
    assert ivf_sizes(100_000, 256, 48) == (256, 48)  # given values win
    assert ivf_sizes(1_000, None, None) == (25, 2)  # at least 39 training points per list
    assert ivf_sizes(50, 64, 100) == (1, 1)
    rng = np.random.default_rng(2)
    pool = rng.normal(size=(4000, 4)).astype(np.float32)
    index = build_index(pool, "ivf")
    assert (index.nlist, index.nprobe) == ivf_sizes(4000, None, None) == (102, 7)
