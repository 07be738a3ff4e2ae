"""The recommendation table: by hand against fixed vectors, seen items, item titles, modes."""

import pandas as pd
import pytest
import torch
from torch import nn

from lit_matching import (
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    get_similarity,
    load_item_titles,
    recommendation_table,
)


class FixedVectors(nn.Module):
    """A "model" with given one-dimensional user and item vectors, scored by dot product."""

    def __init__(self, users: list[float], items: list[float]):
        super().__init__()
        self.similarity = get_similarity("dot")
        self.register_buffer("users", torch.tensor(users)[:, None])
        self.register_buffer("items", torch.tensor(items)[:, None])

    def encode_users(self, features):
        return self.users[features["ids"]]

    def encode_items(self, features):
        return self.items[features["ids"]]


@pytest.fixture
def tiny():
    # user a: 10, 20 train, 30 val, 40 test; user b: 60 train, 50 val, 20 test
    log = pd.DataFrame(
        {
            "user_id": ["a"] * 4 + ["b"] * 3,
            "item_id": [10, 20, 30, 40, 60, 50, 20],
            "timestamp": [1, 2, 3, 4, 1, 2, 3],
        }
    )
    data = MatchingDataModule(interactions=log, num_negatives=1)
    # items 10, 20, ..., 60 score 6, 5, ..., 1 for both users
    return data, FixedVectors([1.0, 1.0], [6.0, 5.0, 4.0, 3.0, 2.0, 1.0])


def test_recommendation_table_by_hand(tiny):
    data, model = tiny
    titles = {10: "Ten", 40: "Forty", 99: "not in the data"}
    table = recommendation_table(model, data, k=2, item_titles=titles)
    expected = pd.DataFrame(
        {
            "user_id": ["a", "b"],
            "history": ["10: Ten\n20\n30", "60\n50"],  # train + val, oldest first
            "held_out": ["40: Forty", "20"],
            "recommended": ["✓ 40: Forty\n50", "10: Ten\n✓ 20"],  # seen items left out
            "hits": [1, 1],
        }
    )
    pd.testing.assert_frame_equal(table, expected)

    validation = recommendation_table(
        model, data, users=["a"], k=3, item_titles=titles, history_items=1, stage="val"
    )
    assert validation.to_dict("records") == [
        {
            "user_id": "a",
            "history": "20",  # the last training item
            "held_out": "30",
            "recommended": "✓ 30\n40: Forty\n50",  # 10 and 20 seen; 40 is not seen yet
            "hits": 1,
        }
    ]
    assert recommendation_table(model, data, num_users=1, seed=3).user_id.tolist() in (
        ["a"],
        ["b"],
    )


def test_recommendation_table_leaves_each_part_in_its_own_mode(tiny):
    data, model = tiny
    model.part = nn.Dropout()
    model.train()
    model.part.eval()  # put in eval mode by its owner (e.g. frozen): must stay so
    recommendation_table(model, data, k=1)
    assert model.training and not model.part.training


def test_recommendation_table_never_recommends_seen_items(small_log):
    data = MatchingDataModule(interactions=small_log, num_negatives=2)
    model = ListwiseMatching(
        IDEmbeddingTower(data.num_users, 4), IDEmbeddingTower(data.num_items, 4)
    )
    table = recommendation_table(model, data, num_users=40, k=20)
    assert len(table) == 40  # every user (each has a test item)
    splits = data.splits
    known = pd.concat([splits.train, splits.val])
    raw_user = dict(enumerate(data.user_vocab.to_list()))
    raw_item = dict(enumerate(data.item_vocab.to_list()))
    seen = known.groupby("user").item.agg(lambda items: {str(raw_item[i]) for i in items})
    for user, row in zip(
        known.user.drop_duplicates().sort_values(), table.itertuples(), strict=True
    ):
        assert row.user_id == raw_user[user]
        recommended = [line.removeprefix("✓ ") for line in row.recommended.split("\n")]
        assert len(recommended) == 20 and not set(recommended) & seen[user]
        assert set(row.history.split("\n")) <= seen[user]


def test_item_titles_from_mappings_frames_files_and_movielens(tmp_path):
    frame = pd.DataFrame({"item_id": [1, 2], "title": ["One", "Two"], "genres": ["a", "b"]})
    frame.to_csv(tmp_path / "titles.csv", index=False)
    frame.to_csv(tmp_path / "titles.tsv", sep="\t", index=False)
    frame.to_parquet(tmp_path / "titles.parquet")
    expected = {1: "One", 2: "Two"}
    for source in (frame, "titles.csv", "titles.tsv", "titles.parquet"):
        if isinstance(source, str):
            source = tmp_path / source
        assert load_item_titles(source) == expected
    assert load_item_titles(None) == {}
    assert load_item_titles({1: "One"}) == {1: "One"}
    assert len(load_item_titles("movielens")) == 9125
    with pytest.raises(ValueError, match="columns 'item_id' and 'title'; missing \\['title'\\]"):
        load_item_titles(frame.drop(columns="title"))
    with pytest.raises(FileNotFoundError, match="item_titles: no file"):
        load_item_titles(tmp_path / "nope.csv")
