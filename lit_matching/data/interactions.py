"""Validating an interaction log and mapping its raw ids to contiguous indices."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "IdVocabulary",
    "IndexedInteractions",
    "id_kind",
    "index_interactions",
    "validate_interactions",
]


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


#: What a retriever export can write (as JSON) and a vocabulary can sort.
_ID_RULE = (
    "ids must be strings or finite numbers (not bool, bytes, lists, ...), all of one kind, "
    "as the retriever export writes them as JSON"
)
_CLEAN_OBJECT_IDS = ("string", "integer", "empty")  # pandas.api.types.infer_dtype kinds


def id_kind(value: Any) -> str | None:
    """``"number"`` or ``"string"`` for an id the export can write, else ``None``.

    The one rule for raw ids: read (:func:`validate_interactions`), exported and loaded
    (:mod:`lit_matching.serving.export_format`) alike.

    Example:
        >>> id_kind("u1"), id_kind(7), id_kind(float("inf")), id_kind(True)
        ('string', 'number', None, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "number"
    if isinstance(value, float):
        return "number" if math.isfinite(value) else None
    return None


def _described(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} id {text if len(text) <= 60 else text[:57] + '...'}"


def _first_bad_id(values: pd.Series, col: str, where: Callable[[int], str]) -> None:
    """Raise at the first id the export could not write, or where numbers and strings mix.

    Columns of integer or string dtype pass at once, and so do object columns pandas infers
    as all strings or all integers; others are looked at one by one (a float column from its
    first non-finite value on).
    """
    dtype = values.dtype
    start = 0
    if pd.api.types.is_integer_dtype(dtype) or isinstance(dtype, pd.StringDtype):
        return  # (bool is not an integer dtype to pandas)
    if pd.api.types.is_float_dtype(dtype):
        finite = np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if finite.all():
            return
        start = int(np.argmin(finite))
    elif pd.api.types.is_object_dtype(dtype):
        if pd.api.types.infer_dtype(values, skipna=False) in _CLEAN_OBJECT_IDS:
            return
    first: tuple[int, Any, str] | None = None
    raw = values.to_numpy(dtype=object)
    for position in range(start, len(raw)):
        value = raw[position].item() if isinstance(raw[position], np.generic) else raw[position]
        kind = id_kind(value)
        if kind is None:
            raise ValueError(
                f"column {col!r} holds {_described(value)} at {where(position)}: {_ID_RULE}"
            )
        if first is None:
            first = (position, value, kind)
        elif kind != first[2]:
            raise ValueError(
                f"column {col!r} mixes numbers and strings: {_described(first[1])} at "
                f"{where(first[0])}, {_described(value)} at {where(position)}: {_ID_RULE}"
            )


def validate_interactions(
    frame: pd.DataFrame,
    user_col: str,
    item_col: str,
    time_col: str | None,
    where: Callable[[int], str] | None = None,
) -> None:
    """Raise ``ValueError`` naming the column, row and value of the first problem found.

    Checks that the table is not empty, that the named columns exist, that ids are not
    missing and are strings or finite numbers, not both in one column (what a vocabulary can
    sort and an export can write: bool, bytes, list or infinite ids fail here, before
    training), and that timestamps are present and sortable.

    Args:
        frame: Interactions.
        user_col: Column of raw user ids.
        item_col: Column of raw item ids.
        time_col: Column of timestamps, or ``None``.
        where: Names the row at a position of ``frame`` in messages (e.g. the line of the
            file it was read from); default ``"row <index label>"``.

    Example:
        >>> log = pd.DataFrame({"user_id": [1, 2], "item_id": ["a", b"b"]})
        >>> validate_interactions(log, "user_id", "item_id", None)
        Traceback (most recent call last):
        ...
        ValueError: column 'item_id' holds bytes id b'b' at row 1: ids must be strings or ...
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"interactions must be a pandas DataFrame, got {type(frame).__name__}")

    def by_label(position: int) -> str:
        return f"row {frame.index[position]!r}"

    locate = where or by_label
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
            raise ValueError(
                f"column {col!r} has {int(null.sum())} missing id(s) (NaN/None), "
                f"first at {locate(int(np.argmax(null)))}"
            )
        _first_bad_id(frame[col], col, locate)
    if time_col is not None:
        _check_times(frame[time_col], time_col, locate)


def _check_times(times: pd.Series, time_col: str, locate: Callable[[int], str]) -> None:
    """Raise unless ``times`` are numbers or datetimes, none missing (naming the first bad row)."""
    if not (pd.api.types.is_numeric_dtype(times) or pd.api.types.is_datetime64_any_dtype(times)):
        try:
            bad = (pd.to_numeric(times, errors="coerce").isna() & times.notna()).to_numpy()
        except (TypeError, ValueError):  # e.g. lists: name no row rather than fail here
            bad = np.zeros(len(times), dtype=bool)
        example = (
            f" ({times.iloc[int(np.argmax(bad))]!r} at {locate(int(np.argmax(bad)))})"
            if bad.any()
            else ""
        )
        raise ValueError(
            f"column {time_col!r} must hold numbers or datetimes to order interactions, "
            f"got dtype {times.dtype}{example}"
        )
    null = times.isna().to_numpy()
    if null.any():
        raise ValueError(
            f"column {time_col!r} has {int(null.sum())} missing timestamp(s), "
            f"first at {locate(int(np.argmax(null)))}"
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
    are kept as they are: remove them first with
    :func:`~lit_matching.data.cleaning.drop_duplicates` (as
    :class:`~lit_matching.data.datamodule.MatchingDataModule` does) when an item must not be
    both a training item and a held-out target of the same user.

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
