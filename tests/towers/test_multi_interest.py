"""Multi-interest towers: shapes, masking, interest selection and the per-interest merge."""

import numpy as np
import pytest
import torch

from lit_matching import ListwiseMatching, MultiInterestTower, Retriever
from lit_matching.data.item_sets import EvalSet, ItemSets
from lit_matching.retrieval.evaluation import evaluate_retrieval
from lit_matching.retrieval.search import build_index, merge_interests, search_top_k
from lit_matching.towers import IDEmbeddingTower

EXTRACTORS = ["attention", "routing"]


def features(history, lengths):
    return {"history": torch.tensor(history), "history_length": torch.tensor(lengths)}


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_shapes_and_distinct_interests(extractor):
    torch.manual_seed(0)
    tower = MultiInterestTower(num_items=20, embedding_dim=8, num_interests=4, extractor=extractor)
    out = tower(features([[20, 1, 2, 3], [4, 5, 6, 7]], [3, 4]))
    assert out.shape == (2, 4, 8)
    # the interests of a user differ from one another
    assert torch.cdist(out[1], out[1]).triu(1).max() > 1e-3


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_padding_never_changes_the_result(extractor):
    torch.manual_seed(0)
    tower = MultiInterestTower(num_items=20, embedding_dim=8, num_interests=3, extractor=extractor)
    short = tower(features([[20, 1, 2, 3]], [3]))
    longer = tower(features([[20, 20, 20, 1, 2, 3]], [3]))
    garbage = tower(features([[9, 11, 17, 1, 2, 3]], [3]))
    torch.testing.assert_close(short, longer)
    torch.testing.assert_close(short, garbage)
    # pad positions get no gradient
    tower.zero_grad()
    tower(features([[9, 1, 2, 3]], [3])).sum().backward()
    assert tower.item_embedding.weight.grad[9].abs().sum() == 0


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_empty_history_gives_zero_interests(extractor):
    tower = MultiInterestTower(num_items=5, embedding_dim=4, num_interests=2, extractor=extractor)
    out = tower(features([[5, 5, 5], [1, 2, 3]], [0, 3]))
    assert torch.isfinite(out).all()
    assert out[0].abs().sum() == 0


def test_attention_matches_a_loop_reference():
    torch.manual_seed(1)
    tower = MultiInterestTower(num_items=10, embedding_dim=4, num_interests=2)
    history, length = [10, 10, 3, 7, 1], 3
    out = tower(features([history], [length]))[0]
    items = tower.item_embedding.weight[torch.tensor(history[-length:])]
    for k in range(2):
        logits = torch.stack([tower.attention(item)[k] for item in items])
        expected = (torch.softmax(logits, 0).unsqueeze(1) * items).sum(0)
        torch.testing.assert_close(out[k], expected)


def test_select_interest_picks_the_closest_and_only_it_gets_gradient():
    model = ListwiseMatching(IDEmbeddingTower(2, 2), IDEmbeddingTower(2, 2), similarity="dot")
    users = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]] * 2, requires_grad=True)
    targets = torch.tensor([[0.2, 0.9], [-0.8, 0.1]])
    chosen = model.select_interest(users, targets)
    torch.testing.assert_close(chosen, torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
    chosen.sum().backward()
    assert users.grad[0].sum(1).tolist() == [0.0, 2.0, 0.0]
    assert users.grad[1].sum(1).tolist() == [0.0, 0.0, 2.0]
    flat = torch.ones(2, 2)
    assert model.select_interest(flat, targets) is flat


def test_merge_interests_hand_made_case():
    # user 0: interest A ranks items 3 (0.9), 5 (0.7); interest B ranks 5 (0.8), 2 (0.1)
    # user 1: only one real candidate; the rest is -1 fill
    items = np.array([[3, 5, 5, 2], [4, -1, -1, -1]])
    scores = np.array([[0.9, 0.7, 0.8, 0.1], [0.3, -np.inf, -np.inf, -np.inf]])
    merged, best = merge_interests(items, scores, 3)
    assert merged.tolist() == [[3, 5, 2], [4, -1, -1]]
    np.testing.assert_allclose(best, [[0.9, 0.8, 0.1], [0.3, -np.inf, -np.inf]], rtol=1e-6)
    # k larger than the candidates
    merged, _ = merge_interests(items[:1, :2], scores[:1, :2], 4)
    assert merged.tolist() == [[3, 5, -1, -1]]


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_multi_interest_search_is_exact_max_over_interests(metric):
    rng = np.random.default_rng(0)
    users, interests, num_items, dim, k = 30, 3, 40, 6, 7
    queries = rng.normal(size=(users, interests, dim)).astype(np.float32)
    vectors = rng.normal(size=(num_items, dim)).astype(np.float32)
    rows = rng.integers(0, users, 200)
    seen = ItemSets.from_pairs(rows, rng.integers(0, num_items, 200), users, num_items)
    found, scores = search_top_k(build_index(vectors, metric), queries, k, seen, batch_size=16)
    for u in range(users):  # loop reference: best interest's score, seen items removed
        if metric == "ip":
            per_interest = queries[u] @ vectors.T
        else:
            per_interest = -((queries[u][:, None, :] - vectors[None]) ** 2).sum(-1)
        best = per_interest.max(0)
        best[seen.row(u)] = -np.inf
        expected = np.argsort(-best, kind="stable")[:k]
        assert found[u].tolist() == expected.tolist()
        np.testing.assert_allclose(scores[u], best[expected], rtol=1e-4, atol=1e-4)


def test_each_interest_finds_its_own_target():
    # Two interests point at two different items; both targets are retrieved at k = 2,
    # while the average of the interests would find neither.
    items = np.eye(4, dtype=np.float32)
    users = np.array([[[1, 0, 0, 0], [0, 0, 1, 0]]], dtype=np.float32)
    eval_set = EvalSet(
        np.array([0]),
        targets=ItemSets.from_pairs(np.array([0, 0]), np.array([0, 2]), 1, 4),
        exclude=ItemSets.from_pairs(np.array([0]), np.array([1]), 1, 4),
    )
    metrics = evaluate_retrieval(users, items, "ip", eval_set, ks=[2])
    assert metrics["recall@2"] == 1.0


def test_retriever_round_trip_with_interests(tmp_path):
    rng = np.random.default_rng(0)
    users = rng.normal(size=(5, 2, 4)).astype(np.float32)
    items = rng.normal(size=(9, 4)).astype(np.float32)
    seen = ItemSets.from_pairs(np.array([0, 0]), np.array([1, 2]), 5, 9)
    ids = [f"u{i}" for i in range(5)]
    retriever = Retriever(users, items, ids, list(range(9)), similarity="dot", seen=seen)
    assert retriever.interests == 2
    loaded = Retriever.load(retriever.export(tmp_path / "export"))
    assert loaded.interests == 2
    assert np.load(tmp_path / "export" / "user_embeddings.npy").shape == (5, 2, 4)
    top = loaded.recommend("u0", k=4)
    best = (users[0] @ items.T).max(0)
    best[[1, 2]] = -np.inf
    assert top.item_id.tolist() == np.argsort(-best)[:4].tolist()
    np.testing.assert_allclose(top.score, np.sort(best)[::-1][:4], rtol=1e-5)
    # a plain export has no interests axis
    flat = Retriever(users[:, 0], items, ids, list(range(9)), similarity="dot")
    assert Retriever.load(flat.export(tmp_path / "flat")).interests is None


def test_retriever_rejects_a_mismatched_interest_count(tmp_path):
    rng = np.random.default_rng(0)
    users = rng.normal(size=(3, 2, 4)).astype(np.float32)
    items = rng.normal(size=(5, 4)).astype(np.float32)
    path = Retriever(users, items, [0, 1, 2], list(range(5))).export(tmp_path / "export")
    np.save(path / "user_embeddings.npy", users[:, :1])
    with pytest.raises(ValueError, match="interests"):
        Retriever.load(path)
