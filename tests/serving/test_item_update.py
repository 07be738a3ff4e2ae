"""New and changed items from their side features, without retraining (issue 15, point 3)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import synthetic_log

from lit_matching import (
    Categorical,
    FeatureTower,
    GRUTower,
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    MultiCategorical,
    Numeric,
    Retriever,
)
from lit_matching.serving import export_format
from lit_matching.serving.from_training import export_retriever

DIM = 8
SPECS = [Categorical("genre"), Numeric("price"), MultiCategorical("tags")]


def item_frame(item_ids) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame(
        {
            "item_id": list(item_ids),
            "genre": rng.choice(["jazz", "rock", "pop"], len(item_ids)),
            "price": rng.normal(10, 3, len(item_ids)),
            "tags": rng.choice(["a|b", "b", "c|a|b", ""], len(item_ids)),
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(module, datamodule, export path, item frame) with a feature item tower."""
    torch.manual_seed(0)
    log = synthetic_log(num_users=20, num_items=24, per_user=6)
    items = item_frame(sorted(log.item_id.unique()))
    dm = MatchingDataModule(
        interactions=log, history_length=3, item_side_features=items, item_feature_specs=SPECS
    )
    item_tower = FeatureTower(dm.item_feature_table, DIM, feature_dim=4, num_ids=dm.num_items)
    model = ListwiseMatching(GRUTower(dm.num_items, DIM), item_tower, similarity="cosine")
    model.eval()
    path = export_retriever(model, dm, tmp_path_factory.mktemp("items") / "export")
    return model, dm, path, items


def coded(table, genre, price, tags):
    """The feature inputs of one item, coded by hand from the training table."""
    codes = [table["tags"].categories.index(tag) + 1 for tag in tags]
    width = table["tags"].codes.shape[1]
    return {
        "feature.genre": torch.tensor([table["genre"].categories.index(genre) + 1]),
        "feature.price": torch.tensor([(price - table["price"].mean) / table["price"].std]),
        "feature.tags": torch.tensor([codes + [0] * (width - len(codes))]),
        "feature.tags.length": torch.tensor([len(codes)]),
    }


def test_replacing_an_item_with_its_own_features_changes_nothing(trained):
    _, _, path, items = trained
    retriever = Retriever.load(path)
    rows = items.iloc[[2, 5]]
    updated = retriever.with_items(rows)
    np.testing.assert_allclose(updated.item_embeddings, retriever.item_embeddings, atol=1e-6)
    assert updated.num_items == retriever.num_items


def test_a_new_item_is_encoded_like_the_torch_tower(trained):
    model, dm, path, _ = trained
    retriever = Retriever.load(path)
    new = {"item_id": 9999, "genre": "rock", "price": 12.5, "tags": "b|a"}
    updated = retriever.with_items([new])
    assert updated.num_items == retriever.num_items + 1
    assert updated.item_ids[-1] == 9999
    features = {"ids": torch.tensor([-1])} | coded(dm.item_feature_table, "rock", 12.5, ["b", "a"])
    with torch.no_grad():
        expected = model.encode_items(features)[0].numpy()
    np.testing.assert_allclose(updated.item_embeddings[-1], expected, atol=1e-5)
    # ranked like every other item: brute force over the grown catalogue
    user = 4
    scores = updated.item_embeddings @ updated.user_embeddings[user]
    seen = set(updated.seen.select(np.array([user])).indices.tolist())
    order = [item for item in np.argsort(-scores) if item not in seen][:5]
    answer = updated.recommend_for(updated.user_ids[user], k=5)
    assert answer.item_ids == [updated.item_ids[item] for item in order]
    assert updated.similar_items(9999, k=3).similar_item_id.tolist()[0] != 9999
    assert retriever.num_items == dm.num_items  # the original is unchanged


def test_new_items_cannot_be_in_a_history_the_user_tower_reads(trained):
    _, _, path, _ = trained
    updated = Retriever.load(path).with_items([{"item_id": 777, "genre": "pop"}])
    answer = updated.recommend_for("someone", history=[777, updated.item_ids[0]], k=3)
    assert answer.dropped_items == [777] and answer.source == "computed"
    assert 777 not in answer.item_ids  # in the history: excluded all the same


def test_bad_items_are_refused_naming_the_problem(trained):
    _, _, path, _ = trained
    retriever = Retriever.load(path)
    with pytest.raises(ValueError, match=r"unknown feature\(s\) \['colour'\]"):
        retriever.with_items([{"item_id": 1, "colour": "red"}])
    with pytest.raises(ValueError, match="no 'item_id' column"):
        retriever.with_items([{"id": 1, "genre": "pop"}])
    with pytest.raises(ValueError, match=r"repeated: \[5\]"):
        retriever.with_items([{"item_id": 5}, {"item_id": 5}])
    with pytest.raises(ValueError, match="feature 'price' is numeric"):
        retriever.with_items([{"item_id": 5, "price": "cheap"}])


def test_an_id_only_item_tower_cannot_encode_a_new_item(tmp_path):
    log = synthetic_log(num_users=10, num_items=10, per_user=4)
    dm = MatchingDataModule(interactions=log)
    model = ListwiseMatching(IDEmbeddingTower(dm.num_users, 4), IDEmbeddingTower(dm.num_items, 4))
    retriever = Retriever.load(export_retriever(model, dm, tmp_path / "export"))
    assert retriever.item_tower is None
    with pytest.raises(ValueError, match="reads only item ids .* cannot encode a new"):
        retriever.with_items([{"item_id": 1234}])


def test_update_export_replaces_the_export_atomically(trained, tmp_path):
    _, _, path, _ = trained
    directory = Retriever.load(path).export(tmp_path / "live")
    before = Retriever.load(directory)
    updated = before.with_items([{"item_id": 4242, "genre": "jazz", "price": 8.0}])
    updated.update_export(directory)
    loaded = Retriever.load(directory)
    assert loaded.item_ids == updated.item_ids and loaded.num_items == before.num_items + 1
    np.testing.assert_array_equal(loaded.item_embeddings, updated.item_embeddings)
    assert loaded.similar_items(4242, k=2).shape[0] == 2
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["version"] == 1 and meta["files"]["index.faiss"] == "index.1.faiss"
    on_disk = {file.name for file in directory.iterdir()}
    assert on_disk == {*meta["files"].values(), "meta.json"}  # the old files are gone
    # a second update
    loaded.with_items([{"item_id": 4243, "genre": "pop"}]).update_export(directory)
    assert Retriever.load(directory).num_items == before.num_items + 2


def test_a_crash_during_an_update_leaves_the_old_export_readable(trained, tmp_path, monkeypatch):
    _, _, path, _ = trained
    directory = Retriever.load(path).export(tmp_path / "live")
    before = Retriever.load(directory)
    updated = before.with_items([{"item_id": 5151, "genre": "rock"}])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    # The new files are written, then the crash comes where meta.json would be replaced.
    monkeypatch.setattr(export_format.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        updated.update_export(directory)
    monkeypatch.undo()
    again = Retriever.load(directory)
    assert again.item_ids == before.item_ids
    pd.testing.assert_frame_equal(
        again.recommend(again.user_ids[:3]), before.recommend(before.user_ids[:3])
    )
    updated.update_export(directory)  # and the next update succeeds
    assert Retriever.load(directory).item_ids[-1] == 5151


def test_a_replaced_tower_file_is_refused(trained, tmp_path):
    _, _, path, _ = trained
    directory = Retriever.load(path).export(tmp_path / "live")
    stored = directory / "item_tower.npz"
    with np.load(stored) as arrays:
        data = dict(arrays)
    data["feature.genre"] = np.zeros_like(data["feature.genre"])
    np.savez(stored, **data)
    with pytest.raises(ValueError, match=r"item_tower\.npz is not the file exported"):
        Retriever.load(directory)


def test_an_ivf_index_keeps_its_training_and_finds_the_new_item(trained, tmp_path):
    model, dm, _, _ = trained
    path = export_retriever(
        model, dm, tmp_path / "ivf", index="IVF4,Flat", search_params={"nprobe": 4}
    )
    retriever = Retriever.load(path)
    updated = retriever.with_items([{"item_id": 31337, "genre": "pop", "price": 11.0}])
    assert type(updated.index).__name__ == "IndexIVFFlat" and updated.index.ntotal == 25
    # nprobe = nlist: exact, so the search equals brute force over the vectors
    query = updated.item_embeddings[-1:]
    scores = (updated.item_embeddings @ query.T)[:, 0]
    found = updated.similar_items(31337, k=4).similar_item_id.tolist()
    order = [updated.item_ids[item] for item in np.argsort(-scores) if item != 24][:4]
    assert found == order
