import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import small_table

from lit_matching.data.features import Categorical, FeatureTable
from lit_matching.data.interactions import IdVocabulary
from lit_matching.towers.feature import FeatureEncoder, FeatureTower
from lit_matching.towers.id import IDEmbeddingTower
from lit_matching.towers.sequence import HistoryPoolingTower


@pytest.mark.parametrize("shape", [(3,), (3, 4)])
def test_encoder_shape(shape):
    encoder = FeatureEncoder(small_table(), embedding_dim=6)
    assert encoder.out_dim == 6 + 1 + 6
    ids = torch.randint(0, 5, shape)
    out = encoder(ids)
    assert out.shape == (*shape, 13)
    # The numeric column is passed through as it is.
    assert torch.equal(out[..., 6], small_table()["age"].values[ids])
    assert torch.equal(encoder({"ids": ids}), out)


def test_encoder_buffers_move_and_round_trip():
    encoder = FeatureEncoder(small_table(), embedding_dim=4)
    buffers = dict(encoder.named_buffers())
    assert set(buffers) == {"parts.0.codes", "parts.1.values", "parts.2.codes", "parts.2.lengths"}
    assert set(buffers) <= set(encoder.state_dict())
    moved = encoder.to(torch.float64)
    assert moved.parts[1].values.dtype == torch.float64
    assert moved.parts[0].codes.dtype == torch.long
    encoder = encoder.to(torch.float32)
    if torch.cuda.is_available():
        assert all(b.is_cuda for b in encoder.to("cuda").buffers())
        encoder = encoder.cpu()

    ids = torch.arange(5)
    other = FeatureEncoder(small_table(), embedding_dim=4)
    for buffer in other.buffers():
        buffer.zero_()
    assert not torch.allclose(other(ids), encoder(ids))
    other.load_state_dict(encoder.state_dict())
    assert torch.equal(other.parts[2].codes, small_table()["genres"].codes)
    assert torch.equal(other(ids), encoder(ids))


def test_multi_categorical_pooling_ignores_padding():
    encoder = FeatureEncoder(small_table(), embedding_dim=4)
    ids = torch.arange(5)
    part = encoder.parts[2]
    before = part(ids)
    embedding = part.embedding.weight
    # Row 3 holds Action, Comedy, Drama: the mean of their embeddings.
    assert torch.allclose(before[3], embedding[1:4].mean(dim=0))
    # Garbage in the pad slots and reordered real codes leave the output unchanged.
    with torch.no_grad():
        part.codes.copy_(torch.tensor([[2, 3, 1], [3, 3, 3], [1, 3, 2], [3, 1, 2], [1, 1, 1]]))
    assert torch.allclose(part(ids), before)
    # Entities without values (20: missing cell, 50: no row) get a finite (zero) vector.
    assert torch.isfinite(before).all()
    assert torch.equal(before[1], torch.zeros(4)) and torch.equal(before[4], torch.zeros(4))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_ids": 5, "id_dim": 3}, {"num_ids": 7, "hidden_dims": ()}],
)
@pytest.mark.parametrize("shape", [(2,), (2, 3)])
def test_feature_tower_shapes(kwargs, shape):
    tower = FeatureTower(small_table(), embedding_dim=8, feature_dim=4, **kwargs)
    ids = torch.randint(0, 5, shape)
    assert tower({"ids": ids}).shape == (*shape, 8)
    assert tower(ids).shape == (*shape, 8)


def test_feature_tower_id_embedding_distinguishes_same_features():
    table = FeatureTable.from_frame(
        pd.DataFrame({"id": [0, 1], "g": ["x", "x"]}),
        "id",
        IdVocabulary.from_values([0, 1]),
        [Categorical("g")],
    )
    ids = torch.tensor([0, 1])
    plain = FeatureTower(table, embedding_dim=4)(ids)
    assert torch.allclose(plain[0], plain[1])
    with_ids = FeatureTower(table, embedding_dim=4, num_ids=2)(ids)
    assert not torch.allclose(with_ids[0], with_ids[1])
    with pytest.raises(ValueError, match="num_ids=1"):
        FeatureTower(table, num_ids=1)


def test_feature_tower_with_history_tower():
    history = HistoryPoolingTower(num_items=6, embedding_dim=5)
    tower = FeatureTower(small_table(), embedding_dim=8, feature_dim=4, history_tower=history)
    features = {
        "ids": torch.tensor([0, 3]),
        "history": torch.tensor([[6, 1, 2], [6, 6, 6]]),
        "history_length": torch.tensor([2, 0]),
    }
    out = tower(features)
    assert out.shape == (2, 8)
    # The history is used: a different history changes the user vector.
    changed = tower({**features, "history": torch.tensor([[6, 4, 5], [6, 6, 6]])})
    assert not torch.allclose(changed[0], out[0]) and torch.allclose(changed[1], out[1])
    # (B, N) ids broadcast the per-row history vector.
    wide = tower({**features, "ids": torch.tensor([[0, 0], [3, 3]])})
    assert wide.shape == (2, 2, 8) and torch.allclose(wide[:, 1], out)
    assert any(name.startswith("history_tower.") for name in tower.state_dict())
    with pytest.raises(ValueError, match="embedding_dim attribute"):
        FeatureTower(small_table(), history_tower=torch.nn.Identity())


@pytest.fixture
def one_thread():
    """Tiny tensors: extra intra-op threads only add contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_feature_tower_learns_category_preference(one_thread):
    torch.manual_seed(0)
    num_items, num_users, num_categories = 20, 8, 4
    categories = [f"c{i % num_categories}" for i in range(num_items)]
    items = pd.DataFrame({"item_id": range(num_items), "category": categories})
    table = FeatureTable.from_frame(
        items, "item_id", IdVocabulary.from_values(range(num_items)), [Categorical("category")]
    )
    item_tower = FeatureTower(table, embedding_dim=8, feature_dim=4, hidden_dims=(16,))
    user_tower = IDEmbeddingTower(num_users, embedding_dim=8)
    # User u likes category u % 4; items 16..19 (one per category) are never a target.
    liked = torch.arange(num_users) % num_categories
    users = torch.arange(num_users).repeat_interleave(4)
    targets = liked[users] + num_categories * torch.arange(4).repeat(num_users)
    optimizer = torch.optim.Adam([*item_tower.parameters(), *user_tower.parameters()], lr=0.05)
    all_items = {"ids": torch.arange(num_items)}

    def loss() -> torch.Tensor:
        logits = user_tower({"ids": users}) @ item_tower(all_items).T
        return F.cross_entropy(logits, targets)

    first = loss().item()
    for _ in range(60):
        optimizer.zero_grad()
        step = loss()
        step.backward()
        optimizer.step()
    final = loss().item()
    assert first > math.log(num_items) - 0.1
    assert final < math.log(5) + 0.2 < first - 1.0  # 5 items per category: log(5) is optimal
    with torch.no_grad():
        scores = user_tower({"ids": torch.arange(num_users)}) @ item_tower(all_items).T
    # Unseen items 16..19 are ranked by category alone: the liked one beats every other category.
    item_category = torch.arange(num_items) % num_categories
    for user in range(num_users):
        held_out = 16 + int(liked[user])
        others = scores[user][item_category != liked[user]]
        assert scores[user, held_out] > others.max()


def test_id_dim_alone_adds_an_id_embedding_per_table_row():
    frame = pd.DataFrame({"id": [0, 1, 2], "g": ["x", "y", "x"]})
    table = FeatureTable.from_frame(
        frame, "id", IdVocabulary.from_values([0, 1, 2]), [Categorical("g")]
    )
    tower = FeatureTower(table, embedding_dim=8, id_dim=4)
    assert tower.id_embedding is not None and tuple(tower.id_embedding.weight.shape) == (3, 4)
    assert FeatureTower(table, embedding_dim=8).id_embedding is None
    with pytest.raises(ValueError, match="id_dim has to be a positive integer"):
        FeatureTower(table, embedding_dim=8, id_dim=0)
