"""Recommendations for anyone (issue 15): known users, fresh histories, features, cold users.

Each answer of the loaded export (numpy + faiss + onnxruntime) is checked against a reference
computed independently: the PyTorch module's ``encode_users`` on hand-built inputs, then a
brute-force numpy ranking with the excluded items removed.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import synthetic_log

from lit_matching import (
    Categorical,
    FeatureTower,
    GRUTower,
    HistoryPoolingTower,
    IDEmbeddingTower,
    IDHistoryTower,
    ListwiseMatching,
    MatchingDataModule,
    MultiCategorical,
    MultiInterestTower,
    Numeric,
    Retriever,
)
from lit_matching.serving.from_training import export_retriever

HISTORY, DIM = 4, 8


def user_frame(num_users: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "user_id": [f"u{user}" for user in range(num_users)],
            "job": rng.choice(["artist", "doctor", "pilot"], num_users),
            "age": rng.integers(18, 70, num_users).astype(float),
            "likes": rng.choice(["jazz|rock", "rock", "pop|jazz|rock", ""], num_users),
        }
    )


USER_SPECS = [Categorical("job"), Numeric("age"), MultiCategorical("likes")]


def datamodule() -> MatchingDataModule:
    log = synthetic_log(num_users=24, num_items=30, per_user=8)
    return MatchingDataModule(
        interactions=log,
        history_length=HISTORY,
        user_side_features=user_frame(24),
        user_feature_specs=USER_SPECS,
    )


def user_tower(name: str, dm: MatchingDataModule) -> torch.nn.Module:
    if name == "gru":
        return GRUTower(dm.num_items, DIM)
    if name == "multi-interest":
        return MultiInterestTower(dm.num_items, DIM, num_interests=3)
    if name == "id":
        return IDEmbeddingTower(dm.num_users, DIM)
    if name == "simplex":  # id vector + attention over the history; unknown ids: history alone
        return IDHistoryTower(dm.num_users, dm.num_items, DIM, aggregation="attention")
    # YouTubeDNN: user features + pooled history
    history = HistoryPoolingTower(dm.num_items, 6)
    return FeatureTower(dm.user_feature_table, DIM, feature_dim=4, history_tower=history)


@pytest.fixture(scope="module", params=["gru", "multi-interest", "youtubednn", "id", "simplex"])
def served(request, tmp_path_factory):
    """(name, module, datamodule, loaded retriever) for each user tower."""
    torch.manual_seed(0)
    dm = datamodule()
    model = ListwiseMatching(
        user_tower(request.param, dm), IDEmbeddingTower(dm.num_items, DIM), similarity="cosine"
    )
    model.eval()
    path = export_retriever(model, dm, tmp_path_factory.mktemp("served") / "export")
    return request.param, model, dm, Retriever.load(path)


def reference_vector(model, dm, user: int, history: list[int] | None, coded=None) -> np.ndarray:
    """``encode_users`` of one user: the given history (positions) or the stored one."""
    features = dm.user_features("serve", np.array([max(user, 0)]))
    if history is not None:
        history = history[-HISTORY:]  # the tower reads the latest HISTORY items
        width = max(1, len(history))
        row = torch.full((1, width), dm.num_items, dtype=torch.long)
        if history:
            row[0, width - len(history) :] = torch.tensor(history)
        features["history"] = row
        features["history_length"] = torch.tensor([len(history)])
    features["ids"] = torch.tensor([user])
    for name, value in (coded or {}).items():
        features[name] = torch.as_tensor(value)
    with torch.no_grad():
        return model.encode_users(features)[0].numpy()


def brute_force(retriever, vector: np.ndarray, excluded: set[int], k: int):
    """Top ``k`` item positions by inner product (best interest for several vectors)."""
    scores = retriever.item_embeddings @ np.atleast_2d(vector).T
    scores = scores.max(axis=1)
    order = [item for item in np.argsort(-scores, kind="stable") if item not in excluded]
    return order[:k], scores[order[:k]]


def seen_of(retriever, user: int) -> set[int]:
    return set(retriever.seen.select(np.array([user])).indices.tolist())


def check(retriever, answer, items, scores):
    """The answer ranks as the reference; items tied in score may come in any order."""
    np.testing.assert_allclose(answer.scores, scores, rtol=0, atol=1e-5)
    if len(np.unique(np.round(scores, 5))) == len(scores):
        assert answer.item_ids == [retriever.item_ids[item] for item in items]
    else:  # e.g. the zero vector of an empty GRU history: every item scores 0
        allowed = brute_force_allowed = set(retriever.item_ids) - set(answer.dropped_items)
        assert set(answer.item_ids) <= brute_force_allowed and len(answer.item_ids) == len(items)
        del allowed


def test_a_known_user_alone_gets_the_stored_vector(served):
    _, _, _, retriever = served
    user = retriever.user_ids[3]
    answer = retriever.recommend_for(user, k=5)
    assert answer.source == "stored"
    frame = retriever.recommend(user, k=5)
    assert answer.item_ids == frame.item_id.tolist()
    np.testing.assert_allclose(answer.scores, frame.score, atol=1e-6)


@pytest.mark.parametrize("length", [0, 1, 3, 7])
def test_a_fresh_history_gives_the_vector_of_the_tower(served, length):
    name, model, dm, retriever = served
    user = 5
    rng = np.random.default_rng(length)
    history = rng.choice(dm.num_items, length, replace=False).tolist()
    raw = [retriever.item_ids[item] for item in history]
    answer = retriever.recommend_for(retriever.user_ids[user], history=raw, k=6)
    if name == "id":  # an id tower ignores histories: the stored vector, history excluded
        assert answer.source == "computed"
        vector = retriever.user_embeddings[user]
    else:
        assert answer.source == "computed"
        vector = reference_vector(model, dm, user, history)
    items, scores = brute_force(retriever, vector, set(history) | seen_of(retriever, user), 6)
    check(retriever, answer, items, scores)


def test_an_unknown_user_with_a_history(served):
    name, model, dm, retriever = served
    history = [4, 9, 2]
    raw = [retriever.item_ids[item] for item in history]
    answer = retriever.recommend_for("someone new", history=raw, k=5)
    if name == "id":  # an id embedding cannot encode a user it never saw
        assert answer.source == "popular"
        return
    assert answer.source == "computed"
    coded = None
    if name == "youtubednn":  # an unknown user's features are unknown: code 0, no values, mean
        coded = {
            "feature.job": [0],
            "feature.age": [0.0],
            "feature.likes": np.zeros((1, 3), dtype=np.int64),
            "feature.likes.length": [0],
        }
    vector = reference_vector(model, dm, -1, history, coded)
    items, scores = brute_force(retriever, vector, set(history), 5)
    check(retriever, answer, items, scores)


def test_a_user_with_nothing_known_gets_the_most_popular_items(served):
    _, _, dm, retriever = served
    answer = retriever.recommend_for("nobody", k=4, exclude=[retriever.item_ids[0]])
    assert answer.source == "popular"
    counts = np.asarray(dm.item_counts, dtype=float)
    counts_by_raw = dict(zip(retriever.item_ids, counts, strict=True))
    reference = sorted(
        (raw for raw in retriever.item_ids if raw != retriever.item_ids[0]),
        key=lambda raw: (-counts_by_raw[raw], retriever.item_ids.index(raw)),
    )[:4]
    assert answer.item_ids == reference
    assert answer.scores == [counts_by_raw[raw] for raw in reference]


def test_unknown_history_items_are_dropped_and_counted(served):
    name, model, dm, retriever = served
    raw = ["no such item", retriever.item_ids[7], -12345]
    answer = retriever.recommend_for(retriever.user_ids[2], history=raw, k=5)
    assert answer.dropped_items == ["no such item", -12345]
    assert answer.to_json()["num_dropped"] == 2
    assert retriever.item_ids[7] not in answer.item_ids
    if name != "id":
        vector = reference_vector(model, dm, 2, [7])
        items, scores = brute_force(retriever, vector, {7} | seen_of(retriever, 2), 5)
        check(retriever, answer, items, scores)


def test_a_batch_of_requests_equals_one_at_a_time(served):
    _, _, _, retriever = served
    from lit_matching.serving.requests import UserRequest

    ids = retriever.item_ids
    requests = [
        UserRequest(retriever.user_ids[1], k=3),
        UserRequest("new", history=[ids[3], ids[5]], k=5),
        UserRequest(None, k=2),
        UserRequest(retriever.user_ids[4], history=[ids[1]], exclude=[ids[2]], k=4),
        UserRequest(retriever.user_ids[4], history=[ids[6]], exclude_seen=False, k=4),
    ]
    batch = retriever.recommend_requests(requests)
    for request, answer in zip(requests, batch, strict=True):
        alone = retriever.recommend_for(
            request.user_id,
            request.history,
            request.features,
            request.k,
            request.exclude,
            request.exclude_seen,
        )
        assert answer.item_ids == alone.item_ids and answer.source == alone.source
        np.testing.assert_allclose(answer.scores, alone.scores, atol=1e-6)


def test_new_feature_values_of_a_user(tmp_path):
    torch.manual_seed(0)
    dm = datamodule()
    tower = FeatureTower(dm.user_feature_table, DIM, feature_dim=4, id_dim=4)
    model = ListwiseMatching(tower, IDEmbeddingTower(dm.num_items, DIM), similarity="dot")
    model.eval()
    retriever = Retriever.load(export_retriever(model, dm, tmp_path / "export"))
    table = dm.user_feature_table
    answer = retriever.recommend_for(
        "stranger", features={"job": "pilot", "likes": "rock|jazz|x"}, k=5
    )
    assert answer.source == "computed"
    coded = {  # codes by hand from the table's categories: independent of the serving codec
        "feature.job": [table["job"].categories.index("pilot") + 1],
        "feature.age": [0.0],
        "feature.likes": [
            [
                table["likes"].categories.index("rock") + 1,
                table["likes"].categories.index("jazz") + 1,
                0,
            ]
        ],
        "feature.likes.length": [3],
    }
    vector = reference_vector(model, dm, -1, None, coded)
    items, scores = brute_force(retriever, vector, set(), 5)
    check(retriever, answer, items, scores)
    # a known user with one new value keeps the stored others
    answer = retriever.recommend_for("u3", features={"age": 40}, k=5, exclude_seen=False)
    age = table["age"]
    coded = {"feature.age": [(40 - age.mean) / age.std]}
    vector = reference_vector(model, dm, retriever.user_position("u3"), None, coded)
    items, scores = brute_force(retriever, vector, set(), 5)
    check(retriever, answer, items, scores)
    with pytest.raises(ValueError, match=r"unknown feature\(s\) \['jobb'\]"):
        retriever.recommend_for("u3", features={"jobb": "pilot"})
    with pytest.raises(ValueError, match="feature 'age' is numeric, got str 'old'"):
        retriever.recommend_for("u3", features={"age": "old"})


def test_meta_json_lists_and_checks_the_tower_files(served, tmp_path):
    _, _, _, retriever = served
    path = retriever.export(tmp_path / "copy")
    meta = json.loads((path / "meta.json").read_text())
    for name in ("user_tower.onnx", "user_tower.npz", "item_popularity.npy"):
        assert name in meta["sha256"] and (path / name).is_file()
    assert meta["towers"]["user"]["history_length"] in (0, HISTORY)
    onnx = path / "user_tower.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"user_tower\.onnx is not the file exported"):
        Retriever.load(path)


def test_serving_loads_neither_torch_nor_lightning(served, tmp_path):
    _, _, _, retriever = served
    path = retriever.export(tmp_path / "export")
    code = textwrap.dedent(
        f"""
        import sys
        from lit_matching.serving.retriever import Retriever
        retriever = Retriever.load({str(path)!r})
        ids = retriever.item_ids
        answer = retriever.recommend_for("new", history=[ids[1], ids[2]], k=3)
        assert len(answer.item_ids) == 3, answer
        print(sorted(m for m in ("torch", "pytorch_lightning", "lightning") if m in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
