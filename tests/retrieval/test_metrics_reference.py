"""Our vectorised metrics against torchmetrics' retrieval metrics, and slow loop references."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.retrieval import (
    RetrievalHitRate,
    RetrievalMAP,
    RetrievalMRR,
    RetrievalNormalizedDCG,
    RetrievalPrecision,
    RetrievalRecall,
)

from lit_matching.data.item_sets import ItemSets
from lit_matching.retrieval.metrics import (
    METRICS,
    catalogue_coverage,
    hit_matrix,
    mean_popularity,
    retrieval_metrics,
)

# Every name of METRICS has to have its torchmetrics counterpart here (checked below).
TORCHMETRICS = {
    "recall": RetrievalRecall,
    "ndcg": RetrievalNormalizedDCG,
    "hit_rate": RetrievalHitRate,
    "mrr": RetrievalMRR,
    # adaptive_k=False (the default): precision@k divides by k even when the catalogue has
    # fewer than k items, which is what precision_at_k / retrieval_metrics do too.
    "precision": RetrievalPrecision,
    "map": RetrievalMAP,
}


def test_every_metric_has_a_torchmetrics_reference():
    assert set(TORCHMETRICS) == set(METRICS)


def make_case(seed: int, num_users: int, num_items: int, ties: bool):
    """Scores (preds) and binary relevance (target) of every (user, catalogue item)."""
    rng = np.random.default_rng(seed)
    target = rng.random((num_users, num_items)) < rng.uniform(0.1, 0.4, size=(num_users, 1))
    target[:3] = False  # users without a relevant item: skipped on both sides
    target[3, 0] = True  # at least one user to evaluate
    if ties:
        # Few score levels, so many items share a score, but only items of equal relevance do:
        # relevant items get odd scores, irrelevant ones even scores. The sequence of relevance
        # values down the ranking is then the same whichever way a tie is broken (torch's
        # argsort/topk have no guaranteed tie order, ours is a stable argsort), and
        # torchmetrics' NDCG, which averages the gain over tied items, averages equal gains.
        # Ties mixing relevant and irrelevant items would make the metrics depend on the
        # tie-break, so they are avoided by construction rather than matched.
        scores = 2.0 * rng.integers(1, 4, size=target.shape) + target
    else:
        scores = rng.random(target.shape) + 0.1
    # Strictly positive scores: torchmetrics treats a relevant item with a score <= 0 as
    # irrelevant in most retrieval metrics. float32 is what torchmetrics computes with, and
    # ranking the same float32 values on our side keeps both rankings identical.
    return scores.astype(np.float32), target


def our_metrics(scores: np.ndarray, target: np.ndarray, ks: list[int]) -> dict[str, float]:
    num_users, num_items = target.shape
    width = min(max(ks), num_items)  # k > num_items: retrieval_metrics pads with misses
    top_items = np.argsort(-scores, axis=1, kind="stable")[:, :width]
    users, items = np.nonzero(target)
    targets = ItemSets.from_pairs(users, items, num_users, num_items)
    hits = hit_matrix(top_items, targets)
    assert (hits == np.take_along_axis(target, top_items, axis=1)).all()
    return retrieval_metrics(hits, targets.counts(), ks)


def torchmetrics_value(name: str, scores: np.ndarray, target: np.ndarray, k: int) -> float:
    metric = TORCHMETRICS[name](top_k=k, empty_target_action="skip")
    indexes = torch.arange(target.shape[0]).repeat_interleave(target.shape[1])
    metric.update(
        torch.from_numpy(scores.ravel()), torch.from_numpy(target.ravel()), indexes=indexes
    )
    return float(metric.compute())


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize(
    ("num_items", "ks"),
    [(30, [1, 5, 10, 30]), (7, [1, 3, 7, 10])],  # 7 items with k = 10: k beyond the catalogue
    ids=["catalogue30", "catalogue7"],
)
@pytest.mark.parametrize("seed", range(3))
def test_metrics_match_torchmetrics(seed, num_items, ks, ties):
    scores, target = make_case(seed, num_users=30, num_items=num_items, ties=ties)
    if ties:
        assert len(np.unique(scores)) < scores.size // 4  # the case really is full of ties
    got = our_metrics(scores, target, ks)
    evaluated = int(target.any(1).sum())
    assert got["users"] == evaluated
    assert got["skipped_users"] == target.shape[0] - evaluated >= 3
    for k in ks:
        for name in METRICS:
            expected = torchmetrics_value(name, scores, target, k)
            assert got[f"{name}@{k}"] == pytest.approx(expected, abs=1e-6), f"{name}@{k}"


def test_k_beyond_catalogue_precision_divides_by_k():
    # One user, 2 items both relevant and ranked: precision@5 is 2/5 on both sides
    # (torchmetrics only divides by the catalogue size with adaptive_k=True).
    scores = np.array([[0.9, 0.5]], dtype=np.float32)
    target = np.array([[True, True]])
    got = our_metrics(scores, target, [5])
    assert got["precision@5"] == pytest.approx(0.4)
    assert torchmetrics_value("precision", scores, target, 5) == pytest.approx(0.4)
    adaptive = RetrievalPrecision(top_k=5, adaptive_k=True)
    adaptive.update(torch.tensor([0.9, 0.5]), torch.tensor([True, True]), torch.tensor([0, 0]))
    assert float(adaptive.compute()) == 1.0  # the variant we do not follow: 2 / min(5, 2)
    assert got["recall@5"] == got["ndcg@5"] == got["map@5"] == 1.0


def test_map_normalises_by_hits_found_like_torchmetrics():
    # Ranking: relevant, irrelevant, relevant, then 3 more relevant items out of the top 3.
    scores = np.array([[6, 5, 4, 3, 2, 1]], dtype=np.float32)
    target = np.array([[True, False, True, True, True, True]])
    got = our_metrics(scores, target, [3])
    assert got["map@3"] == pytest.approx((1 / 1 + 2 / 3) / 2)  # not / min(3, 5)
    assert torchmetrics_value("map", scores, target, 3) == pytest.approx(got["map@3"])


def loop_coverage_popularity(
    top_items: np.ndarray, item_counts: np.ndarray, k: int
) -> tuple[float, float]:
    seen: set[int] = set()
    counts: list[float] = []
    for row in top_items.tolist():
        for item in row[:k]:
            if item != -1:
                seen.add(item)
                counts.append(float(item_counts[item]))
    return len(seen) / len(item_counts), sum(counts) / len(counts)


def random_top_items(rng: np.random.Generator, num_users: int, num_items: int, width: int):
    # Popularity-skewed picks, so items repeat across users and coverage is well below 1.
    weights = 1.0 / np.arange(1, num_items + 1)
    top = np.stack(
        [
            rng.choice(num_items, size=width, replace=False, p=weights / weights.sum())
            for _ in range(num_users)
        ]
    )
    top[rng.random(top.shape) < 0.1] = -1
    return top


@pytest.mark.parametrize("seed", range(4))
def test_coverage_and_popularity_match_loop(seed):
    rng = np.random.default_rng(seed)
    num_users, num_items, width = 20, 40, 8
    top = random_top_items(rng, num_users, num_items, width)
    counts = rng.integers(0, 50, size=num_items)
    for k in [1, 3, 8, 12]:  # 12 > width: columns past the matrix hold no item
        coverage, popularity = loop_coverage_popularity(top, counts, k)
        assert 0 < coverage < 1
        assert catalogue_coverage(top, num_items, k) == pytest.approx(coverage, abs=1e-12)
        assert mean_popularity(top, counts, k) == pytest.approx(popularity, rel=1e-12)
        assert mean_popularity(top, counts, k, normalize=True) == pytest.approx(
            popularity / counts.mean(), rel=1e-12
        )


@pytest.mark.parametrize("seed", range(3))
def test_retrieval_metrics_pools_coverage_over_evaluated_users(seed):
    rng = np.random.default_rng(seed)
    num_users, num_items, width = 25, 30, 6
    top = random_top_items(rng, num_users, num_items, width)
    counts = rng.integers(0, 50, size=num_items)
    num_relevant = rng.integers(0, 3, size=num_users)
    num_relevant[0] = 1
    hits = rng.random(top.shape) < 0.2
    ks = [1, 4, 10]
    got = retrieval_metrics(hits, num_relevant, ks, top_items=top, item_counts=counts)
    kept = num_relevant > 0
    assert got["users"] == kept.sum()
    assert got["skipped_users"] == (~kept).sum()
    assert all(type(value) is float for value in got.values())
    without = retrieval_metrics(hits, num_relevant, ks)
    for k in ks:
        coverage, popularity = loop_coverage_popularity(top[kept], counts, k)
        assert got[f"coverage@{k}"] == pytest.approx(coverage, abs=1e-12)
        assert got[f"popularity@{k}"] == pytest.approx(popularity, rel=1e-12)
        for name in METRICS:
            assert got[f"{name}@{k}"] == without[f"{name}@{k}"]
    assert set(got) - set(without) == {f"{m}@{k}" for m in ("coverage", "popularity") for k in ks}
    # top_items alone adds nothing; with num_items alone, only coverage (over num_items).
    assert retrieval_metrics(hits, num_relevant, ks, top_items=top) == without
    only_coverage = retrieval_metrics(hits, num_relevant, ks, top_items=top, num_items=60)
    assert set(only_coverage) - set(without) == {f"coverage@{k}" for k in ks}
    for k in ks:
        assert only_coverage[f"coverage@{k}"] == pytest.approx(got[f"coverage@{k}"] / 2)


def test_users_and_skipped_users_counts():
    hits = np.array([[True], [False], [False], [True]])
    got = retrieval_metrics(hits, np.array([1, 0, 0, 2]), [1])
    assert (got["users"], got["skipped_users"]) == (2.0, 2.0)
    assert got["recall@1"] == pytest.approx(0.75)
    got = retrieval_metrics(hits, np.array([1, 1, 1, 2]), [1])
    assert (got["users"], got["skipped_users"]) == (4.0, 0.0)


def test_coverage_popularity_edge_cases():
    assert math.isnan(mean_popularity(np.array([[-1, -1]]), np.array([3, 4]), k=2))
    assert catalogue_coverage(np.array([[-1, -1]]), 2, k=2) == 0.0
    with pytest.raises(ValueError, match="outside a catalogue"):
        catalogue_coverage(np.array([[0, 5]]), 3, k=2)
    with pytest.raises(ValueError, match="k has to be a positive integer"):
        catalogue_coverage(np.array([[0]]), 3, k=0)
    with pytest.raises(ValueError, match="need top_items"):
        retrieval_metrics(np.array([[True]]), np.array([1]), [1], item_counts=np.array([1, 2]))
    with pytest.raises(ValueError, match="rows"):
        retrieval_metrics(
            np.array([[True]]),
            np.array([1]),
            [1],
            top_items=np.array([[0], [1]]),
            item_counts=np.array([1, 2]),
        )
