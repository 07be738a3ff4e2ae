"""Batch recommendations to Parquet (issue 15, point 4): lit_matching.serving.batch."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from lit_matching.data.item_sets import ItemSets
from lit_matching.serving import batch
from lit_matching.serving.batch import check_users, read_user_file, recommend_to_parquet
from lit_matching.serving.retriever import Retriever

NUM_USERS, NUM_ITEMS, DIM = 23, 40, 6


def random_seen(rng, num_users=NUM_USERS, num_items=NUM_ITEMS) -> ItemSets:
    """0 to 12 seen items per user; user 2 has seen all items but 3 (fewer rows than k)."""
    rows, items = [], []
    for user in range(num_users):
        size = num_items - 3 if user == 2 else int(rng.integers(0, 13))
        picked = rng.choice(num_items, size=size, replace=False)
        rows += [user] * size
        items += picked.tolist()
    return ItemSets.from_pairs(np.array(rows), np.array(items), num_users, num_items)


def make_retriever(interests=None, similarity="dot", user_ids=None, seed=0) -> Retriever:
    rng = np.random.default_rng(seed)
    shape = (NUM_USERS, DIM) if interests is None else (NUM_USERS, interests, DIM)
    users = rng.standard_normal(shape).astype(np.float32)
    items = rng.standard_normal((NUM_ITEMS, DIM)).astype(np.float32)
    if similarity == "cosine":  # the retriever takes vectors prepared for the index
        users /= np.linalg.norm(users, axis=-1, keepdims=True)
        items /= np.linalg.norm(items, axis=1, keepdims=True)
    user_ids = [f"u{u}" for u in range(NUM_USERS)] if user_ids is None else user_ids
    item_ids = [100 + 3 * i for i in range(NUM_ITEMS)]
    return Retriever(users, items, user_ids, item_ids, similarity, random_seen(rng))


def read(path) -> pd.DataFrame:
    return pd.read_parquet(path)


def assert_same(path, expected: pd.DataFrame):
    pd.testing.assert_frame_equal(read(path), expected.reset_index(drop=True))


@pytest.mark.parametrize("interests", [None, 3])
@pytest.mark.parametrize("chunk_size", [1, 5, 7, 23, 100])
def test_file_holds_recommend_for_every_user(tmp_path, interests, chunk_size):
    retriever = make_retriever(interests, "cosine")
    result = recommend_to_parquet(
        retriever, tmp_path / "recs.parquet", k=5, chunk_size=chunk_size, progress=False
    )
    expected = retriever.recommend(retriever.user_ids, k=5)
    assert_same(tmp_path / "recs.parquet", expected)
    assert result == (tmp_path / "recs.parquet", NUM_USERS, len(expected))
    assert len(expected) == NUM_USERS * 5 - 2  # user 2 has only 3 unseen items
    # one row group per chunk: the file was written chunk by chunk
    row_groups = pq.ParquetFile(tmp_path / "recs.parquet").metadata.num_row_groups
    assert row_groups == -(-NUM_USERS // chunk_size)


def brute_force(retriever: Retriever, k: int, exclude_seen: bool) -> pd.DataFrame:
    """Top-k by numpy: dot products (best interest for several), seen items at -inf."""
    scores = retriever.user_embeddings.astype(np.float64) @ retriever.item_embeddings.T
    if scores.ndim == 3:
        scores = scores.max(axis=1)
    rows = []
    for user, raw in enumerate(retriever.user_ids):
        if exclude_seen:
            scores[user, retriever.seen.row(user)] = -np.inf
        order = [
            i for i in np.argsort(-scores[user], kind="stable") if np.isfinite(scores[user, i])
        ]
        for rank, item in enumerate(order[:k], start=1):
            rows.append((raw, rank, retriever.item_ids[item], scores[user, item]))
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])


@pytest.mark.parametrize("interests", [None, 2])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_file_matches_a_numpy_brute_force(tmp_path, interests, exclude_seen):
    retriever = make_retriever(interests, "dot", seed=1)
    recommend_to_parquet(
        retriever, tmp_path / "r.parquet", k=4, exclude_seen=exclude_seen, chunk_size=6
    )
    got, expected = read(tmp_path / "r.parquet"), brute_force(retriever, 4, exclude_seen)
    assert got[["user_id", "rank", "item_id"]].values.tolist() == (
        expected[["user_id", "rank", "item_id"]].values.tolist()
    )
    np.testing.assert_allclose(got.score, expected.score, rtol=1e-5, atol=1e-5)


def test_include_seen_returns_seen_items(tmp_path):
    retriever = make_retriever()
    recommend_to_parquet(retriever, tmp_path / "r.parquet", k=6, exclude_seen=False, chunk_size=4)
    expected = retriever.recommend(retriever.user_ids, k=6, exclude_seen=False)
    assert_same(tmp_path / "r.parquet", expected)
    got = read(tmp_path / "r.parquet")
    users = got.user_id.str[1:].astype(int).to_numpy()
    items = (got.item_id.to_numpy() - 100) // 3
    assert retriever.seen.contains(users, items).any()  # else the flag changes nothing here
    assert len(got) == NUM_USERS * 6


def test_given_users_in_their_order_with_repeats(tmp_path):
    retriever = make_retriever(user_ids=list(range(50, 50 + NUM_USERS)))  # int ids
    users = [60, 51, 60, 72]
    result = recommend_to_parquet(retriever, tmp_path / "r.parquet", users, k=3, chunk_size=3)
    assert_same(tmp_path / "r.parquet", retriever.recommend(users, k=3))
    assert read(tmp_path / "r.parquet").user_id.dtype == np.int64
    assert result.users == 4
    one = recommend_to_parquet(retriever, tmp_path / "one.parquet", 60, k=3)
    assert one.users == 1 and read(tmp_path / "one.parquet").user_id.tolist() == [60] * 3


def test_unknown_users_are_named_and_nothing_is_written(tmp_path):
    retriever = make_retriever()
    with pytest.raises(KeyError, match=r"unknown user id\(s\): 'nobody', 'u99'"):
        recommend_to_parquet(retriever, tmp_path / "r.parquet", ["u1", "nobody", "u99"])
    assert list(tmp_path.iterdir()) == []


def test_users_file_lines_and_unknown_ids_with_their_lines(tmp_path):
    retriever = make_retriever()
    path = tmp_path / "users.txt"
    path.write_text("u3\n\n  u1  \nbob\nu4\n   \neve\n")
    users, lines = read_user_file(path)
    assert (users, lines) == (["u3", "u1", "bob", "u4", "eve"], [1, 3, 4, 5, 7])
    with pytest.raises(KeyError) as error:
        check_users(retriever, users, lines, path)
    assert error.value.args[0] == f"unknown user id(s) in {path}: 'bob' (line 4), 'eve' (line 7)"
    check_users(retriever, ["u3", "u1"])  # all known: no error
    many = [f"x{i}" for i in range(13)]
    with pytest.raises(KeyError) as error:
        check_users(retriever, many, list(range(1, 14)), "f.txt")
    assert error.value.args[0].endswith("'x9' (line 10) and 3 more")
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        read_user_file(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\n")
    with pytest.raises(ValueError, match=r"bad.txt is not UTF-8"):
        read_user_file(tmp_path / "bad.txt")


def test_a_failure_midway_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    retriever = make_retriever()
    output = tmp_path / "recs.parquet"
    output.write_bytes(b"the previous file")
    calls = []
    real = batch.search_top_k

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "search_top_k", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        recommend_to_parquet(retriever, output, k=3, chunk_size=10)
    assert len(calls) == 2  # the first chunk had been written
    assert output.read_bytes() == b"the previous file"
    assert [file.name for file in tmp_path.iterdir()] == ["recs.parquet"]  # no temporary left
    output.unlink()
    calls.clear()
    with pytest.raises(RuntimeError):
        recommend_to_parquet(retriever, output, k=3, chunk_size=10)
    assert list(tmp_path.iterdir()) == []


def test_empty_user_list_writes_an_empty_file_with_the_schema(tmp_path):
    retriever = make_retriever()
    result = recommend_to_parquet(retriever, tmp_path / "empty.parquet", [], k=3)
    recommend_to_parquet(retriever, tmp_path / "full.parquet", k=3)
    assert (result.users, result.rows) == (0, 0)
    empty, full = (pq.read_schema(tmp_path / f"{name}.parquet") for name in ("empty", "full"))
    assert empty.names == ["user_id", "rank", "item_id", "score"]
    assert [field.type for field in empty] == [field.type for field in full]
    assert "string" in str(empty.field("user_id").type)  # string or large_string
    assert len(read(tmp_path / "empty.parquet")) == 0


def test_progress_callback_bar_and_bad_arguments(tmp_path, capsys):
    retriever = make_retriever(interests=2)
    done = []
    recommend_to_parquet(retriever, tmp_path / "r.parquet", chunk_size=10, progress=done.append)
    assert done == [10, 10, 3]  # users, not vectors, for a multi-interest retriever
    capsys.readouterr()
    recommend_to_parquet(retriever, tmp_path / "r.parquet", chunk_size=10, progress=True)
    assert "recommending" in capsys.readouterr().err
    recommend_to_parquet(retriever, tmp_path / "r.parquet", chunk_size=10)  # not a terminal
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="chunk_size"):
        recommend_to_parquet(retriever, tmp_path / "r.parquet", chunk_size=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        recommend_to_parquet(retriever, tmp_path / "no" / "r.parquet")
    # k larger than the catalogue: every unseen item, as recommend does
    recommend_to_parquet(retriever, tmp_path / "r.parquet", k=1000)
    assert_same(tmp_path / "r.parquet", retriever.recommend(retriever.user_ids, k=1000))
