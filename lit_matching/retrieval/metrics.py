"""Top-K retrieval metrics, vectorised over a ``(users, K)`` hit matrix.

``hits[u, r]`` is True when the item ranked ``r`` (0-based) for user ``u`` is relevant, and
``num_relevant[u]`` is how many relevant items user ``u`` has in all. Every per-user function
returns one value per user; :func:`retrieval_metrics` averages them over users with at least one
relevant item.

Definitions (binary relevance, rank ``r`` counted from 1 in the formulas):

* ``recall@k = hits in top k / num_relevant``
* ``precision@k = hits in top k / k`` (always ``k``, even when fewer than ``k`` items are ranked)
* ``hit_rate@k = 1 if any hit in top k``
* ``ndcg@k = sum_{hit r <= k} 1/log2(r + 1) / sum_{r <= min(k, num_relevant)} 1/log2(r + 1)``
* ``mrr@k = 1 / (rank of the first hit)``, 0 without a hit in the top k
* ``map@k = sum_{hit r <= k} precision@r / hits in top k``, 0 without a hit in the top k.
  This is torchmetrics' ``RetrievalMAP(top_k=k)``: the mean of precision@r over the hits that
  were *found*, so it is not lowered by relevant items missing from the top k (recall is).

Catalogue-level measures over the ``(users, K)`` matrix of recommended item ids
(``-1`` = no item), pooled over all users rather than averaged per user:

* ``coverage@k = |distinct items in any user's top k| / num_items``
* ``popularity@k = mean training count of the items in the top k``, over all (user, rank) slots
  that hold an item
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from lit_matching.data.item_sets import ItemSets
from lit_matching.retrieval.validation import check_k

__all__ = [
    "METRICS",
    "MetricSums",
    "average_precision_at_k",
    "catalogue_coverage",
    "hit_matrix",
    "hit_rate_at_k",
    "mean_popularity",
    "metric_sums",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "retrieval_metrics",
]


def _top(hits: np.ndarray, k: int) -> np.ndarray:
    check_k(k)
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


def average_precision_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """Average precision at ``k``, as torchmetrics' ``RetrievalMAP(top_k=k)`` computes it.

    ``AP@k = sum_{hit r <= k} precision@r / (hits in top k)``, and 0 without a hit in the top
    ``k``. The denominator is the number of hits *found* in the top ``k``, not
    ``min(k, num_relevant)`` as in some other libraries, so ``num_relevant`` is not used (it is
    accepted for the common metric signature); missing relevant items lower recall, not AP.

    Example:
        >>> # hits at ranks 1 and 3: (1/1 + 2/3) / 2
        >>> average_precision_at_k(np.array([[True, False, True], [False, False, False]]),
        ...                        np.array([5, 1]), k=3).round(4)
        array([0.8333, 0.    ])
    """
    top = _top(hits, k)
    precision_at_rank = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    found = top.sum(1)
    return np.asarray((precision_at_rank * top).sum(1) / np.maximum(found, 1))


METRICS = {
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "hit_rate": hit_rate_at_k,
    "mrr": mrr_at_k,
    "precision": precision_at_k,
    "map": average_precision_at_k,
}


def _top_item_ids(top_items: np.ndarray, k: int) -> np.ndarray:
    """The item ids (``-1`` dropped) in the first ``k`` columns of ``top_items``, flattened."""
    check_k(k)
    top = np.asarray(top_items)
    if top.ndim != 2:
        raise ValueError(f"top_items has to be a (users, K) matrix, got shape {top.shape}")
    top = top[:, :k]
    return top[top >= 0]


def catalogue_coverage(top_items: np.ndarray, num_items: int, k: int) -> float:
    """Fraction of the catalogue recommended to at least one user in the top ``k``.

    Args:
        top_items: ``(users, K)`` recommended item ids, best first; ``-1`` means no item.
        num_items: Catalogue size; item ids have to lie in ``[0, num_items)``.
        k: Cut-off (columns past the width of ``top_items`` simply hold no item).

    Returns:
        ``|distinct items in the top k of any user| / num_items``, in ``[0, 1]``.

    Example:
        >>> catalogue_coverage(np.array([[0, 1, 3], [1, -1, 2]]), num_items=5, k=2)
        0.4
    """
    if num_items < 1:
        raise ValueError(f"num_items has to be positive, got {num_items!r}")
    items = _top_item_ids(top_items, k)
    if items.size and items.max() >= num_items:
        raise ValueError(f"item id {items.max()} is outside a catalogue of {num_items} items")
    seen = np.zeros(num_items, dtype=bool)
    seen[items] = True
    return float(seen.mean())


def mean_popularity(
    top_items: np.ndarray, item_counts: np.ndarray, k: int, normalize: bool = False
) -> float:
    """Mean training count of the recommended items, over every filled slot of the top ``k``.

    Every (user, rank) slot holding an item counts once (an item recommended to many users
    counts many times); slots with ``-1`` are ignored.

    Args:
        top_items: ``(users, K)`` recommended item ids, best first; ``-1`` means no item.
        item_counts: ``(num_items,)`` training interaction count of every catalogue item.
        k: Cut-off.
        normalize: Divide by the mean count of the whole catalogue, so 1.0 means "as popular as
            the average item" and a most-popular recommender scores well above 1.

    Returns:
        The mean count (or that ratio with ``normalize=True``); NaN when no slot holds an item
        (or, normalised, when every count is 0).

    Example:
        >>> counts = np.array([10, 0, 5, 1])
        >>> mean_popularity(np.array([[0, 2], [2, -1]]), counts, k=2)
        6.666666666666667
        >>> round(mean_popularity(np.array([[0, 2], [2, -1]]), counts, k=2, normalize=True), 3)
        1.667
    """
    counts = np.asarray(item_counts, dtype=np.float64)
    items = _top_item_ids(top_items, k)
    if items.size == 0:
        return float("nan")
    mean = float(counts[items].mean())
    if normalize:
        catalogue_mean = float(counts.mean())
        return mean / catalogue_mean if catalogue_mean > 0 else float("nan")
    return mean


def hit_matrix(top_items: np.ndarray, targets: ItemSets) -> np.ndarray:
    """``hits[i, r]``: whether ``top_items[i, r]`` is in ``targets`` row ``i`` (-1 = no item)."""
    rows = np.arange(top_items.shape[0])[:, None]
    return targets.contains(rows, top_items)


def retrieval_metrics(
    hits: np.ndarray,
    num_relevant: np.ndarray,
    ks: Iterable[int] = (10, 20, 50),
    top_items: np.ndarray | None = None,
    item_counts: np.ndarray | None = None,
    num_items: int | None = None,
) -> dict[str, float]:
    """Mean of every metric at every ``k`` over users with at least one relevant item.

    Ranks past the width of ``hits`` count as misses, so ``k`` may exceed it (e.g. a catalogue
    smaller than ``k``). Users without a relevant item are skipped (no metric is defined for
    them) and counted in ``"skipped_users"``. It is :meth:`MetricSums.metrics` of
    :func:`metric_sums`, so a sharded evaluation (sums of each shard added up) computes the same.

    Args:
        hits: ``(users, K)`` boolean hit matrix (see :func:`hit_matrix`).
        num_relevant: ``(users,)`` number of relevant items of every user.
        ks: Cut-offs.
        top_items: ``(users, K)`` recommended item ids behind ``hits`` (``-1`` = no item). With
            it, ``coverage@k`` (catalogue size from ``num_items`` or ``len(item_counts)``) and
            ``popularity@k`` (with ``item_counts``) are reported too, pooled over the evaluated
            users (those with a relevant item), not averaged per user. Alone, it adds nothing.
        item_counts: ``(num_items,)`` training count of every item.
        num_items: Catalogue size for ``coverage@k``; defaults to ``len(item_counts)``.

    Returns:
        ``{"recall@10": ..., "ndcg@10": ..., ...}``: for each k, the :data:`METRICS` in order,
        then ``coverage@k`` and ``popularity@k`` (:func:`catalogue_coverage`,
        :func:`mean_popularity` un-normalised) when computable (see ``top_items``); last
        ``"users"`` (evaluated) and ``"skipped_users"`` (without a relevant item), as floats.

    Raises:
        ValueError: If no user has a relevant item, if ``item_counts`` or ``num_items`` come
            without ``top_items``, or if ``top_items`` and ``hits`` have different rows.

    Example:
        >>> hits = np.array([[False, True, False], [True, False, False], [False, False, False]])
        >>> metrics = retrieval_metrics(hits, np.array([1, 2, 0]), ks=[1])
        >>> {n: round(v, 3) for n, v in metrics.items()}  # doctest: +NORMALIZE_WHITESPACE
        {'recall@1': 0.25, 'ndcg@1': 0.5, 'hit_rate@1': 0.5, 'mrr@1': 0.5, 'precision@1': 0.5,
         'map@1': 0.5, 'users': 2.0, 'skipped_users': 1.0}
        >>> top_items = np.array([[3, 0, 1], [0, 2, -1], [4, 4, 4]])
        >>> metrics = retrieval_metrics(hits, np.array([1, 2, 0]), [2], top_items,
        ...                             item_counts=np.array([8, 1, 0, 2, 9]))
        >>> metrics["coverage@2"], metrics["popularity@2"]  # items {0, 2, 3}; (2 + 8 + 8 + 0) / 4
        (0.6, 4.5)
    """
    return metric_sums(hits, num_relevant, ks, top_items, item_counts, num_items).metrics()


#: ``best_rank`` of an item no evaluated user was recommended.
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class MetricSums:
    """What :func:`retrieval_metrics` averages, kept as sums: they add up over disjoint users.

    A sharded evaluation computes one per shard of the users, adds the ``sums`` of all shards
    and takes the element-wise minimum of their ``best_rank`` (e.g. with a distributed
    all-reduce, see :mod:`lit_matching.retrieval.sharding`); :meth:`metrics` then gives the
    metrics of all users together. Popularity sums integer counts and coverage counts items,
    so those two are exact; the per-user means differ from one process's only by the order
    of the float64 additions.

    Attributes:
        ks: The cut-offs.
        sums: Float64 totals over the evaluated users (those with a relevant item), in this
            order: per ``k``, every :data:`METRICS` value summed over users (``"recall@10"``
            ...), then with item counts ``"popularity@k"`` (training counts summed over the
            filled slots of the top ``k``) and ``"slots@k"`` (those slots); last ``"users"``
            and ``"skipped_users"``.
        best_rank: With a catalogue size, ``(num_items,)`` int64: the best 0-based rank at which
            any evaluated user got each item (the int64 maximum where none did); the item is
            in someone's top ``k`` when it is below ``k``. ``None`` without a catalogue size.

    Example:
        >>> hits = np.array([[False, True], [True, False]])
        >>> top = np.array([[2, 0], [0, 1]])
        >>> first = metric_sums(hits[:1], np.array([1]), [1, 2], top[:1], num_items=4)
        >>> second = metric_sums(hits[1:], np.array([1]), [1, 2], top[1:], num_items=4)
        >>> both = MetricSums(first.ks, {n: first.sums[n] + second.sums[n] for n in first.sums},
        ...                   np.minimum(first.best_rank, second.best_rank))
        >>> both.metrics() == retrieval_metrics(hits, np.array([1, 1]), [1, 2], top, num_items=4)
        True
    """

    ks: tuple[int, ...]
    sums: dict[str, float]
    best_rank: np.ndarray | None = None

    def metrics(self) -> dict[str, float]:
        """The metrics of :func:`retrieval_metrics` (same names, same order).

        Raises:
            ValueError: If no user has a relevant item.
        """
        users = self.sums["users"]
        if users == 0:
            raise ValueError("no user has a relevant item: nothing to evaluate")
        result = {}
        for k in self.ks:
            for name in METRICS:
                result[f"{name}@{k}"] = self.sums[f"{name}@{k}"] / users
            if self.best_rank is not None:
                result[f"coverage@{k}"] = int((self.best_rank < k).sum()) / len(self.best_rank)
            if f"popularity@{k}" in self.sums:
                slots = self.sums[f"slots@{k}"]
                popularity = self.sums[f"popularity@{k}"] / slots if slots else float("nan")
                result[f"popularity@{k}"] = popularity
        return result | {"users": users, "skipped_users": self.sums["skipped_users"]}


def metric_sums(
    hits: np.ndarray,
    num_relevant: np.ndarray,
    ks: Iterable[int] = (10, 20, 50),
    top_items: np.ndarray | None = None,
    item_counts: np.ndarray | None = None,
    num_items: int | None = None,
) -> MetricSums:
    """The :class:`MetricSums` of some users (arguments as :func:`retrieval_metrics`).

    Unlike :func:`retrieval_metrics` it accepts users none of whom has a relevant item (a
    shard may hold none): the error comes from :meth:`MetricSums.metrics` once all are summed.
    """
    ks = tuple(ks)
    hits, num_relevant, top_items, num_items, skipped = _evaluated_users(
        hits, num_relevant, top_items, item_counts, num_items
    )
    sums = {}
    for k in ks:
        padded = np.pad(hits, ((0, 0), (0, max(0, k - hits.shape[1]))))  # misses past the end
        for name, metric in METRICS.items():
            sums[f"{name}@{k}"] = float(metric(padded, num_relevant, k).sum())
        if top_items is not None and item_counts is not None:
            items = _top_item_ids(top_items, k)
            sums[f"popularity@{k}"] = float(np.asarray(item_counts, np.float64)[items].sum())
            sums[f"slots@{k}"] = float(items.size)
    sums |= {"users": float(hits.shape[0]), "skipped_users": float(skipped)}
    best_rank = None
    if top_items is not None and num_items is not None:
        best_rank = _best_rank(top_items, num_items, max(ks))
    return MetricSums(ks, sums, best_rank)


def _best_rank(top_items: np.ndarray, num_items: int, k: int) -> np.ndarray:
    """Per item, the best rank (0-based, within the first ``k``) any row has it at."""
    catalogue_coverage(top_items, num_items, k)  # the checks of ids and catalogue size
    best = np.full(num_items, _NEVER, dtype=np.int64)
    for rank in reversed(range(min(k, top_items.shape[1]))):  # better ranks overwrite
        items = top_items[:, rank]
        best[items[items >= 0]] = rank
    return best


def _evaluated_users(
    hits: np.ndarray,
    num_relevant: np.ndarray,
    top_items: np.ndarray | None,
    item_counts: np.ndarray | None,
    num_items: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int | None, int]:
    """The rows of the users with a relevant item, the catalogue size, the users skipped."""
    num_relevant = np.asarray(num_relevant)
    hits = np.asarray(hits, dtype=bool)
    if top_items is None and (item_counts is not None or num_items is not None):
        raise ValueError("item_counts and num_items need top_items")
    if num_items is None and item_counts is not None:
        num_items = len(item_counts)
    keep = num_relevant > 0
    if top_items is not None:
        top_items = np.asarray(top_items)
        if top_items.shape[0] != hits.shape[0]:
            raise ValueError(
                f"top_items has {top_items.shape[0]} rows but hits has {hits.shape[0]}"
            )
        top_items = top_items[keep]
    return hits[keep], num_relevant[keep], top_items, num_items, int((~keep).sum())
