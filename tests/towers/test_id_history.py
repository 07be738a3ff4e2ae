"""IDHistoryTower (SimpleX's user tower) against a slow numpy reference, and in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import quiet_trainer
from torch import nn

from lit_matching import (
    IDEmbeddingTower,
    IDHistoryTower,
    ListwiseMatching,
    MatchingDataModule,
    RetrievalEvaluator,
)
from lit_matching.modes.sparse import sparse_tables

NUM_USERS, NUM_ITEMS, DIM = 7, 30, 8
AGGREGATIONS = ("mean", "attention", "user_attention")
LENGTHS = [0, 1, 3, 6, 8, 2, 0]


def make_features(lengths: list[int], width: int, seed: int, pad: int | None = None) -> dict:
    """ids and LEFT-padded histories; pads hold ``pad`` (default: random items, garbage)."""
    rng = np.random.default_rng(seed)
    history = rng.integers(0, NUM_ITEMS + 1, (len(lengths), width))
    if pad is not None:
        history[:] = pad
    for row, n in enumerate(lengths):
        if n:
            history[row, width - n :] = rng.integers(0, NUM_ITEMS, n)
    return {
        "ids": torch.from_numpy(rng.integers(0, NUM_USERS, len(lengths))),
        "history": torch.from_numpy(history),
        "history_length": torch.tensor(lengths),
    }


def reference(tower: IDHistoryTower, features: dict) -> np.ndarray:
    """``g e_u + (1 - g) V h`` row by row, in float64, reading only the real history items."""

    def array(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().double().numpy()

    users, items = array(tower.user_embedding.weight), array(tower.item_embedding.weight)
    v = array(tower.history_map.weight)
    g = float(tower.id_weight.detach())
    out = []
    for b, user in enumerate(features["ids"].tolist()):
        n = int(features["history_length"][b])
        width = features["history"].shape[1]
        rows = [items[i] for i in features["history"][b, width - n :].tolist()] if n else []
        h = np.zeros(items.shape[1])
        if rows and tower.aggregation == "mean":
            h = sum(rows) / n
        elif rows:
            w, bias = array(tower.attention_map.weight), array(tower.attention_map.bias)
            query = array(tower.query) if tower.aggregation == "attention" else users[user]
            scores = np.array([query @ np.tanh(w @ e + bias) for e in rows])
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
            h = sum(a * e for a, e in zip(weights, rows, strict=True))
        out.append(g * users[user] + (1 - g) * (v @ h))
    return np.stack(out)


def make_tower(aggregation: str, learned: bool, **kwargs) -> IDHistoryTower:
    torch.manual_seed(0)
    tower = IDHistoryTower(
        NUM_USERS,
        NUM_ITEMS,
        DIM,
        aggregation=aggregation,
        id_weight=0.3,
        learn_id_weight=learned,
        **kwargs,
    )
    if learned:  # away from its initial value, as after training
        with torch.no_grad():
            tower.id_weight_logit.fill_(1.1)
    return tower


@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_equals_the_reference(aggregation: str, learned: bool) -> None:
    tower = make_tower(aggregation, learned).eval()
    expected_g = 1 / (1 + np.exp(-1.1)) if learned else 0.3
    assert float(tower.id_weight.detach()) == pytest.approx(expected_g)
    for seed, width in [(0, 8), (1, 11), (2, 1)]:
        lengths = [min(n, width) for n in LENGTHS]
        features = make_features(lengths, width, seed)
        got = tower(features).detach().double().numpy()
        np.testing.assert_allclose(got, reference(tower, features), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_padding_and_empty_histories(aggregation: str) -> None:
    tower = make_tower(aggregation, learned=False).eval()
    features = make_features(LENGTHS, 8, seed=3, pad=NUM_ITEMS)
    expected = tower(features)
    garbage = make_features(LENGTHS, 8, seed=3)  # same draws for the real items, garbage pads
    wider = dict(features, history=torch.cat([garbage["history"][:, :4], features["history"]], 1))
    assert not torch.equal(garbage["history"], features["history"])
    torch.testing.assert_close(tower(garbage), expected)
    torch.testing.assert_close(tower(wider), expected)
    # An empty history leaves g * e_u, exactly.
    empty = features["history_length"] == 0
    ids = features["ids"][empty]
    torch.testing.assert_close(expected[empty], 0.3 * tower.user_embedding(ids))
    # Control: the real items do count.
    longer = dict(garbage, history_length=garbage["history_length"].clamp(min=2))
    assert not torch.allclose(tower(longer)[empty], expected[empty])


def test_the_mixing_weight_ends() -> None:
    features = make_features(LENGTHS, 8, seed=4)
    torch.manual_seed(0)
    plain = IDHistoryTower(NUM_USERS, NUM_ITEMS, DIM, id_weight=1.0)
    torch.testing.assert_close(plain(features), plain.user_embedding(features["ids"]))
    history_only = IDHistoryTower(NUM_USERS, NUM_ITEMS, DIM, id_weight=0.0)
    other_users = dict(features, ids=(features["ids"] + 1) % NUM_USERS)
    torch.testing.assert_close(history_only(features), history_only(other_users))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_gradients_reach_both_parts(aggregation: str) -> None:
    tower = make_tower(aggregation, learned=True).train()
    features = make_features([3, 0, 5, 2], 6, seed=5)
    tower(features).pow(2).sum().backward()
    grads = {name: p.grad for name, p in tower.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads.keys()
    user_rows = tower.user_embedding.weight.grad.norm(dim=1)
    seen = torch.zeros(NUM_USERS, dtype=torch.bool)
    seen[features["ids"]] = True
    assert (user_rows[seen] > 0).all() and (user_rows[~seen] == 0).all()
    item_rows = tower.item_embedding.weight.grad.norm(dim=1)
    used = torch.zeros(NUM_ITEMS + 1, dtype=torch.bool)
    for row, n in enumerate(features["history_length"].tolist()):
        used[features["history"][row, 6 - n :]] = n > 0
    assert (item_rows[used] > 0).all() and (item_rows[~used] == 0).all()


def test_a_fixed_weight_is_a_buffer_not_a_parameter() -> None:
    tower = IDHistoryTower(NUM_USERS, NUM_ITEMS, DIM, id_weight=0.25)
    names = {name for name, _ in tower.named_parameters()}
    assert names == {"item_embedding.weight", "user_embedding.weight", "history_map.weight"}
    assert float(tower.state_dict()["fixed_id_weight"]) == 0.25


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_shared_item_table(aggregation: str) -> None:
    torch.manual_seed(0)
    items = IDEmbeddingTower(NUM_ITEMS, DIM)  # the item tower's table: no pad row
    tower = IDHistoryTower(
        NUM_USERS, NUM_ITEMS, DIM, aggregation=aggregation, item_embedding=items.embedding
    )
    assert tower.item_embedding is items.embedding
    params = [*tower.parameters(), *items.parameters()]
    assert sum(p is items.embedding.weight for p in params) == 2
    features = make_features(LENGTHS, 8, seed=6, pad=NUM_ITEMS)  # the pad is no row here
    (tower(features) * items(torch.arange(NUM_ITEMS))[: len(LENGTHS)]).sum().backward()
    assert items.embedding.weight.grad is not None
    np.testing.assert_allclose(
        tower(features).detach().double().numpy(), reference(tower, features), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_sparse_tables_get_sparse_gradients(aggregation: str) -> None:
    tower = make_tower(aggregation, learned=True)
    tables = sparse_tables(tower)
    assert len(tables) == 2
    tower(make_features(LENGTHS, 8, seed=7)).sum().backward()
    assert all(table.grad is not None and table.grad.is_sparse for table in tables)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="num_users"):
        IDHistoryTower(None, NUM_ITEMS, DIM)
    with pytest.raises(ValueError, match="num_items"):
        IDHistoryTower(NUM_USERS, None, DIM)
    with pytest.raises(ValueError, match="'median'"):
        IDHistoryTower(NUM_USERS, NUM_ITEMS, DIM, aggregation="median")
    with pytest.raises(ValueError, match=r"got 1\.5"):
        IDHistoryTower(NUM_USERS, NUM_ITEMS, DIM, id_weight=1.5)
    with pytest.raises(ValueError, match=r"\(0, 1\).*got 1\.0"):
        IDHistoryTower(NUM_USERS, NUM_ITEMS, DIM, id_weight=1.0, learn_id_weight=True)
    with pytest.raises(ValueError, match="rows"):
        IDHistoryTower(NUM_USERS, NUM_ITEMS, DIM, item_embedding=nn.Embedding(NUM_ITEMS - 1, DIM))


def test_a_tiny_listwise_fit_on_the_embedded_data() -> None:
    torch.manual_seed(0)
    data = MatchingDataModule(history_length=20, batch_size=512, num_negatives=8)
    data.setup("fit")
    items = IDEmbeddingTower(data.num_items, 32)
    users = IDHistoryTower(
        data.num_users,
        data.num_items,
        32,
        aggregation="attention",
        learn_id_weight=True,
        item_embedding=items.embedding,
    )
    model = ListwiseMatching(users, items, similarity="cosine", temperature=0.1, learning_rate=0.01)
    batches = [next(iter(data.train_dataloader()))]
    with torch.no_grad():
        before = model.compute_loss(batches[0]).item()
    start_g = float(users.id_weight.detach())
    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=20, callbacks=[RetrievalEvaluator(ks=(20,))]
    )
    trainer.fit(model, data)
    with torch.no_grad():
        after = model.eval().compute_loss(batches[0]).item()
    assert after < 0.9 * before
    assert float(users.id_weight.detach()) != start_g  # the mixing weight was trained
    assert 0 < float(trainer.callback_metrics["val/recall@20"]) <= 1


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_an_unknown_user_is_encoded_from_the_history_alone(aggregation: str) -> None:
    tower = make_tower(aggregation, learned=False).eval()
    features = make_features([3, 5], 6, seed=8)
    unknown = dict(features, ids=torch.tensor([-1, -1]))
    with torch.no_grad():
        expected = 0.7 * tower.history_map(tower.aggregate(unknown, torch.zeros(2, DIM)))
        got = tower(unknown)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, tower(features))  # a known user adds their id vector
