import logging
import random

import numpy as np
import pandas as pd
import pytest
import torch

from lit_matching import MatchingDataModule
from lit_matching.data.interactions import IdVocabulary, index_interactions
from lit_matching.data.item_sets import ItemSets
from lit_matching.data.sampling import UniformNegativeSampler
from lit_matching.data.splits import leave_last_out


def random_sets(rng, num_rows=15, num_items=20):
    rows = rng.integers(0, num_rows, size=60)
    items = rng.integers(0, num_items, size=60)
    py = [set() for _ in range(num_rows)]
    for r, i in zip(rows, items, strict=True):
        py[r].add(int(i))
    return ItemSets.from_pairs(rows, items, num_rows, num_items), py


def test_item_sets_match_python_sets():
    rng = np.random.default_rng(0)
    a, pa = random_sets(rng)
    b, pb = random_sets(rng)
    for r in range(15):
        assert a.row(r).tolist() == sorted(pa[r])
        assert set(a.union(b).row(r)) == pa[r] | pb[r]
        assert set(a.difference(b).row(r)) == pa[r] - pb[r]
    picked = np.array([3, 3, 0, 14])
    assert [set(a.select(picked).row(i)) for i in range(4)] == [pa[3], pa[3], pa[0], pa[14]]
    rows, items = rng.integers(0, 15, 200), rng.integers(-1, 20, 200)
    expected = [int(i) in pa[r] for r, i in zip(rows, items, strict=True)]
    assert a.contains(rows, items).tolist() == expected


def test_vocabulary_round_trip_any_id_type():
    raw = pd.Series(["b", "a", "c", "a"])
    vocab = IdVocabulary.from_values(raw)
    assert vocab.to_list() == ["a", "b", "c"]
    assert vocab.to_raw(vocab.to_index(raw)).tolist() == raw.tolist()
    with pytest.raises(KeyError, match="'zz'"):
        vocab.to_index(["a", "zz"])


def test_leave_last_out(small_log, caplog):
    log = pd.concat(
        [
            small_log,
            pd.DataFrame({"user_id": ["short"] * 2, "item_id": [0, 10], "timestamp": [0.0, 1.0]}),
        ]
    )
    data = index_interactions(log)
    with caplog.at_level(logging.INFO):
        split = leave_last_out(data.frame)
    assert "1 user(s) with fewer than 3 interactions kept in training only" in caplog.text
    short = data.users.to_index(["short"])[0]
    assert (split.train.user == short).sum() == 2
    assert short not in set(split.val.user) | set(split.test.user)
    frame = data.frame
    for user, rows in frame[frame.user != short].groupby("user"):
        times = rows.sort_values("time").item.tolist()
        assert split.test[split.test.user == user].item.tolist() == times[-1:]
        assert split.val[split.val.user == user].item.tolist() == times[-2:-1]
        train = split.train[split.train.user == user]
        assert train.time.max() <= rows.time.sort_values().iloc[-2]  # no future in training
    assert len(split.train) + len(split.val) + len(split.test) == len(frame)


def test_leave_last_out_ties_follow_row_order():
    log = pd.DataFrame(
        {"user_id": [1, 1, 1, 1], "item_id": [1, 2, 3, 4], "timestamp": [0, 5, 5, 5]}
    )
    split = leave_last_out(index_interactions(log).frame)
    assert split.val.item.tolist() == [2] and split.test.item.tolist() == [3]  # indices of 3, 4


def test_sampler_never_returns_a_positive():
    rng = np.random.default_rng(0)
    num_users, num_items = 50, 30
    rows = np.repeat(np.arange(num_users), 20)
    items = np.concatenate([rng.choice(num_items, 20, replace=False) for _ in range(num_users)])
    # user 0 has seen all but item 7: the exact fallback must find it
    keep = (rows != 0) | (items != 7)
    rows = np.concatenate([rows[keep], np.zeros(num_items - 1, dtype=int)])
    items = np.concatenate([items[keep], np.delete(np.arange(num_items), 7)])
    positives = ItemSets.from_pairs(rows, items, num_users, num_items)
    sampler = UniformNegativeSampler(positives, max_rounds=2)
    users = rng.integers(0, num_users, size=2000)
    negatives, log_q = sampler.sample(users, 6, rng)
    assert not positives.contains(users[:, None], negatives).any()
    free = num_items - positives.counts()[users]
    np.testing.assert_allclose(
        log_q, np.broadcast_to(-np.log(free)[:, None], log_q.shape), atol=1e-12
    )
    assert (negatives[users == 0] == 7).all()
    assert len(np.unique(negatives[users == 1])) == num_items - len(positives.row(1))


def test_sampler_rejects_user_who_saw_everything():
    positives = ItemSets.from_pairs(np.zeros(3, dtype=int), np.arange(3), 2, 3)
    with pytest.raises(ValueError, match=r"1 user\(s\) interacted with every item.*user index 0"):
        UniformNegativeSampler(positives)


#: Keys (sorted) and shapes of a pair- or list-wise batch of 8 rows with 4 negatives.
RANKED_KEYS = [
    "neg_batch_log_q",
    "neg_items",
    "neg_log_q",
    "pos_items",
    "pos_log_q",
    "pos_sampler_log_q",
    "users",
]
RANKED_SHAPES = [(8, 4), (8, 4), (8, 4), (8,), (8,), (8,), (8,)]


@pytest.mark.parametrize(
    ("mode", "keys", "shapes"),
    [
        ("pointwise", ["items", "labels", "users"], [(40,), (40,), (40,)]),
        ("pairwise", RANKED_KEYS, RANKED_SHAPES),
        (2, RANKED_KEYS, RANKED_SHAPES),
    ],
)
def test_batches_of_each_mode(small_log, mode, keys, shapes):
    dm = MatchingDataModule(mode=mode, interactions=small_log, batch_size=8, num_negatives=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert sorted(batch) == keys
    assert [tuple(batch[k].shape) for k in keys] == shapes
    if mode == "pointwise":
        labels = batch["labels"].view(8, 5)
        assert (labels[:, 0] == 1).all() and (labels[:, 1:] == 0).all()
        assert (batch["users"].view(8, 5) == batch["users"].view(8, 5)[:, :1]).all()


def epoch_negatives(dm):
    users, negatives = [], []
    for batch in dm.train_dataloader():
        users.append(batch["users"].numpy())
        negatives.append(batch["neg_items"].numpy())
    return np.concatenate(users), np.concatenate(negatives)


def test_negatives_fresh_every_epoch_and_never_training_positives(small_log):
    dm = MatchingDataModule(mode="listwise", interactions=small_log, batch_size=16, num_negatives=5)
    dm.setup("fit")
    first_users, first = epoch_negatives(dm)
    second_users, second = epoch_negatives(dm)
    for users, negatives in ((first_users, first), (second_users, second)):
        assert not dm.train_items.contains(users[:, None], negatives).any()
    order1, order2 = np.argsort(first_users, kind="stable"), np.argsort(second_users, kind="stable")
    assert not np.array_equal(first[order1], second[order2])


def seeded_epochs(log, seed, global_seed):
    """Two epochs of a fresh datamodule with ``seed``, after seeding every global RNG."""
    random.seed(global_seed)
    np.random.seed(global_seed)  # noqa: NPY002 (the legacy global RNG is what must not matter)
    torch.manual_seed(global_seed)
    dm = MatchingDataModule(
        mode="listwise", interactions=log, batch_size=16, num_negatives=5, seed=seed
    )
    dm.setup("fit")
    return [epoch_negatives(dm) for _ in range(2)]


def test_negatives_follow_the_datamodule_seed_not_the_global_rngs(small_log):
    # different global random, numpy and torch states, the same datamodule seed: same batches
    reference = seeded_epochs(small_log, seed=3, global_seed=1)
    for (users, negatives), (same_users, same_negatives) in zip(
        reference, seeded_epochs(small_log, seed=3, global_seed=2), strict=True
    ):
        np.testing.assert_array_equal(users, same_users)
        np.testing.assert_array_equal(negatives, same_negatives)
    # the same global states, another datamodule seed: other negatives
    other = seeded_epochs(small_log, seed=4, global_seed=1)
    assert not np.array_equal(reference[0][1], other[0][1])


def test_validation_tuples_are_fixed_and_avoid_known_items(small_log):
    dm = MatchingDataModule(mode="listwise", interactions=small_log, num_negatives=5)
    dm.setup("fit")
    first, second = next(iter(dm.val_dataloader())), next(iter(dm.val_dataloader()))
    assert (first["neg_items"] == second["neg_items"]).all()
    known = dm.train_items.union(dm.val_items).union(dm.test_items)
    assert not known.contains(first["users"].numpy()[:, None], first["neg_items"].numpy()).any()


def test_eval_sets_exclude_seen_items(small_log):
    dm = MatchingDataModule(interactions=small_log)
    val, test = dm.eval_set("val"), dm.eval_set("test")
    assert len(val.users) == len(test.users) == 40
    for i, user in enumerate(val.users):
        assert set(val.exclude.row(i)) == set(dm.train_items.row(user))
        assert set(test.exclude.row(i)) == set(dm.train_items.row(user)) | set(
            dm.val_items.row(user)
        )
        assert not set(val.targets.row(i)) & set(val.exclude.row(i))


def test_reads_files_and_keeps_vocabulary_in_state(small_log, tmp_path):
    path = tmp_path / "log.parquet"
    small_log.to_parquet(path)
    dm = MatchingDataModule(interactions=str(path))
    assert (dm.num_users, dm.num_items) == (40, 30)
    state = dm.state_dict()
    assert state["user_ids"][:2] == ["u0", "u1"]
    other = MatchingDataModule(interactions=small_log.iloc[:-8])
    with pytest.raises(ValueError, match="user_ids differ"):
        other.load_state_dict(state)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="item_id"), r"no column\(s\) \['item_id'\]"),
        (lambda f: f.iloc[:0], "interaction table is empty"),
        (
            lambda f: f.assign(user_id=f.user_id.where(f.index != 5)),
            "'user_id' has 1 missing id.*row 5",
        ),
        (
            lambda f: f.assign(item_id=np.where(f.index == 7, np.nan, f.item_id)),
            "'item_id' has 1 missing id.*row 7",
        ),
        (
            lambda f: f.assign(timestamp=f.timestamp.where(f.index != 3)),
            "'timestamp' has 1 missing timestamp.*row 3",
        ),
        (lambda f: f.assign(timestamp="yesterday"), "'timestamp' must hold numbers or datetimes"),
    ],
)
def test_bad_input_names_the_problem(small_log, change, message):
    dm = MatchingDataModule(interactions=change(small_log))
    with pytest.raises(ValueError, match=message):
        dm.setup("fit")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown mode 'triplet'"):
        MatchingDataModule(mode="triplet")
    with pytest.raises(ValueError, match="num_negatives has to be a positive integer"):
        MatchingDataModule(mode="pointwise", num_negatives=0)
    with pytest.raises(FileNotFoundError, match=r"nope.csv"):
        MatchingDataModule(interactions="nope.csv").setup("fit")


@pytest.mark.parametrize("alpha", [0.0, 0.75, 1.0])
def test_popularity_sampler_frequencies_follow_count_power_alpha(alpha):
    from lit_matching.data.sampling import PopularityNegativeSampler

    counts = np.array([50, 20, 10, 5, 1, 0, 30, 2])
    positives = ItemSets.from_pairs(np.array([1, 1]), np.array([0, 6]), 2, len(counts))
    sampler = PopularityNegativeSampler(counts, positives, alpha=alpha)
    rng = np.random.default_rng(0)
    weights = np.where(counts > 0, counts.astype(float) ** alpha, 0.0)
    for user, excluded in ((0, []), (1, [0, 6])):
        draws, log_q = sampler.sample(np.full(40_000, user), 1, rng)
        expected = weights.copy()
        expected[excluded] = 0.0
        expected /= expected.sum()
        observed = np.bincount(draws.ravel(), minlength=len(counts))
        assert observed[expected == 0].sum() == 0  # zero-count and excluded items never drawn
        # chi-square statistic over the drawable items; 99.9% quantile for <= 6 dof is 22.5
        mask = expected > 0
        expect_n = expected[mask] * draws.size
        chi2 = (((observed[mask] - expect_n) ** 2) / expect_n).sum()
        assert chi2 < 22.5
        np.testing.assert_allclose(np.exp(log_q.ravel()), expected[draws.ravel()], rtol=1e-9)


def test_popularity_batches_carry_log_q(small_log):
    dm = MatchingDataModule(
        interactions=small_log, negative_sampler="popularity", popularity_alpha=1.0, batch_size=16
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    users, negatives = batch["users"].numpy(), batch["neg_items"].numpy()
    p = dm.item_counts / dm.item_counts.sum()
    free = 1 - np.array([p[dm.train_items.row(u)].sum() for u in users])
    expected = np.log(p[negatives]) - np.log(free)[:, None]
    np.testing.assert_allclose(batch["neg_log_q"].numpy(), expected, rtol=1e-5)
    # in-batch negatives are the batch's positives: drawn with each item's training share
    share = dm.item_counts[batch["pos_items"].numpy()] / len(dm.splits.train)
    np.testing.assert_allclose(batch["pos_log_q"].numpy(), np.log(share), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown negative_sampler 'hard'"):
        MatchingDataModule(negative_sampler="hard")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (  # export writes ids as JSON strings or numbers: bool ids failed only then
            lambda f: f.assign(user_id=f.index % 2 == 0),
            r"column 'user_id' holds bool id True at row 0",
        ),
        (
            lambda f: f.assign(item_id=[str(i).encode() for i in f.item_id]),
            r"column 'item_id' holds bytes id b'\d+' at row 0",
        ),
        (
            lambda f: f.assign(item_id=np.where(f.index == 9, np.inf, f.item_id)),
            r"column 'item_id' holds float id inf at row 9",
        ),
    ],
)
def test_ids_that_cannot_be_exported_are_rejected_before_training(small_log, change, message):
    # Issue 13, point 7: the error came from the export, after training.
    dm = MatchingDataModule(interactions=change(small_log))
    with pytest.raises(ValueError, match=message + r".*strings or finite numbers"):
        dm.setup("fit")


def test_bytes_ids_from_parquet_name_the_file(small_log, tmp_path):
    path = tmp_path / "log.parquet"
    small_log.assign(user_id=small_log.user_id.str.encode("ascii")).to_parquet(path)
    message = r"log\.parquet: column 'user_id' holds bytes id b'u0' at row 0"
    with pytest.raises(ValueError, match=message):
        MatchingDataModule(interactions=str(path)).setup("fit")


def test_mixed_number_and_string_ids_name_column_and_rows(small_log):
    # Issue 13, point 9: sorting the vocabulary raised a bare TypeError.
    log = small_log.assign(item_id=small_log.item_id.astype(object))
    log.loc[11, "item_id"] = "x"
    message = r"'item_id' mixes numbers and strings: int id \d+ at row 0, str id 'x' at row 11"
    with pytest.raises(ValueError, match=message):
        MatchingDataModule(interactions=log).setup("fit")


def test_parquet_list_ids_name_file_column_and_row(small_log, tmp_path):
    # Issue 13, point 9: pandas raised "unhashable type: 'numpy.ndarray'".
    path = tmp_path / "log.parquet"
    small_log.assign(item_id=[[item, 1] for item in small_log.item_id]).to_parquet(path)
    message = r"log\.parquet: column 'item_id' holds ndarray id .* at row 0"
    with pytest.raises(ValueError, match=message):
        MatchingDataModule(interactions=str(path)).setup("fit")


def test_garbage_line_in_a_csv_names_file_and_line(small_log, tmp_path):
    # Issue 13, point 9: "missing id(s) ... at row 2", without the file or its line.
    path = tmp_path / "log.csv"
    lines = small_log.to_csv(index=False).splitlines()
    lines[2:2] = [""]  # file line 3, blank: pandas skips it, the line count does not
    lines[5:5] = ["garbage"]  # file line 6
    lines[9:9] = ["also garbage"]
    path.write_text("\n".join(lines) + "\n")
    message = r"log\.csv: column 'item_id' has 2 missing id\(s\) \(NaN/None\), first at line 6\b"
    with pytest.raises(ValueError, match=message):
        MatchingDataModule(interactions=str(path)).setup("fit")
    part = {"train": small_log, "test": [small_log, str(path)]}  # pre-split parts name it too
    with pytest.raises(ValueError, match=message):
        MatchingDataModule(interactions=part).setup("fit")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", r"empty\.csv line 1: the file is empty"),
        ("latin.csv", "user_id,item_id\n7,\xe9t\xe9\n".encode("latin-1"), r"latin\.csv line 2"),
    ],
)
def test_unreadable_csv_names_the_file_in_the_datamodule(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        MatchingDataModule(interactions=str(tmp_path / name)).setup("fit")


@pytest.mark.parametrize(
    "value",
    [
        1,
        2**70,
        1.5,
        "a",
        np.int64(3),
        np.float32(2),
        np.str_("s"),
        True,
        np.bool_(False),
        b"x",
        np.bytes_(b"y"),
        np.inf,
        -np.inf,
        np.nan,
        None,
        (1,),
        [1],
        pd.Timestamp(0),
    ],
    ids=repr,
)
def test_ids_accepted_when_read_are_the_ids_an_export_writes(value):
    from lit_matching.data.interactions import validate_interactions
    from lit_matching.serving.export_format import _json_id

    frame = pd.DataFrame({"user_id": pd.Series([value, value], dtype=object), "item_id": [1, 2]})
    try:
        _json_id(value, "user")
        exported = True
    except ValueError:
        exported = False
    try:
        validate_interactions(frame, "user_id", "item_id", None)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == exported
