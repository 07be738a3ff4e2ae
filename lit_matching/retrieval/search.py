"""Exact top-K search over the full catalogue with FAISS, skipping already-seen items."""

from __future__ import annotations

import faiss
import numpy as np

from lit_matching.data.item_sets import ItemSets
from lit_matching.similarity import FaissMetric

__all__ = ["build_index", "search_top_k"]


def build_index(item_vectors: np.ndarray, metric: FaissMetric) -> faiss.Index:
    """An exact FAISS index over ``item_vectors``: ``IndexFlatL2`` or ``IndexFlatIP``.

    Vectors must already be prepared for the metric (see :meth:`Similarity.prepare`).

    Example:
        >>> index = build_index(np.eye(3, dtype=np.float32), "ip")
        >>> type(index).__name__, index.ntotal
        ('IndexFlatIP', 3)
    """
    vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    index: faiss.Index
    if metric == "l2":
        index = faiss.IndexFlatL2(vectors.shape[1])
    elif metric == "ip":
        index = faiss.IndexFlatIP(vectors.shape[1])
    else:
        raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
    index.add(vectors)
    return index


def search_top_k(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    exclude: ItemSets | None = None,
    batch_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` items per query, best first, never one of the query's excluded items.

    Each batch of queries searches ``k`` plus the largest number of excluded items in the batch,
    so the result is exact however many items a user has seen. Scores are "higher = closer":
    FAISS L2 distances are negated.

    Args:
        index: Index built by :func:`build_index`.
        queries: ``(U, d)`` query vectors, prepared like the index's vectors.
        k: Results per query.
        exclude: Row ``i`` lists items never returned for query ``i``.
        batch_size: Queries per FAISS call.

    Returns:
        ``(items, scores)``, both ``(U, k)``; where fewer than ``k`` items remain, the tail is
        filled with item ``-1`` and score ``-inf``.

    Example:
        >>> index = build_index(np.array([[1.0], [2.0], [3.0]], dtype=np.float32), "ip")
        >>> seen = ItemSets.from_pairs(np.array([0]), np.array([2]), 1, 3)
        >>> items, scores = search_top_k(index, np.array([[1.0]], dtype=np.float32), 3, seen)
        >>> items.tolist(), scores.tolist()
        ([[1, 0, -1]], [[2.0, 1.0, -inf]])
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k has to be a positive integer, got {k!r}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if exclude is not None and exclude.num_rows != len(queries):
        raise ValueError(f"exclude has {exclude.num_rows} rows for {len(queries)} queries")
    sign = -1.0 if index.metric_type == faiss.METRIC_L2 else 1.0
    items = np.full((len(queries), k), -1, dtype=np.int64)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for start in range(0, len(queries), batch_size):
        stop = min(start + batch_size, len(queries))
        extra = int(exclude.counts()[start:stop].max()) if exclude is not None else 0
        width = min(index.ntotal, k + extra)
        distances, found = index.search(queries[start:stop], width)
        found_scores = sign * distances
        if exclude is not None:
            rows = np.arange(start, stop)[:, None]
            drop = exclude.contains(rows, found) | (found < 0)
            # Stable sort moves dropped entries to the end and keeps the ranking of the rest.
            order = np.argsort(drop, axis=1, kind="stable")
            found = np.take_along_axis(found, order, 1)
            found_scores = np.take_along_axis(found_scores, order, 1)
            drop = np.take_along_axis(drop, order, 1)
            found = np.where(drop, -1, found)
            found_scores = np.where(drop, -np.inf, found_scores)
        width = min(width, k)
        items[start:stop, :width] = found[:, :width]
        scores[start:stop, :width] = found_scores[:, :width]
    return items, scores
