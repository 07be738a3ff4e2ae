"""The one check of a cut-off ``k`` (and of a list of them) for search, metrics and serving."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["check_k", "check_ks"]


def check_k(k: Any, name: str = "k") -> int:
    """``k`` as an ``int``, if it is a positive integer (``bool`` is not).

    Args:
        k: The value to check (a Python or numpy integer).
        name: The argument's name, for the error message.

    Raises:
        ValueError: Naming the argument and the value.

    Example:
        >>> check_k(np.int64(5))
        5
        >>> check_k(0, "default_k")
        Traceback (most recent call last):
        ...
        ValueError: default_k has to be a positive integer, got 0
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name} has to be a positive integer, got {k!r}")
    return int(k)


def check_ks(ks: Iterable[Any], name: str = "ks") -> tuple[int, ...]:
    """``ks`` as a tuple of ints, if it is a non-empty list of positive integers.

    Example:
        >>> check_ks([10, 50])
        (10, 50)
        >>> check_ks([])
        Traceback (most recent call last):
        ...
        ValueError: ks has to be a non-empty list of positive integers, got []
    """
    values = list(ks)
    try:
        checked = tuple(check_k(k, name) for k in values)
    except ValueError:
        checked = ()
    if not checked:
        raise ValueError(f"{name} has to be a non-empty list of positive integers, got {ks!r}")
    return checked
