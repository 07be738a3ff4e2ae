import math

import numpy as np
import pytest

from lit_matching.data.item_sets import ItemSets
from lit_matching.retrieval.metrics import hit_matrix, retrieval_metrics


def loop_metrics(ranked: list[list[int]], relevant: list[set[int]], k: int) -> dict[str, float]:
    """Slow, obvious reference over ranked lists and relevant sets."""
    sums = {"recall": 0.0, "ndcg": 0.0, "hit_rate": 0.0, "mrr": 0.0, "precision": 0.0}
    users = 0
    for items, rel in zip(ranked, relevant, strict=True):
        if not rel:
            continue
        users += 1
        top = items[:k]
        found = [item in rel for item in top]
        sums["recall"] += sum(found) / len(rel)
        sums["precision"] += sum(found) / k
        sums["hit_rate"] += float(any(found))
        dcg = sum(1 / math.log2(r + 2) for r, f in enumerate(found) if f)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))))
        sums["ndcg"] += dcg / idcg
        sums["mrr"] += next((1 / (r + 1) for r, f in enumerate(found) if f), 0.0)
    return {f"{name}@{k}": value / users for name, value in sums.items()}


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_loop_reference(seed):
    rng = np.random.default_rng(seed)
    num_users, num_items, width = 30, 25, 12
    ranked = np.stack([rng.permutation(num_items)[:width] for _ in range(num_users)])
    ranked[rng.random(ranked.shape) < 0.05] = -1  # some short lists (no item)
    relevant = [
        set(rng.choice(num_items, size=rng.integers(0, 6), replace=False).tolist())
        for _ in range(num_users)
    ]
    rows = np.concatenate([[u] * len(r) for u, r in enumerate(relevant)]).astype(int)
    items = np.concatenate([sorted(r) for r in relevant]).astype(int)
    targets = ItemSets.from_pairs(rows, items, num_users, num_items)
    hits = hit_matrix(ranked, targets)
    ks = [1, 5, 12, 20]  # 20 > width: ranks past the list are misses
    got = retrieval_metrics(hits, targets.counts(), ks)
    for k in ks:
        expected = loop_metrics(ranked.tolist(), relevant, k)
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-12), name


def test_hit_matrix_ignores_missing_results():
    targets = ItemSets.from_pairs(np.array([0]), np.array([0]), 1, 3)
    assert hit_matrix(np.array([[-1, 0]]), targets).tolist() == [[False, True]]


def test_users_without_relevant_items_are_skipped():
    hits = np.array([[True], [False]])
    assert retrieval_metrics(hits, np.array([1, 0]), [1])["recall@1"] == 1.0
    with pytest.raises(ValueError, match="no user has a relevant item"):
        retrieval_metrics(hits, np.array([0, 0]), [1])


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k has to be a positive integer"):
        retrieval_metrics(np.array([[True]]), np.array([1]), [0])
