"""Train / validation / test split strategies of an indexed interaction log.

Every strategy takes the frame :func:`~lit_matching.data.interactions.index_interactions`
returns (columns ``user``, ``item``, ``time``) and returns a
:class:`~lit_matching.data.splits.Split` of row-disjoint parts with the same columns, rows in
input order. All of them are vectorised (no per-user Python loop) and the random ones are
reproducible from ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd
from pytorch_lightning.utilities import rank_zero_info

__all__ = [
    "SPLITS",
    "Split",
    "leave_last_out",
    "presplit",
    "random_leave_one_out",
    "ratio_counts",
    "ratio_split",
    "time_cut",
]

TimeBound = int | float | datetime | np.datetime64
"""A ``time`` value to cut at: a number, or a datetime for datetime ``time`` columns."""

# Tolerance for float error in ``n * ratio`` (0.29 * 100 is 28.999999999999996).
_FLOOR_EPS = 1e-9


@dataclass(frozen=True)
class Split:
    """Row-disjoint parts of one interaction log (frames with ``user``, ``item``, ``time``)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


def leave_last_out(frame: pd.DataFrame, min_interactions: int = 3) -> Split:
    """Chronological leave-last-out: each user's last interaction is test, the one before val.

    Users with fewer than ``min_interactions`` interactions stay in training only (their count
    is logged). Ties in time are broken by row order, so ``frame`` must be sorted by
    ``(user, time)`` as :func:`~lit_matching.data.interactions.index_interactions` returns it.

    Example:
        >>> log = pd.DataFrame({"user": [0, 0, 0, 0, 1], "item": [1, 2, 3, 4, 1],
        ...                     "time": [1, 2, 3, 4, 1]})
        >>> split = leave_last_out(log)
        >>> split.train.item.tolist(), split.val.item.tolist(), split.test.item.tolist()
        ([1, 2, 1], [3], [4])
    """
    if min_interactions < 3:
        raise ValueError(f"min_interactions has to be at least 3, got {min_interactions}")
    from_end = frame.groupby("user", sort=False).cumcount(ascending=False).to_numpy()
    size = frame.groupby("user", sort=False)["user"].transform("size").to_numpy()
    eligible = size >= min_interactions
    short_users = frame.loc[~eligible, "user"].nunique()
    if short_users:
        rank_zero_info(
            f"lit_matching: {short_users} user(s) with fewer than {min_interactions} "
            "interactions kept in training only (no validation or test target)"
        )
    test = eligible & (from_end == 0)
    val = eligible & (from_end == 1)
    train = ~(test | val)
    return Split(
        train=frame[train].reset_index(drop=True),
        val=frame[val].reset_index(drop=True),
        test=frame[test].reset_index(drop=True),
    )


def _group_rank(user: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each row among its user's rows ordered by ``key``, and its user's row count.

    The sort is stable, so rows with equal keys are ranked in row order.
    """
    n = len(user)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.lexsort((key, user))
    sorted_user = user[order]
    starts_group = np.r_[True, sorted_user[1:] != sorted_user[:-1]]
    starts = np.flatnonzero(starts_group)
    group = np.cumsum(starts_group) - 1
    rank = np.empty(n, dtype=np.int64)
    size = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[group]
    size[order] = np.diff(np.r_[starts, n])[group]
    return rank, size


def _parts(frame: pd.DataFrame, val: np.ndarray, test: np.ndarray) -> Split:
    """Split of ``frame`` by boolean row masks; every other row is training."""
    train = ~(val | test)
    return Split(
        train=frame[train].reset_index(drop=True),
        val=frame[val].reset_index(drop=True),
        test=frame[test].reset_index(drop=True),
    )


def _log_short_users(user: np.ndarray, short: np.ndarray, minimum: int) -> None:
    """Log how many users are too short to hold anything out (they stay in training)."""
    count = len(np.unique(user[short]))
    if count:
        rank_zero_info(
            f"lit_matching: {count} user(s) with fewer than {minimum} interactions kept in "
            "training only (no validation or test target)"
        )


def random_leave_one_out(frame: pd.DataFrame, seed: int = 0, min_interactions: int = 3) -> Split:
    """Random leave-one-out: one random interaction per user is test, another one val.

    Unlike :func:`leave_last_out` this ignores time, so training may hold interactions later
    than the held-out ones. Users with fewer than ``min_interactions`` interactions stay in
    training only (their count is logged).

    Args:
        frame: Indexed log with columns ``user``, ``item``, ``time``.
        seed: Seed of the random choice; the same seed and frame give the same split.
        min_interactions: Smallest number of interactions a user needs to get a validation
            and a test target (at least 3, so that training keeps one).

    Returns:
        The split; exactly one val and one test row per eligible user.

    Example:
        >>> log = pd.DataFrame({"user": [0, 0, 0, 0, 1], "item": [1, 2, 3, 4, 1],
        ...                     "time": [1, 2, 3, 4, 1]})
        >>> split = random_leave_one_out(log, seed=0)
        >>> len(split.train), len(split.val), len(split.test)
        (3, 1, 1)
        >>> split.test.user.tolist(), split.test.equals(random_leave_one_out(log, seed=0).test)
        ([0], True)
    """
    if min_interactions < 3:
        raise ValueError(f"min_interactions has to be at least 3, got {min_interactions}")
    user = frame["user"].to_numpy()
    rng = np.random.default_rng(seed)
    # A random key per row turns "pick k random rows per user" into a sort.
    rank, size = _group_rank(user, rng.random(len(user)))
    eligible = size >= min_interactions
    _log_short_users(user, ~eligible, min_interactions)
    return _parts(frame, val=eligible & (rank == 1), test=eligible & (rank == 0))


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate ``(train, val, test)`` ratios: train, test > 0, val >= 0, sum 1."""
    message = (
        "ratios must be three (train, val, test) fractions with train > 0, val >= 0, "
        f"test > 0 and summing to 1, got {tuple(ratios)}"
    )
    if len(ratios) != 3:
        raise ValueError(message)
    train, val, test = (float(r) for r in ratios)
    finite = all(math.isfinite(r) for r in (train, val, test))
    if not finite or train <= 0 or val < 0 or test <= 0 or abs(train + val + test - 1) > 1e-6:
        raise ValueError(message)
    return train, val, test


def ratio_counts(
    size: np.ndarray, ratios: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user ``(train, val, test)`` counts of :func:`ratio_split` for users of ``size`` rows.

    Rounding rule, for a user with ``n`` interactions and ratios ``(r_train, r_val, r_test)``:

    * users with fewer than 3 interactions (2 when ``r_val == 0``) are all training;
    * ``test = floor(n * r_test)``, raised to at least 1 and capped so that val (when
      ``r_val > 0``) and train keep at least one interaction each;
    * ``val = floor(n * r_val)``, at least 1 and capped so that train keeps at least one
      (``val = 0`` when ``r_val == 0``);
    * ``train = n - val - test`` (so train absorbs the rounding remainder).

    Args:
        size: Number of interactions of each user.
        ratios: ``(train, val, test)`` fractions, validated as in :func:`ratio_split`.

    Returns:
        Arrays of train, val and test counts, each the shape of ``size``.

    Example:
        >>> [c.tolist() for c in ratio_counts(np.array([1, 2, 3, 10, 25]), (0.8, 0.1, 0.1))]
        [[1, 2, 1, 8, 21], [0, 0, 1, 1, 2], [0, 0, 1, 1, 2]]
    """
    _, r_val, r_test = _check_ratios(ratios)
    size = np.asarray(size, dtype=np.int64)
    has_val = r_val > 0
    minimum = 3 if has_val else 2
    eligible = size >= minimum
    # The upper clip bound may fall below 1 for ineligible users; they are zeroed below.
    test = np.clip(np.floor(size * r_test + _FLOOR_EPS).astype(np.int64), 1, size - minimum + 1)
    if has_val:
        val = np.clip(np.floor(size * r_val + _FLOOR_EPS).astype(np.int64), 1, size - 1 - test)
    else:
        val = np.zeros_like(size)
    test = np.where(eligible, test, 0)
    val = np.where(eligible, val, 0)
    return size - val - test, val, test


def ratio_split(
    frame: pd.DataFrame,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    order: Literal["time", "random"] = "time",
    seed: int = 0,
) -> Split:
    """Per-user split by ratio, chronological (``order="time"``) or shuffled (``"random"``).

    Each user's interactions are ordered (by time with ties in row order, or by a seeded
    shuffle) and cut into a train head, a val middle and a test tail of the sizes
    :func:`ratio_counts` documents: val and test get ``floor(n * ratio)`` each but at least
    one, train the rest. Users too short for that (fewer than 3 interactions, 2 when the val
    ratio is 0) stay in training only (their count is logged). With ``order="time"`` no
    user's training interaction is later than their val ones, nor val later than test.

    Args:
        frame: Indexed log with columns ``user``, ``item``, ``time``.
        ratios: ``(train, val, test)`` fractions: train and test positive, val positive or 0
            (an empty val frame), summing to 1.
        order: ``"time"`` for a chronological cut, ``"random"`` for a seeded shuffle per user.
        seed: Seed of the shuffle (unused with ``order="time"``).

    Returns:
        The split.

    Raises:
        ValueError: If ``ratios`` or ``order`` is invalid.

    Example:
        >>> log = pd.DataFrame({"user": [0] * 10, "item": range(10), "time": range(10)})
        >>> split = ratio_split(log, (0.6, 0.2, 0.2))
        >>> split.train.item.tolist(), split.val.item.tolist(), split.test.item.tolist()
        ([0, 1, 2, 3, 4, 5], [6, 7], [8, 9])
    """
    _check_ratios(ratios)
    if order not in ("time", "random"):
        raise ValueError(f"order must be 'time' or 'random', got {order!r}")
    user = frame["user"].to_numpy()
    if order == "time":
        key = frame["time"].to_numpy()
    else:
        key = np.random.default_rng(seed).random(len(user))
    rank, size = _group_rank(user, key)
    train, val, _ = ratio_counts(size, ratios)
    _log_short_users(user, train == size, 3 if ratios[1] > 0 else 2)
    return _parts(frame, val=(rank >= train) & (rank < train + val), test=rank >= train + val)


def time_cut(frame: pd.DataFrame, val_start: TimeBound, test_start: TimeBound) -> Split:
    """Global time cut: ``[.., val_start)`` train, ``[val_start, test_start)`` val, rest test.

    Users who appear in val or test but never in train (cold users) are kept, as the cut
    describes a real deployment where new users arrive; their number is logged. Models that
    need a user's history to score them will see no training interactions for these users.

    Args:
        frame: Indexed log with columns ``user``, ``item``, ``time``.
        val_start: First time of validation; ``val_start == test_start`` gives an empty val.
        test_start: First time of test.

    Returns:
        The split.

    Raises:
        ValueError: If ``val_start > test_start``.

    Example:
        >>> log = pd.DataFrame({"user": [0, 0, 0, 1], "item": [1, 2, 3, 1],
        ...                     "time": [1, 5, 9, 7]})
        >>> split = time_cut(log, val_start=5, test_start=8)
        >>> split.train.item.tolist(), split.val.user.tolist(), split.test.item.tolist()
        ([1], [0, 1], [3])
    """
    if val_start > test_start:  # type: ignore[operator]
        raise ValueError(f"val_start ({val_start}) must not be after test_start ({test_start})")
    time = frame["time"]
    val = ((time >= val_start) & (time < test_start)).to_numpy()
    test = (time >= test_start).to_numpy()
    user = frame["user"].to_numpy()
    held_out = np.unique(user[val | test])
    cold = int((~np.isin(held_out, user[~(val | test)])).sum())
    if cold:
        rank_zero_info(
            f"lit_matching: {cold} validation/test user(s) have no training interactions "
            "before val_start (cold users), kept"
        )
    return _parts(frame, val=val, test=test)


def _presplit_part(name: str, part: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``part`` with a fresh index, or ``ValueError`` naming the part and the missing columns."""
    if not isinstance(part, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(part).__name__}")
    missing = [col for col in columns if col not in part.columns]
    if missing:
        raise ValueError(
            f"{name} frame has no column(s) {missing}; its columns are {list(part.columns)}"
        )
    return part.reset_index(drop=True)


def _check_disjoint_pairs(parts: dict[str, pd.DataFrame]) -> None:
    """Raise ``ValueError`` if a ``(user, item)`` pair is in two parts (leaked target)."""
    pairs = pd.concat(
        [part[["user", "item"]].assign(part=name) for name, part in parts.items()],
        ignore_index=True,
    ).drop_duplicates()  # a pair repeated inside one part is not a leak
    shared = pairs[pairs.duplicated(["user", "item"], keep=False)]
    if len(shared):
        count = len(shared.drop_duplicates(["user", "item"]))
        # to_dict gives plain Python scalars, so the message reads (user=1, ...).
        example = shared.iloc[:1].to_dict("records")[0]
        user, item = example["user"], example["item"]
        where = shared[(shared.user == user) & (shared.item == item)].part.tolist()
        raise ValueError(
            f"{count} (user, item) pair(s) appear in more than one part, e.g. "
            f"(user={user!r}, item={item!r}) in {' and '.join(where)}"
        )


def presplit(train: pd.DataFrame, val: pd.DataFrame | None, test: pd.DataFrame) -> Split:
    """Wrap data that is already split, checking that no target leaks between parts.

    Each frame needs columns ``user`` and ``item``; other columns are kept. ``time`` is
    kept if every given part has it; if none has it, a ``time`` column of row positions
    (train rows, then val, then test) is added, as without a time column row order is time
    order. No ``(user, item)`` pair may appear in two parts.

    Args:
        train: Training interactions.
        val: Validation interactions, or ``None`` for an empty validation frame.
        test: Test interactions.

    Returns:
        The split, frames with columns ``user``, ``item``, ``time``.

    Raises:
        ValueError: If a column is missing, only some parts have ``time``, or a
            ``(user, item)`` pair is in two parts (with the count and an example pair).

    Example:
        >>> train = pd.DataFrame({"user": [0, 0, 1], "item": [1, 2, 1]})
        >>> split = presplit(train, None, pd.DataFrame({"user": [0], "item": [3]}))
        >>> len(split.val), split.test.to_dict("list")
        (0, {'user': [0], 'item': [3], 'time': [3]})
        >>> presplit(train, None, pd.DataFrame({"user": [1], "item": [1]}))
        Traceback (most recent call last):
        ...
        ValueError: 1 (user, item) pair(s) appear in more than one part, e.g. (user=1, item=1) in train and test
    """  # noqa: E501
    given = {"train": train} | ({} if val is None else {"val": val}) | {"test": test}
    with_time = [name for name, part in given.items() if "time" in getattr(part, "columns", ())]
    if with_time and len(with_time) != len(given):
        raise ValueError(
            f"only {with_time} of {list(given)} have a 'time' column: give it to all or none"
        )
    columns = ["user", "item", "time"] if with_time else ["user", "item"]
    parts = {name: _presplit_part(name, part, columns) for name, part in given.items()}
    _check_disjoint_pairs(parts)
    if "val" not in parts:
        parts["val"] = parts["train"].iloc[:0]
    if not with_time:
        offset = 0
        for name in ("train", "val", "test"):
            size = len(parts[name])
            parts[name] = parts[name].assign(time=np.arange(offset, offset + size))
            offset += size
    return Split(train=parts["train"], val=parts["val"], test=parts["test"])


SPLITS: dict[str, Callable[..., Split]] = {
    "leave_last_out": leave_last_out,
    "random_leave_one_out": random_leave_one_out,
    "ratio": ratio_split,
    "time_cut": time_cut,
}
"""Split strategies by name, for choosing one from a config."""
