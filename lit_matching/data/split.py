"""Train / validation / test splits of an indexed interaction log."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pytorch_lightning.utilities import rank_zero_info

__all__ = ["Split", "leave_last_out"]


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
    ``(user, time)`` as :func:`index_interactions` returns it.

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
