"""Top-K retrieval metrics, vectorised over a ``(users, K)`` hit matrix.

``hits[u, r]`` is True when the item ranked ``r`` (0-based) for user ``u`` is relevant, and
``num_relevant[u]`` is how many relevant items user ``u`` has in all. Every function returns
one value per user; :func:`retrieval_metrics` averages them over users with at least one
relevant item.

Definitions (binary relevance, rank ``r`` counted from 1 in the formulas):

* ``recall@k = hits in top k / num_relevant``
* ``precision@k = hits in top k / k``
* ``hit_rate@k = 1 if any hit in top k``
* ``ndcg@k = sum_{hit r <= k} 1/log2(r + 1) / sum_{r <= min(k, num_relevant)} 1/log2(r + 1)``
* ``mrr@k = 1 / (rank of the first hit)``, 0 without a hit in the top k
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lit_matching.data.item_sets import ItemSets

__all__ = [
    "METRICS",
    "hit_matrix",
    "hit_rate_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "retrieval_metrics",
]


def _top(hits: np.ndarray, k: int) -> np.ndarray:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k has to be a positive integer, got {k!r}")
    return np.asarray(hits, dtype=bool)[:, :k]


def recall_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """Fraction of each user's relevant items found in the top ``k``.

    Example:
        >>> recall_at_k(np.array([[True, False, True]]), np.array([4]), k=3)
        array([0.5])
    """
    return _top(hits, k).sum(1) / np.maximum(num_relevant, 1)


def precision_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """Fraction of the top ``k`` that is relevant (the denominator is always ``k``).

    Example:
        >>> precision_at_k(np.array([[True, False, True]]), np.array([4]), k=2)
        array([0.5])
    """
    return _top(hits, k).sum(1) / k


def hit_rate_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """1 where any relevant item is in the top ``k``, else 0.

    Example:
        >>> hit_rate_at_k(np.array([[False, True], [False, False]]), np.array([1, 1]), k=2)
        array([1., 0.])
    """
    return np.asarray(_top(hits, k).any(1), dtype=np.float64)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """Normalised discounted cumulative gain with binary gains.

    The ideal DCG places ``min(k, num_relevant)`` relevant items at the top.

    Example:
        >>> ndcg_at_k(np.array([[False, True]]), np.array([1]), k=2).round(4)
        array([0.6309])
    """
    top = _top(hits, k)
    discounts = _discounts(k)
    dcg = (top * discounts[: top.shape[1]]).sum(1)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    return np.asarray(dcg / ideal[np.clip(num_relevant, 1, k)])


def mrr_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """Reciprocal rank of the first relevant item in the top ``k`` (0 without one).

    Example:
        >>> mrr_at_k(np.array([[False, False, True], [False, False, False]]),
        ...          np.array([1, 1]), k=3).round(4)
        array([0.3333, 0.    ])
    """
    top = _top(hits, k)
    first = top.argmax(1)
    return np.where(top.any(1), 1.0 / (first + 1), 0.0)


METRICS = {
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "hit_rate": hit_rate_at_k,
    "mrr": mrr_at_k,
    "precision": precision_at_k,
}


def hit_matrix(top_items: np.ndarray, targets: ItemSets) -> np.ndarray:
    """``hits[i, r]``: whether ``top_items[i, r]`` is in ``targets`` row ``i`` (-1 = no item)."""
    rows = np.arange(top_items.shape[0])[:, None]
    return targets.contains(rows, top_items)


def retrieval_metrics(
    hits: np.ndarray, num_relevant: np.ndarray, ks: Iterable[int] = (10, 20, 50)
) -> dict[str, float]:
    """Mean of every metric at every ``k`` over users with at least one relevant item.

    Ranks past the width of ``hits`` count as misses, so ``k`` may exceed it (e.g. a catalogue
    smaller than ``k``).

    Returns:
        ``{"recall@10": ..., "ndcg@10": ..., ...}`` in the order of :data:`METRICS`, for each k.

    Example:
        >>> hits = np.array([[False, True, False], [True, False, False]])
        >>> metrics = retrieval_metrics(hits, np.array([1, 2]), ks=[1])
        >>> {name: round(value, 3) for name, value in metrics.items()}
        {'recall@1': 0.25, 'ndcg@1': 0.5, 'hit_rate@1': 0.5, 'mrr@1': 0.5, 'precision@1': 0.5}
    """
    num_relevant = np.asarray(num_relevant)
    keep = num_relevant > 0
    hits, num_relevant = np.asarray(hits, dtype=bool)[keep], num_relevant[keep]
    if hits.shape[0] == 0:
        raise ValueError("no user has a relevant item: nothing to evaluate")
    result = {}
    for k in ks:
        padded = hits
        if k > hits.shape[1]:
            padded = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))
        for name, metric in METRICS.items():
            result[f"{name}@{k}"] = float(metric(padded, num_relevant, k).mean())
    return result
