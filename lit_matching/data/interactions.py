"""Validating an interaction log and mapping its raw ids to contiguous indices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["IdVocabulary", "IndexedInteractions", "index_interactions", "validate_interactions"]


@dataclass(frozen=True)
class IdVocabulary:
    """Raw ids <-> contiguous indices ``0..len-1``, in sorted raw-id order.

    Example:
        >>> vocab = IdVocabulary.from_values(pd.Series(["b", "a", "b", "c"]))
        >>> len(vocab), vocab.to_index(["c", "a"]).tolist(), vocab.to_raw([1]).tolist()
        (3, [2, 0], ['b'])
    """

    raw_ids: pd.Index

    @classmethod
    def from_values(cls, values: pd.Series | np.ndarray | Sequence[Any]) -> IdVocabulary:
        """Vocabulary of the distinct values, sorted."""
        return cls(pd.Index(pd.unique(pd.Series(values))).sort_values())

    def __len__(self) -> int:
        return len(self.raw_ids)

    def to_index(self, raw: pd.Series | np.ndarray | Sequence[Any]) -> np.ndarray:
        """Indices of raw ids; raises ``KeyError`` naming the first unknown id."""
        index = self.raw_ids.get_indexer(pd.Index(raw))
        if (index < 0).any():
            unknown = np.asarray(raw, dtype=object)[index < 0]
            raise KeyError(f"{len(unknown)} unknown id(s), e.g. {unknown[0]!r}")
        return index.astype(np.int64)

    def to_raw(self, index: np.ndarray | Sequence[int]) -> np.ndarray:
        """Raw ids of indices."""
        return self.raw_ids.to_numpy()[np.asarray(index)]

    def to_list(self) -> list[Any]:
        """Raw ids as plain Python values (JSON- and checkpoint-friendly)."""
        return self.raw_ids.tolist()


@dataclass(frozen=True)
class IndexedInteractions:
    """An interaction log with contiguous ``user`` and ``item`` indices.

    Attributes:
        frame: Columns ``user``, ``item`` (int64 indices) and ``time`` (the order key),
            one row per interaction, sorted by ``(user, time)`` with ties in input order.
        users: Raw user ids of the ``user`` indices.
        items: Raw item ids of the ``item`` indices.
    """

    frame: pd.DataFrame
    users: IdVocabulary
    items: IdVocabulary


def validate_interactions(
    frame: pd.DataFrame, user_col: str, item_col: str, time_col: str | None
) -> None:
    """Raise ``ValueError`` naming the column, row and value of the first problem found.

    Checks that the table is not empty, that the named columns exist, that ids are not missing
    and that timestamps are present and sortable.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"interactions must be a pandas DataFrame, got {type(frame).__name__}")
    needed = [user_col, item_col] + ([time_col] if time_col is not None else [])
    missing = [col for col in needed if col not in frame.columns]
    if missing:
        raise ValueError(
            f"interaction table has no column(s) {missing}; its columns are "
            f"{list(frame.columns)} (set user_col / item_col / time_col to match)"
        )
    if len(frame) == 0:
        raise ValueError("interaction table is empty: there is nothing to train on")
    for col in (user_col, item_col):
        null = frame[col].isna().to_numpy()
        if null.any():
            row = frame.index[int(np.argmax(null))]
            raise ValueError(
                f"column {col!r} has {int(null.sum())} missing id(s) (NaN/None), "
                f"first at row {row!r}"
            )
    if time_col is not None:
        times = frame[time_col]
        if not (
            pd.api.types.is_numeric_dtype(times) or pd.api.types.is_datetime64_any_dtype(times)
        ):
            raise ValueError(
                f"column {time_col!r} must hold numbers or datetimes to order interactions, "
                f"got dtype {times.dtype}"
            )
        null = times.isna().to_numpy()
        if null.any():
            row = frame.index[int(np.argmax(null))]
            raise ValueError(
                f"column {time_col!r} has {int(null.sum())} missing timestamp(s), "
                f"first at row {row!r}"
            )


def index_interactions(
    frame: pd.DataFrame,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    extra_columns: Sequence[str] = (),
) -> IndexedInteractions:
    """Validate ``frame``, build id vocabularies and return the indexed, time-ordered log.

    Without a ``time_col`` the row order is the time order. Repeated ``(user, item)`` pairs
    are kept as they are: remove them first with :func:`~lit_matching.data.cleaning.drop_duplicates`
    (as :class:`MatchingDataModule` does) when an item must not be both a training item and a
    held-out target of the same user.

    Args:
        frame: Interactions with raw ids.
        user_col: Column of raw user ids.
        item_col: Column of raw item ids.
        time_col: Column ordering each user's interactions, or ``None`` for row order.
        extra_columns: Columns of ``frame`` carried over unchanged.

    Example:
        >>> log = pd.DataFrame({"user_id": ["u2", "u1", "u1"], "item_id": [7, 7, 9],
        ...                     "timestamp": [3, 2, 1]})
        >>> data = index_interactions(log)
        >>> data.frame.to_dict("list")
        {'user': [0, 0, 1], 'item': [1, 0, 0], 'time': [1, 2, 3]}
    """
    validate_interactions(frame, user_col, item_col, time_col)
    users = IdVocabulary.from_values(frame[user_col])
    items = IdVocabulary.from_values(frame[item_col])
    time = frame[time_col].to_numpy() if time_col is not None else np.arange(len(frame))
    indexed = pd.DataFrame(
        {
            "user": users.to_index(frame[user_col]),
            "item": items.to_index(frame[item_col]),
            "time": time,
            **{col: frame[col].to_numpy() for col in extra_columns},
        }
    )
    # Stable sort: interactions with equal timestamps keep their input order.
    indexed = indexed.sort_values(["user", "time"], kind="stable", ignore_index=True)
    return IndexedInteractions(frame=indexed, users=users, items=items)
