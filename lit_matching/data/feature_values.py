"""Raw side-feature values to codes: the rules shared by training and serving (no torch).

:mod:`lit_matching.data.features` encodes a whole table with them; a served request's feature
values (:mod:`lit_matching.serving.feature_codes`) are encoded by the same rules, so a value
gets the code it had in training.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["category_codes", "is_missing", "padded_codes", "sorted_values", "split_values"]


def sorted_values(values: Iterable[Any]) -> tuple[Any, ...]:
    """Values sorted naturally, or by type and text when they do not compare.

    Example:
        >>> sorted_values([3, "a", 1])
        (1, 3, 'a')
    """
    values = list(values)
    try:
        return tuple(sorted(values))
    except TypeError:
        return tuple(sorted(values, key=lambda v: (type(v).__name__, str(v))))


def category_codes(categories: Sequence[Any], values: Sequence[Any]) -> np.ndarray:
    """Codes ``1..n`` of ``values`` among ``categories``; ``0`` for values not among them.

    Example:
        >>> category_codes(("f", "m"), ["m", "x", "f"]).tolist()
        [2, 0, 1]
    """
    index = pd.Index(list(categories), dtype=object).get_indexer(pd.Index(values, dtype=object))
    return (index + 1).astype(np.int64)


def padded_codes(
    categories: Sequence[Any], lists: Sequence[Sequence[Any]], width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Codes of each list's values, right-padded with ``0`` to ``width``, and the lengths.

    Each list must hold at most ``width`` values (cut them first).

    Example:
        >>> codes, lengths = padded_codes(("a", "b"), [["b", "x"], []], 3)
        >>> codes.tolist(), lengths.tolist()
        ([[2, 0, 0], [0, 0, 0]], [2, 0])
    """
    codes = np.zeros((len(lists), width), dtype=np.int64)
    for row, row_values in enumerate(lists):
        if row_values:
            codes[row, : len(row_values)] = category_codes(categories, row_values)
    return codes, np.array([len(values) for values in lists], dtype=np.int64)


def split_values(value: Any, sep: str | None) -> list[Any]:
    """The values of one multi-categorical cell (missing cell or values dropped).

    Example:
        >>> split_values("Action| Comedy|", "|"), split_values(["a", None], "|")
        (['Action', 'Comedy'], ['a'])
        >>> split_values(float("nan"), "|")
        []
    """
    if isinstance(value, str):
        return [token.strip() for token in value.split(sep) if token.strip()]
    if isinstance(value, list | tuple | np.ndarray | pd.Series):
        return [v for v in value if not is_missing(v)]
    return [] if is_missing(value) else [value]


def is_missing(value: Any) -> bool:
    """``None``, NaN or ``pd.NA``: a value that is not there."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA
