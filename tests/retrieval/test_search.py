import faiss
import numpy as np
import pytest
import torch

from lit_matching.data.item_sets import ItemSets
from lit_matching.losses.similarity import get_similarity
from lit_matching.retrieval.search import (
    _blas_min_queries,
    _query_batches,
    build_index,
    search_top_k,
)


def brute_force_top_k(scores: np.ndarray, exclude: list[set[int]], k: int) -> np.ndarray:
    out = np.full((len(scores), k), -1)
    for u, row in enumerate(scores):
        ranked = [i for i in np.argsort(-row, kind="stable") if i not in exclude[u]]
        out[u, : min(k, len(ranked))] = ranked[:k]
    return out


@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean"])
def test_search_equals_brute_force_with_exclusion(name):
    rng = np.random.default_rng(0)
    sim = get_similarity(name)
    users = torch.from_numpy(rng.normal(size=(23, 8)))
    items = torch.from_numpy(rng.normal(size=(40, 8)))
    # one user has seen nearly everything: only 3 items remain for k = 5
    exclude = [set(rng.choice(40, size=rng.integers(0, 15), replace=False)) for _ in range(23)]
    exclude[4] = set(range(37))
    rows = np.concatenate([[u] * len(e) for u, e in enumerate(exclude)]).astype(int)
    cols = np.concatenate([sorted(e) for e in exclude]).astype(int)
    seen = ItemSets.from_pairs(rows, cols, 23, 40)
    index = build_index(sim.prepare(items).float().numpy(), sim.faiss_metric)
    found, scores = search_top_k(index, sim.prepare(users).float().numpy(), 5, seen, batch_size=7)
    expected = brute_force_top_k(sim.matrix(users, items).numpy(), exclude, 5)
    np.testing.assert_array_equal(found, expected)
    assert found[4].tolist()[3:] == [-1, -1] and np.isinf(scores[4, 3:]).all()
    assert not seen.contains(np.arange(23)[:, None], found).any()


@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean"])
def test_search_ranks_a_zero_item_as_training(name):
    # An all-zero item (e.g. an embedding row that never trained) must land exactly where the
    # training score puts it: for cosine F.normalize(0) = 0 scores 0, not "cosine 0.5" as an
    # L2 index on normalised vectors ranks it.
    rng = np.random.default_rng(5)
    sim = get_similarity(name)
    users = torch.from_numpy(rng.normal(size=(30, 8)))
    items = torch.from_numpy(rng.normal(size=(25, 8)))
    items[17] = 0.0
    index = build_index(sim.prepare(items).float().numpy(), sim.faiss_metric)
    found, scores = search_top_k(index, sim.prepare(users).float().numpy(), 25)
    training = sim.matrix(users, items).numpy()
    position = np.argmax(found == 17, axis=1)  # 0-based rank in the search result
    np.testing.assert_array_equal(position, (training > training[:, [17]]).sum(1))
    # The scores are the training scores, best first (cosine: the cosine itself).
    np.testing.assert_allclose(scores, -np.sort(-training, axis=1), atol=1e-4)


@pytest.mark.parametrize("shape", [(0, 3), (0, 2, 3)])
def test_search_without_queries_returns_empty_results(shape):
    index = build_index(np.eye(3, dtype=np.float32), "ip")
    exclude = ItemSets.from_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), 0, 3)
    for seen in (None, exclude):
        items, scores = search_top_k(index, np.zeros(shape, np.float32), 2, seen)
        assert items.shape == scores.shape == (0, 2)
        assert (items.dtype, scores.dtype) == (np.int64, np.float32)


def test_query_batches_cover_every_query_and_keep_the_last_batch_large():
    # Gowalla's 29,858 users in batches of 4,096: the 1,186-query remainder would fall below
    # FAISS's matrix-product threshold (2,000 queries at d = 64), so it takes 814 more.
    batches = _query_batches(np.arange(29_858), 4096, 2000)
    assert np.concatenate(batches).tolist() == list(range(29_858))
    assert [len(b) for b in batches] == [4096] * 6 + [3282, 2000]
    sizes = {
        (10, 4, 3): [4, 3, 3],
        (10, 4, 9): [4, 2, 4],  # never more than batch_size
        (8, 4, 9): [4, 4],
        (3, 4, 9): [3],
        (0, 4, 9): [],
    }
    for (n, batch_size, min_rows), expected in sizes.items():
        got = _query_batches(np.arange(n), batch_size, min_rows)
        assert [len(b) for b in got] == expected
        assert np.concatenate([np.zeros(0, int), *got]).tolist() == list(range(n))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        _query_batches(np.arange(3), 0, 1)


def test_blas_min_queries_is_the_threshold_of_faiss():
    threshold = faiss.cvar.distance_compute_blas_threshold
    for dim in (8, 64, 100):
        n = _blas_min_queries(dim)
        assert n * dim >= threshold and (n == 1 or (n - 1) * dim < threshold)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_second_pass_completes_users_whose_seen_items_fill_the_first_pass(metric, monkeypatch):
    # Trained embeddings rank a user's seen items high: with a first pass only k + 5 wide,
    # users with more seen items among their best lose too many results and must be searched
    # again, k + seen wide. The result must still equal brute force.
    import lit_matching.retrieval.search as search

    rng = np.random.default_rng(3)
    users = rng.normal(size=(60, 6)).astype(np.float32)
    items = rng.normal(size=(90, 6)).astype(np.float32)
    scores = users @ items.T if metric == "ip" else -((users[:, None] - items) ** 2).sum(-1)
    # Each user has seen its best 0..40 items and a few random ones.
    exclude = [
        set(np.argsort(-row)[: rng.integers(0, 41)]) | set(rng.choice(90, 3)) for row in scores
    ]
    rows = np.concatenate([[u] * len(e) for u, e in enumerate(exclude)]).astype(int)
    cols = np.concatenate([sorted(e) for e in exclude]).astype(int)
    seen = ItemSets.from_pairs(rows, cols, 60, 90)
    spares = []

    def spy(*args, **kwargs):
        spares.append((args[4], len(args[2])))
        return real(*args, **kwargs)

    real = search._search_rows
    monkeypatch.setattr(search, "_FIRST_PASS_SPARE", 0)  # spare = k = 5
    monkeypatch.setattr(search, "_search_rows", spy)
    found, _ = search_top_k(build_index(items, metric), users, 5, seen, batch_size=16)
    np.testing.assert_array_equal(found, brute_force_top_k(scores, exclude, 5))
    (first, all_rows), (second, again) = spares
    assert (first, all_rows, second) == (5, 60, None) and 0 < again < 60
