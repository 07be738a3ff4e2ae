from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from lit_matching.towers.sequence import (
    GRUTower,
    HistoryPoolingTower,
    SelfAttentionTower,
    align_left,
    align_right,
    history_mask,
)

NUM_ITEMS = 30
DIM = 8

TowerFactory = Callable[..., nn.Module]

TOWERS: dict[str, TowerFactory] = {
    "mean": lambda **kw: HistoryPoolingTower(NUM_ITEMS, DIM, pooling="mean", **kw),
    "sum_mlp": lambda **kw: HistoryPoolingTower(
        NUM_ITEMS, DIM, pooling="sum", hidden_dims=(16,), **kw
    ),
    "max": lambda **kw: HistoryPoolingTower(NUM_ITEMS, DIM, pooling="max", **kw),
    "gru": lambda **kw: GRUTower(NUM_ITEMS, DIM, hidden_size=12, num_layers=2, **kw),
    "sasrec": lambda **kw: SelfAttentionTower(
        NUM_ITEMS, DIM, num_heads=2, num_layers=2, max_length=12, **kw
    ),
}


def make_batch(lengths: list[int], width: int, seed: int = 0, pad_value: int | None = None):
    """Left-padded histories; pad positions hold ``pad_value`` (default: the pad index)."""
    gen = torch.Generator().manual_seed(seed)
    history = torch.full((len(lengths), width), NUM_ITEMS if pad_value is None else pad_value)
    for row, n in enumerate(lengths):
        if n:
            history[row, width - n :] = torch.randint(0, NUM_ITEMS, (n,), generator=gen)
    return {"history": history, "history_length": torch.tensor(lengths)}


def repad(features: dict[str, Tensor], width: int, seed: int) -> dict[str, Tensor]:
    """The same real items, ``width`` columns, random garbage (incl. the pad index) in pads."""
    gen = torch.Generator().manual_seed(seed)
    history, lengths = features["history"], features["history_length"]
    out = torch.randint(0, NUM_ITEMS + 1, (history.shape[0], width), generator=gen)
    for row, n in enumerate(lengths.tolist()):
        if n:
            out[row, width - n :] = history[row, history.shape[1] - n :]
    return {"history": out, "history_length": lengths.clone()}


LENGTHS = [0, 1, 3, 6, 8, 2]


def test_helpers() -> None:
    lengths = torch.tensor([0, 2, 4])
    mask = history_mask(lengths, 4)
    assert mask.sum(1).tolist() == [0, 2, 4]
    assert mask[1].tolist() == [False, False, True, True]
    x = torch.arange(12).view(3, 4)
    right = align_right(x, lengths)
    assert right[1, :2].tolist() == [6, 7]
    assert torch.equal(align_left(right, lengths), x)
    y = torch.randn(3, 4, 5)
    assert torch.equal(align_left(align_right(y, lengths), lengths), y)


@pytest.mark.parametrize("name", list(TOWERS))
def test_shape_and_empty_history(name: str) -> None:
    torch.manual_seed(0)
    tower = TOWERS[name]().eval()
    features = make_batch(LENGTHS, 8)
    out = tower(features)
    assert out.shape == (len(LENGTHS), DIM)
    assert torch.isfinite(out).all()
    # Non-empty rows are informative (not all equal to the empty row).
    assert not torch.allclose(out[1], out[0])
    # Empty-only batch, in train mode too (dropout on), stays finite.
    empty = make_batch([0, 0], 5)
    assert torch.isfinite(tower(empty)).all()
    assert torch.isfinite(tower.train()(empty)).all()


@pytest.mark.parametrize("name", list(TOWERS))
def test_padding_invariance(name: str) -> None:
    torch.manual_seed(0)
    tower = TOWERS[name]().eval()
    features = make_batch(LENGTHS, 8, seed=1)
    expected = tower(features)
    for width, seed in [(8, 2), (11, 3), (12, 4)]:
        other = repad(features, width, seed)
        assert not torch.equal(other["history"][:, :2], features["history"][:, :2])
        torch.testing.assert_close(tower(other), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(TOWERS))
def test_depends_on_length(name: str) -> None:
    """Control for the padding test: the same columns with a different length do change."""
    torch.manual_seed(0)
    tower = TOWERS[name]().eval()
    features = make_batch([4, 4], 6, seed=1, pad_value=0)
    features["history"][:, :2] = torch.tensor([[3, 7], [11, 5]])
    longer = {"history": features["history"], "history_length": torch.tensor([6, 6])}
    assert not torch.allclose(tower(features), tower(longer))


@pytest.mark.parametrize("name", list(TOWERS))
def test_shared_item_embedding(name: str) -> None:
    torch.manual_seed(0)
    table = nn.Embedding(NUM_ITEMS, DIM)  # e.g. the item tower's table: no pad row
    tower = TOWERS[name](item_embedding=table)
    assert tower.item_embedding is table
    params = list(tower.parameters())
    assert sum(p is table.weight for p in params) == 1
    assert len(params) == len({id(p) for p in params})
    features = make_batch(LENGTHS, 8, seed=5)
    tower(features).pow(2).sum().backward()
    assert table.weight.grad is not None
    used = torch.zeros(NUM_ITEMS, dtype=torch.bool)
    used[features["history"][history_mask(features["history_length"], 8)]] = True
    row_norms = table.weight.grad.norm(dim=1)
    # Max pooling only routes gradient to the winning item of each dimension.
    assert (row_norms[used] > 0).all() if name != "max" else (row_norms[used] > 0).any()
    assert (row_norms[~used] == 0).all()


def test_shared_table_too_small() -> None:
    with pytest.raises(ValueError, match="rows"):
        GRUTower(NUM_ITEMS, DIM, item_embedding=nn.Embedding(NUM_ITEMS - 1, DIM))


def test_own_table_has_pad_row() -> None:
    tower = HistoryPoolingTower(NUM_ITEMS, DIM)
    assert tower.item_embedding.num_embeddings == NUM_ITEMS + 1
    assert tower.item_embedding.padding_idx == NUM_ITEMS


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="pooling"):
        HistoryPoolingTower(NUM_ITEMS, DIM, pooling="median")
    with pytest.raises(ValueError, match="num_heads"):
        SelfAttentionTower(NUM_ITEMS, 6, num_heads=4)


def test_self_attention_is_causal() -> None:
    torch.manual_seed(0)
    tower = SelfAttentionTower(NUM_ITEMS, DIM, max_length=10).eval()
    features = make_batch([7, 10, 4], 10, seed=6)
    base = tower.sequence_output(features)
    assert base.shape == (3, 10, DIM)
    mask = history_mask(features["history_length"], 10)
    assert (base[~mask] == 0).all()
    torch.testing.assert_close(base[:, -1], tower(features))
    for t in (4, 7, 8):
        changed = {k: v.clone() for k, v in features.items()}
        later = changed["history"][:, t + 1 :]
        changed["history"][:, t + 1 :] = torch.where(
            later == NUM_ITEMS, later, (later + 1) % NUM_ITEMS
        )
        out = tower.sequence_output(changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=1e-5, rtol=1e-5)
        # Later positions (of rows with real items there) do see the change.
        assert not torch.allclose(out[0, t + 1 :], base[0, t + 1 :])


def test_self_attention_prefix_equals_shorter_history() -> None:
    """Position j's output equals the user vector of the history truncated after column j."""
    torch.manual_seed(0)
    tower = SelfAttentionTower(NUM_ITEMS, DIM, max_length=8).eval()
    features = make_batch([6], 8, seed=7)
    seq = tower.sequence_output(features)
    for cut in (1, 3, 5):
        prefix = {
            "history": torch.cat(
                [torch.full((1, cut), NUM_ITEMS), features["history"][:, : 8 - cut]], dim=1
            ),
            "history_length": torch.tensor([6 - cut]),
        }
        torch.testing.assert_close(tower(prefix)[0], seq[0, 7 - cut], atol=1e-5, rtol=1e-5)


def test_self_attention_keeps_last_max_length_items() -> None:
    torch.manual_seed(0)
    tower = SelfAttentionTower(NUM_ITEMS, DIM, max_length=5).eval()
    features = make_batch([9, 3], 9, seed=8)
    truncated = {
        "history": features["history"][:, -5:],
        "history_length": features["history_length"].clamp(max=5),
    }
    torch.testing.assert_close(tower(features), tower(truncated))


@pytest.mark.parametrize("hidden_size", [DIM, 12])
def test_gru_matches_step_by_step_reference(hidden_size: int) -> None:
    torch.manual_seed(0)
    tower = GRUTower(NUM_ITEMS, DIM, hidden_size=hidden_size, num_layers=2).eval()
    features = make_batch(LENGTHS, 8, seed=9)
    out = tower(features)
    for row, n in enumerate(features["history_length"].tolist()):
        state = torch.zeros(2, 1, hidden_size)
        for item in features["history"][row, 8 - n :].tolist():
            x = tower.item_embedding(torch.tensor([[item]]))
            _, state = tower.gru(x, state)
        torch.testing.assert_close(out[row], tower.projection(state[-1, 0]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mean", "gru", "sasrec"])
def test_training_reduces_loss(name: str) -> None:
    """Next item = f(last item): a few Adam steps of full softmax lower the loss clearly."""
    torch.manual_seed(0)
    tower = TOWERS[name](dropout=0.0)
    items = nn.Embedding(NUM_ITEMS, DIM)
    gen = torch.Generator().manual_seed(10)
    lengths = torch.randint(1, 6, (128,), generator=gen).tolist()
    features = make_batch(lengths, 6, seed=11)
    target = (features["history"][:, -1] * 7 + 3) % NUM_ITEMS

    def loss() -> Tensor:
        return nn.functional.cross_entropy(tower(features) @ items.weight.T, target)

    with torch.no_grad():
        before = loss().item()
    optimizer = torch.optim.Adam([*tower.parameters(), *items.parameters()], lr=0.03)
    for _ in range(60):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        after = loss().item()
    assert after < 0.5 * before, (before, after)
