"""Explicit, logged cleaning steps for interaction logs.

Each step is a pure function: it returns a new frame (rows in input order, index reset) and
logs through ``rank_zero_info`` how many rows, users and items it dropped, so no interaction
disappears silently.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pytorch_lightning.utilities import rank_zero_info

__all__ = ["drop_duplicates", "k_core", "keep_min_rating"]


def _require(frame: pd.DataFrame, step: str, *columns: str) -> None:
    missing = [col for col in columns if col not in frame.columns]
    if missing:
        raise ValueError(
            f"{step}: no column(s) {missing}; the frame's columns are {list(frame.columns)}"
        )


def _nunique(frame: pd.DataFrame, col: str) -> int:
    return int(frame[col].nunique()) if col in frame.columns else 0


def _dropped(before: pd.DataFrame, after: pd.DataFrame, user_col: str, item_col: str) -> str:
    """``"dropped R of N rows, U of M users, I of K items"`` (users/items when present)."""
    parts = [f"{len(before) - len(after)} of {len(before)} rows"]
    if len(after) == len(before):  # nothing dropped: skip the costly distinct counts
        return "dropped nothing (" + parts[0].removeprefix("0 of ") + ")"
    for col, noun in ((user_col, "users"), (item_col, "items")):
        if col in before.columns:
            total = _nunique(before, col)
            parts.append(f"{total - _nunique(after, col)} of {total} {noun}")
    return "dropped " + ", ".join(parts)


def keep_min_rating(
    frame: pd.DataFrame,
    threshold: float,
    rating_col: str = "rating",
    user_col: str = "user_id",
    item_col: str = "item_id",
) -> pd.DataFrame:
    """Turn explicit ratings into implicit feedback: keep rows with ``rating >= threshold``.

    Rows with a missing rating are dropped too (and counted in the log).

    Args:
        frame: Interactions.
        threshold: Smallest rating kept.
        rating_col: Column of ratings.
        user_col: Column of user ids (only for the logged counts).
        item_col: Column of item ids (only for the logged counts).

    Returns:
        The kept rows, in input order, with a fresh index.

    Raises:
        ValueError: If ``rating_col`` is not a column of ``frame``.

    Example:
        >>> log = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5],
        ...                     "rating": [4.0, 2.5, 3.0]})
        >>> keep_min_rating(log, 3).item_id.tolist()
        [5, 5]
    """
    _require(frame, "keep_min_rating", rating_col)
    ratings = frame[rating_col]
    kept = frame[(ratings >= threshold).to_numpy()].reset_index(drop=True)
    missing = int(ratings.isna().sum())
    rank_zero_info(
        f"lit_matching: keep_min_rating({rating_col} >= {threshold}): "
        f"{_dropped(frame, kept, user_col, item_col)}"
        + (f" ({missing} with a missing {rating_col})" if missing else "")
    )
    return kept


def drop_duplicates(
    frame: pd.DataFrame,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    keep: Literal["first", "last"] = "last",
) -> pd.DataFrame:
    """Keep one interaction per ``(user, item)`` pair: the first or the last in time.

    Time is ``time_col`` with ties broken by row order; without ``time_col`` (``None`` or not
    a column of ``frame``) it is the row order alone.

    Args:
        frame: Interactions.
        user_col: Column of user ids.
        item_col: Column of item ids.
        time_col: Column ordering the interactions, or ``None``.
        keep: ``"first"`` or ``"last"``.

    Returns:
        The kept rows, in input order, with a fresh index.

    Raises:
        ValueError: If ``keep`` is invalid or the user / item column is missing.

    Example:
        >>> log = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [5, 5, 6],
        ...                     "timestamp": [9, 3, 4]})
        >>> drop_duplicates(log, keep="last").timestamp.tolist()
        [9, 4]
    """
    if keep not in ("first", "last"):
        raise ValueError(f"drop_duplicates: keep must be 'first' or 'last', got {keep!r}")
    _require(frame, "drop_duplicates", user_col, item_col)
    by_time = time_col is not None and time_col in frame.columns
    if by_time:
        # Stable sort so that equal timestamps keep their row order.
        order = np.argsort(frame[time_col].to_numpy(), kind="stable")
    else:
        order = np.arange(len(frame))
    repeated_sorted = frame.iloc[order].duplicated([user_col, item_col], keep=keep).to_numpy()
    repeated = np.empty(len(frame), dtype=bool)
    repeated[order] = repeated_sorted
    kept = frame[~repeated].reset_index(drop=True)
    rank_zero_info(
        f"lit_matching: drop_duplicates(keep={keep!r} by "
        f"{repr(time_col) if by_time else 'row order'}): "
        f"{_dropped(frame, kept, user_col, item_col)}"
    )
    return kept


def _core_mask(
    users: np.ndarray, items: np.ndarray, min_user: int, min_item: int
) -> tuple[np.ndarray, int]:
    """Rows of the k-core of coded ``users`` / ``items``, and the rounds it took."""
    keep = np.ones(users.size, dtype=bool)
    num_users, num_items = users.max(initial=-1) + 1, items.max(initial=-1) + 1
    rounds = 0
    while True:
        rounds += 1
        user_counts = np.bincount(users[keep], minlength=num_users)
        item_counts = np.bincount(items[keep], minlength=num_items)
        new_keep = keep & (user_counts[users] >= min_user) & (item_counts[items] >= min_item)
        if np.array_equal(new_keep, keep):
            return keep, rounds
        keep = new_keep


def _nothing_left(thresholds: str, users: np.ndarray, items: np.ndarray, rounds: int) -> ValueError:
    """The error of a k-core that kept nothing, with the log's largest counts for scale."""
    most_user = int(np.bincount(users).max(initial=0))
    most_item = int(np.bincount(items).max(initial=0))
    return ValueError(
        f"k_core({thresholds}) left no interaction of {len(users)} after {rounds} "
        f"round(s): the thresholds are too high for this log (its most active user has "
        f"{most_user} rows, its most popular item {most_item})"
    )


def k_core(
    frame: pd.DataFrame,
    min_user_interactions: int = 5,
    min_item_interactions: int = 5,
    user_col: str = "user_id",
    item_col: str = "item_id",
) -> pd.DataFrame:
    """Iteratively drop users and items with too few interactions until none is left.

    Each round removes every row whose user has fewer than ``min_user_interactions`` rows or
    whose item has fewer than ``min_item_interactions`` rows (counted among the rows still
    kept), until a round removes nothing. The result is the largest sub-log where both bounds
    hold. Rows are counted, so repeated pairs count more than once: call
    :func:`drop_duplicates` first to count distinct items.

    Args:
        frame: Interactions.
        min_user_interactions: Fewest rows a kept user has.
        min_item_interactions: Fewest rows a kept item has.
        user_col: Column of user ids.
        item_col: Column of item ids.

    Returns:
        The kept rows, in input order, with a fresh index.

    Raises:
        ValueError: If a threshold is negative, a column is missing or has missing ids, or
            nothing survives (naming the thresholds).

    Example:
        >>> log = pd.DataFrame({"user_id": [1, 1, 2, 2, 3], "item_id": [7, 8, 7, 8, 7]})
        >>> k_core(log, 2, 2).to_dict("list")
        {'user_id': [1, 1, 2, 2], 'item_id': [7, 8, 7, 8]}
    """
    for name, value in (
        ("min_user_interactions", min_user_interactions),
        ("min_item_interactions", min_item_interactions),
    ):
        if value < 0:
            raise ValueError(f"k_core: {name} must be >= 0, got {value}")
    _require(frame, "k_core", user_col, item_col)
    for col in (user_col, item_col):
        if frame[col].isna().any():
            raise ValueError(f"k_core: column {col!r} has missing ids; drop those rows first")
    users = pd.factorize(frame[user_col])[0]
    items = pd.factorize(frame[item_col])[0]
    keep, rounds = _core_mask(users, items, min_user_interactions, min_item_interactions)
    thresholds = (
        f"min_user_interactions={min_user_interactions}, "
        f"min_item_interactions={min_item_interactions}"
    )
    if not keep.any():
        raise _nothing_left(thresholds, users, items, rounds)
    kept = frame[keep].reset_index(drop=True)
    rank_zero_info(
        f"lit_matching: k_core({thresholds}): stable after {rounds} round(s), "
        f"{_dropped(frame, kept, user_col, item_col)}"
    )
    return kept
