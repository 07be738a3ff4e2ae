import json
import os
import re
import stat
import subprocess
import sys
import textwrap

import faiss
import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from helpers import quiet_trainer, synthetic_log

from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule, __version__
from lit_matching.data.item_sets import ItemSets
from lit_matching.losses.similarity import get_similarity
from lit_matching.serving.from_training import export_retriever
from lit_matching.serving.retriever import Retriever

SIMILARITIES = ["cosine", "dot", "euclidean"]


def train(log: pd.DataFrame, similarity: str):
    pl.seed_everything(0, verbose=False)
    dm = MatchingDataModule(mode="listwise", interactions=log, batch_size=32, num_negatives=4)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 8),
        IDEmbeddingTower(dm.num_items, 8),
        similarity=similarity,
        learning_rate=0.05,
    )
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    return model, dm


@pytest.fixture(scope="module")
def trained():

    log = synthetic_log()
    return {name: train(log, name) for name in SIMILARITIES}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """For each similarity: (model, datamodule, in-memory retriever, export directory)."""
    out = {}
    for name, (model, dm) in trained.items():
        retriever = Retriever.from_module(model, dm, batch_size=7)
        directory = retriever.export(tmp_path_factory.mktemp(name) / "export")
        out[name] = (model, dm, retriever, directory)
    return out


def brute_force(directory, similarity, k, exclude_seen=True):
    """Top-k raw item ids per raw user id, from the exported files with numpy alone."""
    users = np.load(directory / "user_embeddings.npy")
    items = np.load(directory / "item_embeddings.npy")
    user_ids = json.loads((directory / "user_ids.json").read_text())
    item_ids = json.loads((directory / "item_ids.json").read_text())
    seen = np.load(directory / "seen_items.npz")
    u64, i64 = users.astype(np.float64), items.astype(np.float64)
    if similarity == "euclidean":
        scores = -((u64[:, None, :] - i64[None, :, :]) ** 2).sum(-1)
    else:  # cosine vectors are exported already normalised
        scores = u64 @ i64.T
    result = {}
    for u, user in enumerate(user_ids):
        if exclude_seen:
            scores[u, seen["indices"][seen["indptr"][u] : seen["indptr"][u + 1]]] = -np.inf
        order = np.argsort(-scores[u], kind="stable")
        order = [i for i in order if np.isfinite(scores[u, i])][:k]
        result[user] = ([item_ids[i] for i in order], scores[u, order])
    return result


def test_from_module_encodes_like_the_module_and_restores_train_mode(trained):
    model, dm = trained["cosine"]
    model.train()
    model.item_tower.eval()  # put in eval mode by its owner (e.g. frozen): must stay so
    retriever = Retriever.from_module(model, dm, batch_size=5)
    assert model.training and model.user_tower.training and not model.item_tower.training
    model.eval()
    with torch.no_grad():
        users = model.encode_users(torch.arange(dm.num_users)).numpy()
        items = model.encode_items(torch.arange(dm.num_items)).numpy()
    np.testing.assert_allclose(retriever.user_embeddings, users, rtol=1e-6)
    np.testing.assert_allclose(retriever.item_embeddings, items, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(retriever.item_embeddings, axis=1), 1, rtol=1e-5)
    assert retriever.user_ids == dm.user_vocab.to_list()
    assert retriever.item_ids == dm.item_vocab.to_list()
    assert (retriever.similarity, retriever.metric) == ("cosine", "ip")
    seen = dm.train_items.union(dm.val_items).union(dm.test_items)
    assert retriever.seen is not None
    np.testing.assert_array_equal(retriever.seen.indptr, seen.indptr)
    np.testing.assert_array_equal(retriever.seen.indices, seen.indices)


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_round_trip_matches_memory_and_brute_force(exported, similarity):
    _, dm, retriever, directory = exported[similarity]
    loaded = Retriever.load(directory)
    users = dm.user_vocab.to_list()
    assert isinstance(users[0], str)
    in_memory = retriever.recommend(users)
    from_disk = loaded.recommend(users)
    pd.testing.assert_frame_equal(in_memory, from_disk)
    assert list(from_disk.columns) == ["user_id", "rank", "item_id", "score"]
    assert len(from_disk) == 10 * len(users)
    assert from_disk.groupby("user_id").size().eq(10).all()

    expected = brute_force(directory, similarity, 10)
    for user, group in from_disk.groupby("user_id", sort=False):
        items, scores = expected[user]
        assert group["item_id"].tolist() == items, user
        assert group["rank"].tolist() == list(range(1, 11))
        # Scores are the training scores: the cosine, the dot product, -|u - i|^2.
        np.testing.assert_allclose(group["score"].to_numpy(), scores, atol=1e-4)
        assert (np.diff(group["score"].to_numpy()) <= 1e-6).all()


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_seen_items_are_excluded_unless_asked(exported, similarity):
    _, dm, retriever, directory = exported[similarity]
    seen = dm.train_items.union(dm.val_items).union(dm.test_items)
    recs = retriever.recommend(retriever.user_ids, k=15)
    users = dm.user_vocab.to_index(recs["user_id"])
    items = dm.item_vocab.to_index(recs["item_id"])
    assert not seen.contains(users, items).any()

    everything = retriever.recommend(retriever.user_ids, k=15, exclude_seen=False)
    users = dm.user_vocab.to_index(everything["user_id"])
    items = dm.item_vocab.to_index(everything["item_id"])
    assert seen.contains(users, items).any()
    expected = brute_force(directory, similarity, 15, exclude_seen=False)
    assert everything[everything.user_id == "u3"]["item_id"].tolist() == expected["u3"][0]


def test_fewer_rows_when_user_has_seen_nearly_everything(exported):
    _, dm, retriever, _ = exported["dot"]
    seen_counts = dict(zip(retriever.user_ids, retriever.seen.counts(), strict=True))
    recs = retriever.recommend(["u0", "u1"], k=dm.num_items)
    assert -1 not in recs["item_id"].tolist()
    for user in ("u0", "u1"):
        assert (recs.user_id == user).sum() == dm.num_items - seen_counts[user]
    assert recs["user_id"].tolist()[0] == "u0"  # users keep the order asked
    assert recs.groupby("user_id")["item_id"].nunique().tolist() == [
        dm.num_items - seen_counts["u0"],
        dm.num_items - seen_counts["u1"],
    ]


def test_single_id_unknown_ids_and_bad_k(exported):
    retriever = exported["cosine"][2]
    single = retriever.recommend("u5", k=3)
    pd.testing.assert_frame_equal(single, retriever.recommend(["u5"], k=3))
    assert single["user_id"].tolist() == ["u5"] * 3
    with pytest.raises(KeyError, match=r"unknown user id\(s\): 'nobody', 'u999'") as err:
        retriever.recommend(["u1", "nobody", "u999"])
    assert "'u1'" not in str(err.value)
    with pytest.raises(KeyError, match="12345"):
        retriever.similar_items([12345])
    with pytest.raises(ValueError, match="positive integer"):
        retriever.recommend("u1", k=0)
    empty = retriever.recommend([])
    assert empty.empty and list(empty.columns) == ["user_id", "rank", "item_id", "score"]
    assert retriever.similar_items([]).empty


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_similar_items_never_return_the_query(exported, similarity):
    retriever = Retriever.load(exported[similarity][3])
    items = retriever.item_ids
    assert isinstance(items[0], int)
    similar = retriever.similar_items(items, k=5)
    assert list(similar.columns) == ["item_id", "rank", "similar_item_id", "score"]
    assert len(similar) == 5 * len(items)
    assert (similar["item_id"] != similar["similar_item_id"]).all()
    # The nearest other item by brute force, under the model's similarity.
    vectors = retriever.item_embeddings.astype(np.float64)
    if similarity == "euclidean":
        scores = -((vectors[:, None] - vectors[None]) ** 2).sum(-1)
    else:
        scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    nearest = [items[i] for i in scores.argmax(1)]
    assert similar[similar["rank"] == 1]["similar_item_id"].tolist() == nearest
    everything = retriever.similar_items(items[0], k=10_000)
    assert len(everything) == len(items) - 1


def test_export_is_readable_without_lit_matching(exported, tmp_path):
    retriever, directory = exported["euclidean"][2:]
    # A fresh interpreter that only has numpy, json and faiss: lit_matching must not load.
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np, faiss
        d = {str(directory)!r}
        meta = json.load(open(d + "/meta.json"))
        users = np.load(d + "/user_embeddings.npy", allow_pickle=False)
        items = np.load(d + "/item_embeddings.npy", allow_pickle=False)
        user_ids = json.load(open(d + "/user_ids.json"))
        item_ids = json.load(open(d + "/item_ids.json"))
        seen = np.load(d + "/seen_items.npz", allow_pickle=False)
        index = faiss.read_index(d + "/index.faiss")
        dist, found = index.search(users[:1], 3)
        assert not any(name.startswith("lit_matching") for name in sys.modules)
        print(json.dumps({{
            "meta": meta, "users": list(users.shape), "items": list(items.shape),
            "user_dtype": str(users.dtype), "user_ids": user_ids[:2], "item_ids": item_ids[:2],
            "seen": sorted(seen.files), "indptr": len(seen["indptr"]),
            "nnz": len(seen["indices"]), "ntotal": index.ntotal, "found": found.tolist(),
        }}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    info = json.loads(result.stdout)
    meta = info["meta"]
    assert meta["format_version"] == 1
    assert meta["lit_matching_version"] == __version__
    assert (meta["similarity"], meta["metric"], meta["index"]) == ("euclidean", "l2", "Flat")
    assert (meta["num_users"], meta["num_items"], meta["dimension"]) == (40, 30, 8)
    assert meta["default_k"] == 10 and meta["search_params"] == {}
    assert info["users"] == [40, 8] and info["items"] == [30, 8]
    assert info["user_dtype"] == "float32"
    assert info["user_ids"] == ["u0", "u1"] and info["item_ids"] == [0, 10]
    assert info["seen"] == ["indices", "indptr"]
    assert info["indptr"] == 41 and info["nnz"] == 40 * 8 == retriever.seen.indices.size
    assert info["ntotal"] == 30
    top = retriever.recommend("u0", k=3, exclude_seen=False)["item_id"].tolist()
    assert [retriever.item_ids[i] for i in info["found"][0]] == top
    # Integer ids really are JSON integers, user ids JSON strings.
    raw = (directory / "item_ids.json").read_text()
    assert raw.startswith("[0, 10") and '"u0"' in (directory / "user_ids.json").read_text()
    assert not [path.name for path in directory.parent.iterdir() if path.name.startswith(".")]


def test_numpy_ids_are_exported_as_plain_json(tmp_path):
    vectors = np.eye(3, dtype=np.float32)
    retriever = Retriever(
        vectors[:2], vectors, np.array(["a", "b"]), np.array([7, 8, 9], dtype=np.int64), "dot"
    )
    directory = retriever.export(tmp_path / "out")
    assert json.loads((directory / "item_ids.json").read_text()) == [7, 8, 9]
    assert json.loads((directory / "user_ids.json").read_text()) == ["a", "b"]
    loaded = Retriever.load(directory)
    assert loaded.seen is not None and loaded.seen.indices.size == 0
    assert loaded.recommend("a", k=1)["item_id"].tolist() == [7]
    bad = Retriever(vectors[:1], vectors, [(1, 2)], [1, 2, 3], "dot")
    with pytest.raises(ValueError, match="strings or numbers"):
        bad.export(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["out"]  # no temp dir left behind


def test_export_refuses_to_overwrite_unless_asked(exported, tmp_path):
    retriever = exported["dot"][2]
    target = retriever.export(tmp_path / "model")
    with pytest.raises(FileExistsError, match="overwrite"):
        retriever.export(target)
    (target / "extra.txt").write_text("old")
    retriever.export(target, overwrite=True)
    assert not (target / "extra.txt").exists() and (target / "meta.json").is_file()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not a retriever export"):
        retriever.export(other, overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious"


@pytest.fixture
def copy(exported, tmp_path):
    """A fresh copy of the cosine export to break."""
    retriever = exported["cosine"][2]
    return retriever.export(tmp_path / "broken")


@pytest.mark.parametrize("name", ["meta.json", "item_embeddings.npy", "index.faiss"])
def test_missing_file_is_named(copy, name):
    (copy / name).unlink()
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        Retriever.load(copy)


def test_truncated_npy_is_named(copy):
    data = (copy / "user_embeddings.npy").read_bytes()
    (copy / "user_embeddings.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"user_embeddings\.npy"):
        Retriever.load(copy)


def test_wrong_format_version(copy):
    meta = json.loads((copy / "meta.json").read_text())
    meta["format_version"] = 2
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta\.json.*format_version 2"):
        Retriever.load(copy)


def test_mismatched_id_count(copy):
    ids = json.loads((copy / "user_ids.json").read_text())
    (copy / "user_ids.json").write_text(json.dumps(ids[:-1]))
    with pytest.raises(ValueError, match=r"user_ids\.json has 39 ids.*num_users=40"):
        Retriever.load(copy)


def test_mismatched_shapes(copy):
    np.save(copy / "item_embeddings.npy", np.zeros((29, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"item_embeddings\.npy has shape \(29, 8\)"):
        Retriever.load(copy)
    np.save(copy / "item_embeddings.npy", np.zeros((30, 8), dtype=np.float32))
    faiss.write_index(faiss.IndexFlatL2(8), str(copy / "index.faiss"))
    with pytest.raises(ValueError, match=r"index\.faiss holds 0 vectors.*num_items=30"):
        Retriever.load(copy)


def test_pickled_arrays_are_refused(copy):
    np.save(copy / "user_embeddings.npy", np.array([{"a": 1}] * 40, dtype=object))
    with pytest.raises(ValueError, match=r"user_embeddings\.npy"):
        Retriever.load(copy)


def test_bad_seen_items(copy):
    empty = np.zeros(0, dtype=np.int64)
    np.savez(copy / "seen_items.npz", indptr=np.zeros(5, dtype=np.int64), indices=empty)
    with pytest.raises(ValueError, match=r"seen_items\.npz: indptr has 5 entries"):
        Retriever.load(copy)
    np.savez(copy / "seen_items.npz", indptr=np.zeros(41), indices=np.zeros(0))
    with pytest.raises(ValueError, match=r"seen_items\.npz: .*integer arrays"):
        Retriever.load(copy)
    indptr = np.zeros(41, dtype=np.int64)
    indptr[1:] = 1
    np.savez(copy / "seen_items.npz", indptr=indptr, indices=np.array([30]))
    with pytest.raises(ValueError, match=r"seen_items\.npz: item indices must lie in \[0, 30\)"):
        Retriever.load(copy)


def test_approximate_index_exports_and_loads(trained, tmp_path):
    model, dm = trained["cosine"]
    directory = export_retriever(
        model, dm, tmp_path / "hnsw", index="HNSW16", search_params={"efSearch": 64}
    )
    loaded = Retriever.load(directory)
    assert loaded.index_spec == "HNSW16" and loaded.search_params == {"efSearch": 64}
    assert "HNSW" in type(loaded.index).__name__ and loaded.index.hnsw.efSearch == 64
    assert json.loads((directory / "meta.json").read_text())["index"] == "HNSW16"
    recs = loaded.recommend(loaded.user_ids, k=5)
    assert recs.groupby("user_id").size().eq(5).all()
    # On 30 items HNSW is (near) exact: most top-5 lists equal the exact ones.
    exact = Retriever.from_module(model, dm).recommend(loaded.user_ids, k=5)
    agree = (recs["item_id"].to_numpy() == exact["item_id"].to_numpy()).mean()
    assert agree > 0.9
    seen = dm.train_items.union(dm.val_items).union(dm.test_items)
    users, items = dm.user_vocab.to_index(recs.user_id), dm.item_vocab.to_index(recs.item_id)
    assert not seen.contains(users, items).any()


def test_constructor_validates_shapes():
    vectors = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="one id per vector"):
        Retriever(vectors, vectors, ["a", "b"], [1, 2, 3])
    with pytest.raises(ValueError, match="unique"):
        Retriever(vectors, vectors, ["a", "b", "a"], [1, 2, 3])
    seen = ItemSets.from_pairs(np.array([0]), np.array([0]), 2, 3)
    with pytest.raises(ValueError, match="seen items cover 2 users"):
        Retriever(vectors, vectors, ["a", "b", "c"], [1, 2, 3], seen=seen)


# ---------------------------------------------------------------- issue 13: corrupted exports
@pytest.mark.parametrize("name", ["user_embeddings.npy", "item_embeddings.npy"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vectors_are_refused_naming_file_and_row(copy, name, bad):
    vectors = np.load(copy / name)
    vectors[3, 1] = bad
    vectors[5, 0] = bad
    np.save(copy / name, vectors)
    with pytest.raises(ValueError, match=re.escape(name) + r".*row 3 .*not finite"):
        Retriever.load(copy)


def test_constructor_refuses_non_finite_vectors():
    vectors = np.eye(3, dtype=np.float32)
    broken = vectors.copy()
    broken[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"item embeddings.*row 2 .*not finite"):
        Retriever(vectors, broken, ["a", "b", "c"], [1, 2, 3], "dot")
    with pytest.raises(ValueError, match=r"user embeddings.*row 2 .*not finite"):
        Retriever(broken, vectors, ["a", "b", "c"], [1, 2, 3], "dot")


def _other_index_like(file, seed=1):
    """An index of the same kind, metric, size and dimension as ``file``, over other vectors."""
    original = faiss.read_index(str(file))
    vectors = np.random.default_rng(seed).normal(size=(original.ntotal, original.d))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    if isinstance(original, faiss.IndexFlat):
        other = faiss.IndexFlat(original.d, original.metric_type)
    else:
        other = faiss.index_factory(original.d, "HNSW16", original.metric_type)
    other.add(vectors)
    return other


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_replaced_flat_index_is_refused(exported, tmp_path, similarity):
    directory = exported[similarity][2].export(tmp_path / "export")
    faiss.write_index(_other_index_like(directory / "index.faiss"), str(directory / "index.faiss"))
    with pytest.raises(ValueError, match=r"index\.faiss"):
        Retriever.load(directory)


def test_replaced_approximate_index_is_refused(trained, tmp_path):
    model, dm = trained["dot"]
    directory = export_retriever(model, dm, tmp_path / "hnsw", index="HNSW16")
    assert Retriever.load(directory).num_items == 30
    faiss.write_index(_other_index_like(directory / "index.faiss"), str(directory / "index.faiss"))
    with pytest.raises(ValueError, match=r"index\.faiss"):
        Retriever.load(directory)


def test_replaced_item_vectors_are_refused(copy):
    items = np.load(copy / "item_embeddings.npy")
    np.save(copy / "item_embeddings.npy", items[::-1].copy())  # same vectors, other order
    with pytest.raises(ValueError, match=r"item_embeddings\.npy"):
        Retriever.load(copy)


def test_export_without_checksums_loads_and_still_checks_a_flat_index(exported, tmp_path):
    # Exports written before the checksums existed load; their Flat index is compared with
    # item_embeddings.npy vector by vector.
    retriever, _ = exported["dot"][2:]
    directory = retriever.export(tmp_path / "old")
    meta = json.loads((directory / "meta.json").read_text())
    for key in ("sha256", "towers", "files"):  # none of these existed then
        meta.pop(key, None)
    (directory / "meta.json").write_text(json.dumps(meta))
    loaded = Retriever.load(directory)
    pd.testing.assert_frame_equal(loaded.recommend("u1"), retriever.recommend("u1"))
    faiss.write_index(_other_index_like(directory / "index.faiss"), str(directory / "index.faiss"))
    with pytest.raises(ValueError, match=r"index\.faiss does not hold the vectors of"):
        Retriever.load(directory)


# ---------------------------------------------------------------- issue 13: zero vectors
def zero_item_case():
    """Raw user and item vectors, item 4 all zero, and their training (cosine) scores."""
    rng = np.random.default_rng(3)
    users = torch.from_numpy(rng.normal(size=(12, 6)).astype(np.float32))
    items = torch.from_numpy(rng.normal(size=(9, 6)).astype(np.float32))
    items[4] = 0.0
    similarity = get_similarity("cosine")
    return users, items, similarity


def training_rank(scores: np.ndarray, item: int, skip: int | None = None) -> int:
    """1-based rank of ``item`` in a row of training scores (``skip``: left out)."""
    others = np.delete(scores, [skip]) if skip is not None else scores
    own = scores[item]
    return int((others > own).sum()) + 1


def test_cosine_retriever_ranks_a_zero_item_as_training(tmp_path):
    users, items, similarity = zero_item_case()
    training = similarity.matrix(users, items).numpy()  # F.normalize(0) = 0: the zero item scores 0
    prepared_users, prepared_items = similarity.prepare(users), similarity.prepare(items)
    user_ids, item_ids = [f"u{i}" for i in range(12)], list(range(9))
    retriever = Retriever(
        prepared_users.numpy(), prepared_items.numpy(), user_ids, item_ids, "cosine"
    )
    loaded = Retriever.load(retriever.export(tmp_path / "export"))
    for served in (retriever, loaded):
        recs = served.recommend(user_ids, k=9, exclude_seen=False)
        for u, user in enumerate(user_ids):
            row = recs[recs.user_id == user]
            zero = row[row.item_id == 4]
            assert zero["rank"].item() == training_rank(training[u], 4), user
            assert zero["score"].item() == pytest.approx(0.0, abs=1e-6)
            np.testing.assert_allclose(row["score"], np.sort(training[u])[::-1], atol=1e-5)
        item_scores = similarity.matrix(items, items).numpy()
        similar = served.similar_items([i for i in item_ids if i != 4], k=8)
        for i in (i for i in item_ids if i != 4):
            row = similar[similar.item_id == i]
            expected = training_rank(item_scores[i], 4, skip=i)
            assert row[row.similar_item_id == 4]["rank"].item() == expected, i


def test_cosine_export_from_before_the_ip_index_loads_and_ranks_as_training(tmp_path):
    # Cosine exports used to hold an L2 index (meta.json metric "l2"): they still load, with
    # an inner-product index rebuilt from item_embeddings.npy.
    users, items, similarity = zero_item_case()
    training = similarity.matrix(users, items).numpy()
    prepared_items = similarity.prepare(items).numpy()
    user_ids = [f"u{i}" for i in range(12)]
    retriever = Retriever(
        similarity.prepare(users).numpy(), prepared_items, user_ids, list(range(9)), "cosine"
    )
    directory = retriever.export(tmp_path / "old")
    meta = json.loads((directory / "meta.json").read_text())
    meta["metric"] = "l2"
    meta.pop("sha256", None)
    (directory / "meta.json").write_text(json.dumps(meta))
    old_index = faiss.IndexFlatL2(6)
    old_index.add(prepared_items)
    faiss.write_index(old_index, str(directory / "index.faiss"))
    with pytest.warns(UserWarning, match=r"inner-product") as warned:
        loaded = Retriever.load(directory)
    assert warned[0].filename == __file__  # the warning points at the caller of load
    assert loaded.metric == "ip"
    recs = loaded.recommend(user_ids, k=9, exclude_seen=False)
    for u, user in enumerate(user_ids):
        row = recs[recs.user_id == user]
        assert row[row.item_id == 4]["rank"].item() == training_rank(training[u], 4), user


# ---------------------------------------------------------------- issue 13: permissions
@pytest.mark.parametrize(
    ("umask", "folder", "file"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)]
)
def test_export_follows_the_umask(tmp_path, umask, folder, file):
    vectors = np.eye(3, dtype=np.float32)
    retriever = Retriever(vectors[:2], vectors, ["a", "b"], [7, 8, 9], "dot")
    previous = os.umask(umask)
    try:
        directory = retriever.export(tmp_path / "out")
        replaced = retriever.export(tmp_path / "again")
        replaced = retriever.export(replaced, overwrite=True)
    finally:
        os.umask(previous)
    for path in (directory, replaced):
        assert stat.S_IMODE(path.stat().st_mode) == folder
        modes = {child.name: stat.S_IMODE(child.stat().st_mode) for child in path.iterdir()}
        assert set(modes.values()) == {file}, modes
