"""Top-K search over the full catalogue with FAISS, skipping already-seen items."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import faiss
import numpy as np

from lit_matching.data.item_sets import ItemSets
from lit_matching.losses.faiss_metrics import FaissMetric
from lit_matching.retrieval.validation import check_k

__all__ = [
    "EXACT",
    "build_index",
    "is_exact",
    "merge_interests",
    "overlap_at_k",
    "overlap_per_row",
    "search_top_k",
    "set_search_params",
    "to_gpu",
]

#: The index-factory string of exact (brute-force) search.
EXACT = "Flat"


def is_exact(spec: str) -> bool:
    """Whether the FAISS index-factory string ``spec`` describes exact search.

    Example:
        >>> is_exact("Flat"), is_exact("HNSW32"), is_exact("IVF1024,Flat")
        (True, False, False)
    """
    return spec.replace(" ", "") in (EXACT, "IDMap,Flat")


def build_index(
    item_vectors: np.ndarray,
    metric: FaissMetric,
    spec: str = EXACT,
    search_params: Mapping[str, float] | None = None,
    use_gpu: bool | None = None,
) -> faiss.Index:
    """A FAISS index over ``item_vectors`` whose metric ranks as the model's similarity.

    Args:
        item_vectors: ``(num_items, d)`` vectors, prepared for the metric (see
            :meth:`Similarity.prepare`).
        metric: ``"l2"`` or ``"ip"``.
        spec: A FAISS index-factory string: ``"Flat"`` (exact, ``IndexFlatL2`` /
            ``IndexFlatIP``), or approximate ones such as ``"HNSW32"``, ``"IVF1024,Flat"``,
            ``"IVF1024,PQ16"``. Indexes that need training are trained on ``item_vectors``.
        search_params: Search-time parameters, e.g. ``{"efSearch": 128}`` (HNSW) or
            ``{"nprobe": 32}`` (IVF).
        use_gpu: Move the index to the GPUs (needs faiss with GPU support); ``None`` does so
            when faiss sees a GPU, falling back to the CPU for indexes the GPU lacks (HNSW).

    Example:
        >>> index = build_index(np.eye(3, dtype=np.float32), "ip")
        >>> type(index).__name__, index.ntotal
        ('IndexFlatIP', 3)
        >>> vectors = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32)
        >>> build_index(vectors, "l2", "HNSW16", {"efSearch": 64}).hnsw.efSearch
        64
    """
    vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    if metric not in ("l2", "ip"):
        raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
    dim = vectors.shape[1]
    index: faiss.Index
    if is_exact(spec):
        index = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)
    else:
        kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        try:
            index = faiss.index_factory(dim, spec, kind)
        except RuntimeError as err:
            raise ValueError(f"FAISS cannot build index {spec!r}: {err}") from None
        if not index.is_trained:
            index.train(vectors)
    index.add(vectors)
    set_search_params(index, search_params, spec)
    return to_gpu(index, use_gpu, spec)


def set_search_params(
    index: faiss.Index, search_params: Mapping[str, float] | None, spec: str
) -> None:
    """Apply search-time parameters (e.g. ``{"nprobe": 32}``) to ``index`` built from ``spec``."""
    space = faiss.ParameterSpace()
    for name, value in (search_params or {}).items():
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError:
            raise ValueError(f"index {spec!r} has no search parameter {name!r}") from None


def to_gpu(index: faiss.Index, use_gpu: bool | None, spec: str) -> faiss.Index:
    """``index`` on all GPUs when asked (``None``: when faiss sees one), else unchanged.

    With ``use_gpu=None`` an index the GPU lacks (e.g. HNSW) stays on the CPU, with a log line.
    """
    gpus = faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0
    if not (use_gpu or (use_gpu is None and gpus > 0)):
        return index
    if gpus == 0:
        raise ValueError("use_gpu=True, but faiss sees no GPU (is faiss-gpu installed?)")
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError as err:  # e.g. HNSW has no GPU version
        if use_gpu:
            raise ValueError(f"index {spec!r} cannot move to the GPU: {err}") from None
        # Imported here: serving imports this module without Lightning.
        from pytorch_lightning.utilities import rank_zero_info

        rank_zero_info(f"lit_matching: index {spec!r} stays on the CPU ({err})")
        return index


def search_top_k(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    exclude: ItemSets | None = None,
    batch_size: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` items per query, best first, never one of the query's excluded items.

    Each batch of queries searches ``k`` plus the largest number of excluded items in the batch
    (queries are batched in order of that number), at most 100 more (``_FIRST_PASS_SPARE``); the
    few queries that lost more than that to excluded items are searched again, ``k`` plus all
    their excluded items wide, so the result is exact however many items a user has seen.
    Scores are "higher = closer": FAISS L2 distances are negated.

    Multi-interest queries ``(U, K, d)`` search each interest and merge the results per user
    with :func:`merge_interests`: the exact top ``k`` under "an item's score is its best
    interest's score".

    Args:
        index: Index built by :func:`build_index`.
        queries: ``(U, d)`` query vectors, or ``(U, K, d)`` for ``K`` interests per user,
            prepared like the index's vectors.
        k: Results per query.
        exclude: Row ``i`` lists items never returned for query ``i``.
        batch_size: Queries per FAISS call (at most; the heaviest batch takes enough of its
            neighbour's queries to stay on FAISS's matrix-product path, 2,000 at d = 64).
        progress: Called with the number of query vectors of each batch once it is searched
            (``U * K`` in all for multi-interest queries), e.g. a progress bar's ``update``.

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
    k = check_k(k)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if exclude is not None and exclude.num_rows != len(queries):
        raise ValueError(f"exclude has {exclude.num_rows} rows for {len(queries)} queries")
    if queries.ndim == 2:
        return _search_vectors(index, queries, k, exclude, batch_size, progress)
    if queries.ndim != 3:
        raise ValueError(f"queries must be (U, d) or (U, K, d), got shape {queries.shape}")
    # Multi-interest: each interest searched as a query of its own, then merged per user.
    users, interests, dim = queries.shape
    if exclude is not None:
        exclude = exclude.select(np.repeat(np.arange(users), interests))
    items, scores = _search_vectors(
        index, queries.reshape(users * interests, dim), k, exclude, batch_size, progress
    )
    return merge_interests(
        items.reshape(users, interests * k), scores.reshape(users, interests * k), k
    )


#: A first pass asks FAISS for at most this many results beyond ``k`` for excluded items (or
#: ``k`` if larger); only queries that lost more than that to exclusion are searched again.
_FIRST_PASS_SPARE = 100


def _search_vectors(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    exclude: ItemSets | None,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search_top_k` for ``(U, d)`` float32 queries, batch by batch, in two passes.

    A heavy user (hundreds of seen items) would make its batch search hundreds of results
    wide, though most of its seen items rank far below its top ``k``. So the first pass
    searches ``k + min(seen, spare)`` results; a query whose result still holds ``k`` unseen
    items (or every item it could hold) is exact, and only the others are searched again,
    ``k + seen`` wide.
    """
    items = np.full((len(queries), k), -1, dtype=np.int64)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    counts = exclude.counts() if exclude is not None else np.zeros(len(queries), dtype=np.int64)
    out = (items, scores)
    spare = max(k, _FIRST_PASS_SPARE)
    everyone = np.arange(len(queries))
    passes = (exclude, batch_size, out)
    again = _search_rows(index, queries, everyone, k, spare, counts, *passes, progress)
    if len(again):  # already counted by progress
        _search_rows(index, queries, again, k, None, counts, *passes, None)
    return items, scores


def _search_rows(
    index: faiss.Index,
    queries: np.ndarray,
    rows: np.ndarray,
    k: int,
    spare: int | None,
    counts: np.ndarray,
    exclude: ItemSets | None,
    batch_size: int,
    out: tuple[np.ndarray, np.ndarray],
    progress: Callable[[int], None] | None,
) -> np.ndarray:
    """Search ``queries[rows]`` into ``out``; the rows whose result may lack an unseen item.

    Each batch asks FAISS for ``k`` plus its largest count of excluded items, at most
    ``spare`` more (``None``: no limit, every result is then complete).
    """
    sign = -1.0 if index.metric_type == faiss.METRIC_L2 else 1.0
    # Queries in order of their number of excluded items: each batch then asks FAISS for
    # k + its own largest count, not k + the largest count of all (a heavy user would
    # otherwise widen every batch's search). Results are per query, so order cannot change them.
    by_count = rows[np.argsort(counts[rows], kind="stable")]
    incomplete = []
    for batch in _query_batches(by_count, batch_size, _blas_min_queries(queries.shape[1])):
        extra = int(counts[batch].max()) if spare is None else min(spare, counts[batch].max())
        width = min(index.ntotal, k + int(extra))
        distances, found = index.search(queries[batch], width)
        found_scores = sign * distances
        if exclude is not None:
            found, found_scores = _drop_excluded(found, found_scores, exclude, batch)
        # Complete: k unseen items found, or the search was wide enough for every exclusion.
        complete = (found >= 0).sum(1) >= k
        complete |= width >= np.minimum(index.ntotal, k + counts[batch])
        incomplete.append(batch[~complete])
        width = min(width, k)
        out[0][batch, :width] = found[:, :width]
        out[1][batch, :width] = found_scores[:, :width]
        if progress is not None:
            progress(len(batch))
    return np.concatenate([np.zeros(0, dtype=np.int64), *incomplete])


def _blas_min_queries(dim: int) -> int:
    """The fewest ``dim``-dimensional queries per call that FAISS's exact search sends to BLAS.

    FAISS computes a call's scores with one matrix product per tile only when
    ``queries * dim >= distance_compute_blas_threshold`` (128,000 in faiss 1.15: 2,000 queries
    at d = 64); smaller calls score query by query, about 4x slower per query on a CPU.
    """
    threshold = int(getattr(faiss.cvar, "distance_compute_blas_threshold", 0))
    return max(1, -(-threshold // max(dim, 1)))


def _query_batches(order: np.ndarray, batch_size: int, min_rows: int) -> list[np.ndarray]:
    """``order`` cut into consecutive batches of at most ``batch_size`` rows.

    The last batch (in :func:`search_top_k` the heaviest users', searched widest) gets at least
    ``min(min_rows, batch_size)`` rows, taken from the batch before it, so that a small
    remainder does not fall off FAISS's matrix-product path (see :func:`_blas_min_queries`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(order) == 0:
        return []
    cuts = list(range(batch_size, len(order), batch_size))
    if cuts:
        cuts[-1] = min(cuts[-1], len(order) - min(min_rows, batch_size))
    return np.split(order, cuts)


def _drop_excluded(
    found: np.ndarray, scores: np.ndarray, exclude: ItemSets, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's excluded items (and FAISS's ``-1`` fill) moved to its end as ``-1`` / ``-inf``.

    ``found[i]`` are the items FAISS found for query ``rows[i]``, best first.
    """
    drop = exclude.contains(rows[:, None], found) | (found < 0)
    # Stable sort moves dropped entries to the end and keeps the ranking of the rest.
    order = np.argsort(drop, axis=1, kind="stable")
    found = np.take_along_axis(found, order, 1)
    scores = np.take_along_axis(scores, order, 1)
    drop = np.take_along_axis(drop, order, 1)
    return np.where(drop, -1, found), np.where(drop, -np.inf, scores)


def merge_interests(items: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best distinct items of several candidate lists, best score first.

    An item found by several interests keeps its highest score. If every list is the exact
    top ``k`` of one interest, the result is the exact top ``k`` under "best interest's
    score": an item in that top ``k`` is beaten by fewer than ``k`` items under its best
    interest, so that interest's list holds it.

    Args:
        items: ``(U, M)`` candidate item indices (``-1`` = none), e.g. ``K`` top-``k`` lists
            side by side.
        scores: ``(U, M)`` their scores, higher = closer.
        k: Results per row.

    Returns:
        ``(items, scores)``, both ``(U, k)``, filled with ``-1`` / ``-inf`` where fewer than
        ``k`` distinct items exist. Ties keep the earlier column first.

    Example:
        >>> items = np.array([[4, 7, 1, 7]])       # interest 0: 4, 7; interest 1: 1, 7
        >>> scores = np.array([[0.9, 0.5, 0.8, 0.6]])
        >>> merged, best = merge_interests(items, scores, 3)
        >>> merged.tolist(), best.tolist()
        ([[4, 1, 7]], [[0.9, 0.8, 0.6]])
    """
    rows, width = items.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    items = np.take_along_axis(items, order, 1)
    scores = np.take_along_axis(scores, order, 1)
    # The first (best) occurrence of each (row, item) pair stays; later ones and -1 go.
    keys = np.arange(rows)[:, None] * (int(items.max(initial=0)) + 2) + (items + 1)
    _, first = np.unique(keys.ravel(), return_index=True)
    keep = np.zeros(rows * width, dtype=bool)
    keep[first] = True
    keep = keep.reshape(rows, width) & (items >= 0)
    # Stable: kept entries move to the front in score order.
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(keep, order, 1)
    top_items = np.where(kept, np.take_along_axis(items, order, 1), -1)
    top_scores = np.where(kept, np.take_along_axis(scores, order, 1), -np.inf)
    if top_items.shape[1] < k:  # fewer candidates than k
        pad = k - top_items.shape[1]
        top_items = np.pad(top_items, ((0, 0), (0, pad)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return top_items, top_scores


def overlap_at_k(found: np.ndarray, reference: np.ndarray, k: int) -> float:
    """Mean share of each row's reference top ``k`` that ``found``'s top ``k`` also holds.

    The recall of an approximate search against exact search ("ANN recall@k"); rows whose
    reference has fewer than ``k`` items (``-1`` fill) are measured against what they have.

    Example:
        >>> exact = np.array([[1, 2, 3], [4, 5, -1]])
        >>> round(overlap_at_k(np.array([[3, 1, 9], [5, 7, -1]]), exact, k=3), 4)  # (2/3 + 1/2) / 2
        0.5833
    """
    return float(np.mean(overlap_per_row(found, reference, k)))


def overlap_per_row(found: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Each row's share of its reference top ``k`` that ``found``'s top ``k`` also holds.

    The per-row values :func:`overlap_at_k` averages (a sharded evaluation sums them); rows
    whose reference has no item count as 1.

    Example:
        >>> exact = np.array([[1, 2, 3], [4, 5, -1]])
        >>> overlap_per_row(np.array([[3, 1, 9], [5, 7, -1]]), exact, k=3).round(4)
        array([0.6667, 0.5   ])
    """
    if len(reference) == 0:  # e.g. a shard without users
        return np.zeros(0)
    rows = np.arange(len(reference))[:, None]
    wanted = reference[:, :k]
    sets = ItemSets.from_pairs(
        np.broadcast_to(rows, wanted.shape)[wanted >= 0],
        wanted[wanted >= 0],
        len(reference),
        int(max(reference.max(), found.max()) + 1),
    )
    hits = sets.contains(rows, found[:, :k]).sum(1)
    have = sets.counts()
    return np.where(have > 0, hits / np.maximum(have, 1), 1.0)
