import logging
import math
import re
from collections import Counter
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from lit_matching.data.splits import (
    SPLITS,
    Split,
    leave_last_out,
    presplit,
    random_leave_one_out,
    ratio_counts,
    ratio_split,
    time_cut,
)

# Users of many lengths, including 1 and 2 (too short to hold anything out).
LENGTHS = [1, 2, 3, 4, 5, 7, 10, 23, 2, 1, 6, 40, 3, 12]
RATIOS = [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.1, 0.1, 0.8), (0.1, 0.8, 0.1), (0.71, 0.0, 0.29)]


def make_log(time_range: int = 5, seed: int = 0) -> pd.DataFrame:
    """Indexed log sorted by (user, time); a small time_range makes many ties in time."""
    rng = np.random.default_rng(seed)
    rows = []
    for user, n in enumerate(LENGTHS):
        items = rng.choice(1000, size=n, replace=False)  # distinct, so (user, item) is a key
        times = np.sort(rng.integers(0, time_range, size=n))
        rows += [(user, int(i), int(t)) for i, t in zip(items, times, strict=True)]
    return pd.DataFrame(rows, columns=["user", "item", "time"]).astype("int64")


def rows(frame: pd.DataFrame) -> Counter:
    return Counter(map(tuple, frame[["user", "item", "time"]].to_numpy().tolist()))


def assert_partition(frame: pd.DataFrame, split: Split) -> None:
    """Parts have the input's columns, fresh indices, and together are the input."""
    for part in (split.train, split.val, split.test):
        assert list(part.columns) == list(frame.columns)
        assert part.index.equals(pd.RangeIndex(len(part)))
    # (user, item) is unique in the input, so multiset equality also means row-disjoint.
    assert rows(split.train) + rows(split.val) + rows(split.test) == rows(frame)
    assert len(split.train) + len(split.val) + len(split.test) == len(frame)


def counts(part: pd.DataFrame, user: int) -> int:
    return int((part.user == user).sum())


def reference_ratio_counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """The documented rounding rule, per user, in exact arithmetic."""
    _, r_val, r_test = (Fraction(str(r)) for r in ratios)
    minimum = 3 if r_val > 0 else 2
    if n < minimum:
        return n, 0, 0
    test = min(max(math.floor(n * r_test), 1), n - minimum + 1)
    val = min(max(math.floor(n * r_val), 1), n - 1 - test) if r_val > 0 else 0
    return n - val - test, val, test


def test_ratio_counts_hand_checked():
    sizes = np.array([1, 2, 3, 10, 100])
    assert [c.tolist() for c in ratio_counts(sizes, (0.8, 0.1, 0.1))] == [
        [1, 2, 1, 8, 80],
        [0, 0, 1, 1, 10],
        [0, 0, 1, 1, 10],
    ]
    # 0.29 * 100 is 28.999999999999996 in floats: the rule must still give 29.
    assert [c.tolist() for c in ratio_counts(sizes, (0.71, 0.0, 0.29))] == [
        [1, 1, 2, 8, 71],
        [0, 0, 0, 0, 0],
        [0, 1, 1, 2, 29],
    ]
    # Minimums of one val and one test never empty training.
    assert [c.tolist() for c in ratio_counts(np.array([3, 4]), (0.1, 0.1, 0.8))] == [
        [1, 1],
        [1, 1],
        [1, 2],
    ]


@pytest.mark.parametrize("ratios", RATIOS)
@pytest.mark.parametrize("order", ["time", "random"])
def test_ratio_split_counts_follow_rule(ratios, order):
    frame = make_log()
    split = ratio_split(frame, ratios, order=order, seed=3)
    assert_partition(frame, split)
    for user, n in enumerate(LENGTHS):
        got = (counts(split.train, user), counts(split.val, user), counts(split.test, user))
        assert got == reference_ratio_counts(n, ratios), (user, n)


@pytest.mark.parametrize("ratios", RATIOS)
def test_ratio_split_time_is_chronological(ratios):
    frame = make_log()
    split = ratio_split(frame, ratios, order="time")
    for user, user_rows in frame.groupby("user"):
        # Ties in time keep row order, so each part is a contiguous slice of the user's rows.
        items = user_rows.item.tolist()
        n_train, n_val, _ = reference_ratio_counts(len(items), ratios)
        assert split.train[split.train.user == user].item.tolist() == items[:n_train]
        assert split.val[split.val.user == user].item.tolist() == items[n_train : n_train + n_val]
        assert split.test[split.test.user == user].item.tolist() == items[n_train + n_val :]


def assert_no_leakage(split: Split) -> None:
    """Per user: every train time <= every val time <= every test time."""
    last = {name: getattr(split, name).groupby("user").time.max() for name in ("train", "val")}
    first = {name: getattr(split, name).groupby("user").time.min() for name in ("val", "test")}
    for before, after in (("train", "val"), ("train", "test"), ("val", "test")):
        both = last[before].index.intersection(first[after].index)
        assert len(both) > 0
        assert (last[before][both] <= first[after][both]).all(), (before, after)


def test_ratio_split_time_ignores_input_row_order():
    frame = make_log(time_range=50)
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    split = ratio_split(shuffled, (0.6, 0.2, 0.2), order="time")
    assert_partition(shuffled, split)
    assert_no_leakage(split)


def test_ratio_split_val_ratio_zero_gives_empty_val():
    frame = make_log()
    split = ratio_split(frame, (0.5, 0.0, 0.5))
    assert split.val.empty and list(split.val.columns) == ["user", "item", "time"]
    assert len(split.test) > 0


@pytest.mark.parametrize(
    "ratios",
    [(0.8, 0.2), (0.9, 0.1, 0.1), (0.0, 0.5, 0.5), (0.8, 0.2, 0.0), (0.9, -0.1, 0.2)],
)
def test_ratio_split_rejects_bad_ratios(ratios):
    with pytest.raises(ValueError, match=re.escape(str(tuple(ratios)))):
        ratio_split(make_log(), ratios)


def test_ratio_split_rejects_bad_order():
    with pytest.raises(ValueError, match="'oldest'"):
        ratio_split(make_log(), order="oldest")  # type: ignore[arg-type]


def test_random_leave_one_out_counts(caplog):
    frame = make_log()
    with caplog.at_level(logging.INFO):
        split = random_leave_one_out(frame, seed=0)
    assert_partition(frame, split)
    short = sum(n < 3 for n in LENGTHS)
    assert f"lit_matching: {short} user(s) with fewer than 3 interactions" in caplog.text
    for user, n in enumerate(LENGTHS):
        held = int(n >= 3)
        assert (counts(split.val, user), counts(split.test, user)) == (held, held)
        assert counts(split.train, user) == n - 2 * held


def test_random_leave_one_out_min_interactions():
    split = random_leave_one_out(make_log(), min_interactions=6)
    assert set(split.test.user) == {u for u, n in enumerate(LENGTHS) if n >= 6}
    with pytest.raises(ValueError, match="at least 3"):
        random_leave_one_out(make_log(), min_interactions=2)


RANDOM_SPLITS = {
    "random_leave_one_out": lambda frame, seed: random_leave_one_out(frame, seed=seed),
    "ratio_random": lambda frame, seed: ratio_split(frame, (0.6, 0.2, 0.2), "random", seed),
}


@pytest.mark.parametrize("name", RANDOM_SPLITS)
def test_random_splits_reproducible_by_seed(name):
    split_fn, frame = RANDOM_SPLITS[name], make_log()
    first, again, other = split_fn(frame, 7), split_fn(frame, 7), split_fn(frame, 8)
    for part in ("train", "val", "test"):
        pd.testing.assert_frame_equal(getattr(first, part), getattr(again, part))
    assert not first.test.equals(other.test)


@pytest.mark.parametrize("name", RANDOM_SPLITS)
def test_random_splits_pick_every_position(name):
    # Over many seeds every interaction of a user is sometimes the test target,
    # not just the last ones (which a chronological split would pick).
    split_fn = RANDOM_SPLITS[name]
    frame = make_log()
    frame = frame[frame.user == LENGTHS.index(10)]
    picked = Counter()
    for seed in range(60):
        picked.update(split_fn(frame, seed).test.item.tolist())
    assert set(picked) == set(frame.item)


def time_cut_log() -> pd.DataFrame:
    cold = pd.DataFrame({"user": [99, 99], "item": [5, 6], "time": [15, 17]})
    return pd.concat([make_log(time_range=20), cold], ignore_index=True)


def test_time_cut_boundaries_and_cold_users(caplog):
    frame = time_cut_log()
    with caplog.at_level(logging.INFO):
        split = time_cut(frame, val_start=10, test_start=15)
    assert_partition(frame, split)
    assert (split.train.time < 10).all()
    assert split.val.time.between(10, 14).all()
    assert (split.test.time >= 15).all()
    # Rows exactly at a boundary belong to the later part.
    assert rows(split.val) == rows(frame[frame.time.between(10, 14)])
    cold = (set(split.val.user) | set(split.test.user)) - set(split.train.user)
    assert 99 in cold and 99 in set(split.test.user)  # cold users are kept
    assert f"lit_matching: {len(cold)} validation/test user(s)" in caplog.text


def test_time_cut_datetimes_and_empty_val():
    frame = time_cut_log()
    frame["time"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(frame.time, unit="D")
    cut = pd.Timestamp("2024-01-11")
    split = time_cut(frame, cut, cut)
    assert split.val.empty
    assert (split.train.time < cut).all() and (split.test.time >= cut).all()
    assert len(split.train) + len(split.test) == len(frame)


def test_time_cut_rejects_reversed_cut():
    with pytest.raises(ValueError, match="val_start"):
        time_cut(time_cut_log(), val_start=15, test_start=10)


def test_presplit_without_time_and_val():
    train = pd.DataFrame({"user": [0, 0, 1], "item": [1, 2, 1], "extra": [0, 0, 0]})
    train = pd.concat([train, train.iloc[:1]])  # a repeat inside one part is not a leak
    test = pd.DataFrame({"user": [0, 1], "item": [3, 2]})
    split = presplit(train, None, test)
    assert list(split.val.columns) == ["user", "item", "extra", "time"] and split.val.empty
    assert split.train.extra.tolist() == [0, 0, 0, 0]  # other columns are kept
    assert split.train.time.tolist() == [0, 1, 2, 3] and split.test.time.tolist() == [4, 5]
    assert split.test[["user", "item"]].values.tolist() == [[0, 3], [1, 2]]


def test_presplit_keeps_time():
    part = pd.DataFrame({"user": [0], "item": [1], "time": [5.0]})
    other = part.assign(item=2, time=9.0)
    split = presplit(part, other, other.assign(item=3))
    assert split.val.time.tolist() == [9.0] and split.test.item.tolist() == [3]


def test_presplit_names_the_overlap():
    train = pd.DataFrame({"user": [0, 0, 1, 2], "item": [1, 2, 1, 4]})
    val = pd.DataFrame({"user": [0, 2], "item": [2, 4]})
    test = pd.DataFrame({"user": [3], "item": [1]})
    message = r"2 \(user, item\) pair\(s\).* e\.g\. \(user=0, item=2\) in train and val"
    with pytest.raises(ValueError, match=message):
        presplit(train, val, test)


def test_presplit_validates_columns():
    good = pd.DataFrame({"user": [0], "item": [1]})
    with pytest.raises(ValueError, match=r"test frame has no column\(s\) \['item'\]"):
        presplit(good, None, pd.DataFrame({"user": [0], "product": [2]}))
    with pytest.raises(ValueError, match="'time' column"):
        presplit(good.assign(time=1), None, good.assign(item=2))


def test_splits_registry():
    assert set(SPLITS) == {"leave_last_out", "random_leave_one_out", "ratio", "time_cut"}
    assert SPLITS["leave_last_out"] is leave_last_out
    frame = make_log()
    for name, split_fn in SPLITS.items():
        kwargs = {"val_start": 2, "test_start": 4} if name == "time_cut" else {}
        split = split_fn(frame, **kwargs)
        assert_partition(frame, split)
        assert len(split.test) > 0, name
