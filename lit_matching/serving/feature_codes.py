"""Side-feature values of a served request, encoded as the training table encoded them.

A :class:`FeatureCodec` holds what encoding one feature needs (its categories, or its mean and
standard deviation) as plain JSON, written in ``meta.json`` of an export; it turns raw values
into the ``feature.<name>`` inputs of an exported tower
(:meth:`~lit_matching.towers.feature.FeatureEncoder.input_names`) by the rules of
:mod:`lit_matching.data.feature_values`, which the training table used. No torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lit_matching.data.feature_values import (
    category_codes,
    is_missing,
    padded_codes,
    split_values,
)
from lit_matching.data.interactions import id_kind

__all__ = ["FEATURE_PREFIX", "FeatureCodec"]

#: Prefix of a tower's encoded-feature inputs (as in :mod:`lit_matching.towers.feature`).
FEATURE_PREFIX = "feature."
_KINDS = ("categorical", "multi_categorical", "numeric")


@dataclass(frozen=True)
class FeatureCodec:
    """How one side feature's raw values become a tower's inputs.

    Args:
        name: The feature (column) name.
        kind: ``"categorical"``, ``"multi_categorical"`` or ``"numeric"``.
        categories: Values coded ``1..n`` (code ``0``: unknown or missing).
        mean: Subtracted from a numeric value.
        std: Divides a numeric value after the mean.
        sep: Separator of a multi-categorical string (``None``: whitespace).
        width: Codes per multi-categorical value list (longer lists are cut, as in training).

    Example:
        >>> genres = FeatureCodec("genres", "multi_categorical", ("Action", "Drama"), width=2)
        >>> codes, lengths = genres.encode(["Drama|Action|Horror", None])
        >>> codes.tolist(), lengths.tolist()
        ([[2, 1], [0, 0]], [2, 0])
        >>> FeatureCodec("age", "numeric", mean=30.0, std=10.0).encode([50, None])[0].tolist()
        [2.0, 0.0]
    """

    name: str
    kind: str
    categories: tuple[Any, ...] = field(default=())
    mean: float = 0.0
    std: float = 1.0
    sep: str | None = "|"
    width: int = 1

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"feature {self.name!r}: kind must be one of {_KINDS}: {self.kind!r}")

    @property
    def input_names(self) -> tuple[str, ...]:
        """The tower inputs this feature fills."""
        base = f"{FEATURE_PREFIX}{self.name}"
        return (base, f"{base}.length") if self.kind == "multi_categorical" else (base,)

    def missing(self, rows: int) -> tuple[np.ndarray, ...]:
        """The inputs of ``rows`` entities without this feature (code 0, no values, the mean)."""
        return self.encode([None] * rows)

    def encode(self, values: Sequence[Any]) -> tuple[np.ndarray, ...]:
        """The inputs (see :attr:`input_names`) of one raw value per entity.

        Raises:
            ValueError: A numeric value that is not a finite number (naming the feature).
        """
        if self.kind == "numeric":
            return (np.array([self._number(value) for value in values], dtype=np.float32),)
        if self.kind == "categorical":
            known = [None if is_missing(value) else value for value in values]
            codes = category_codes(self.categories, known)
            codes[[value is None for value in known]] = 0
            return (codes,)
        lists = [split_values(value, self.sep)[: self.width] for value in values]
        return padded_codes(self.categories, lists, self.width)

    def _number(self, value: Any) -> float:
        if is_missing(value):
            return 0.0  # the mean, after standardising: what training gives a missing value
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ValueError(
                f"feature {self.name!r} is numeric, got {type(value).__name__} {value!r}"
            )
        if not math.isfinite(float(value)):
            raise ValueError(f"feature {self.name!r} must be finite, got {value!r}")
        return (float(value) - self.mean) / self.std

    def to_json(self) -> dict[str, Any]:
        """The codec as a JSON object (categories as plain strings and numbers)."""
        data: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "numeric":
            return data | {"mean": self.mean, "std": self.std}
        categories = [_plain(value, self.name) for value in self.categories]
        data["categories"] = categories
        if self.kind == "multi_categorical":
            data |= {"sep": self.sep, "width": self.width}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> FeatureCodec:
        """The codec of :meth:`to_json`; a ``ValueError`` names ``where`` if it is malformed."""
        try:
            return cls(
                name=str(data["name"]),
                kind=str(data["kind"]),
                categories=tuple(data.get("categories", ())),
                mean=float(data.get("mean", 0.0)),
                std=float(data.get("std", 1.0)),
                sep=data.get("sep", "|"),
                width=int(data.get("width", 1)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: malformed feature encoder {dict(data)!r} ({err})") from None


def _plain(value: Any, feature: str) -> Any:
    """A category as a plain JSON value (numpy scalars become Python ones)."""
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, bool) and id_kind(value) is None:
        raise ValueError(
            f"feature {feature!r}: category {value!r} ({type(value).__name__}) cannot be "
            "written as JSON; use strings or numbers"
        )
    return value
