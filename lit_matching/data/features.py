"""Static side features of users or items: specs, and their encoding into a table.

Side features (a user's age and occupation, an item's genres and release year) are encoded once
into a :class:`FeatureTable` aligned with an :class:`~lit_matching.data.interactions.IdVocabulary`:
row ``i`` describes the entity with index ``i``. The table holds tensors only (no pandas): it is
the input of :class:`~lit_matching.towers.feature.FeatureTower`, which keeps it as buffers, so
batches, evaluation and export only ever pass ids.

Three kinds of feature are supported, each described by a spec:

* :class:`Categorical`: one value per entity (gender, occupation). Codes ``1..n`` are the
  distinct values in sorted order; code ``0`` is reserved for unknown/missing.
* :class:`Numeric`: one number per entity (age, release year), standardised by default;
  missing values become ``0`` (the mean, after standardising).
* :class:`MultiCategorical`: a set of values per entity (genres, tags), given as a string
  split on ``sep`` (``"Action|Comedy"``; RecBole ``token_seq`` columns use ``sep=" "``) or as
  a list. Codes as for :class:`Categorical`, right-padded with ``0``.

Example:
    >>> import pandas as pd
    >>> from lit_matching.data.interactions import IdVocabulary
    >>> movies = pd.DataFrame({"item_id": [1, 2], "genres": ["Action|Comedy", "Drama"],
    ...                        "year": [1995, 1997]})
    >>> table = FeatureTable.from_frame(
    ...     movies, "item_id", IdVocabulary.from_values([1, 2, 3]),
    ...     [MultiCategorical("genres"), Numeric("year")])
    >>> table["genres"].codes.tolist(), table["year"].values.tolist()
    ([[1, 2], [3, 0], [0, 0]], [-1.0, 1.0, 0.0])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from lit_matching.data.feature_values import (
    category_codes,
    padded_codes,
    sorted_values,
    split_values,
)
from lit_matching.data.interactions import IdVocabulary

__all__ = [
    "Categorical",
    "CategoricalColumn",
    "FeatureSpec",
    "FeatureTable",
    "MultiCategorical",
    "MultiCategoricalColumn",
    "Numeric",
    "NumericColumn",
]


# --------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class Categorical:
    """A single-valued categorical feature (column ``name``).

    Codes ``1..n`` are the distinct values of the table in sorted order; ``0`` is unknown
    (an entity without a row in the frame, or a missing value).

    Example:
        >>> Categorical("gender")
        Categorical(name='gender')
    """

    name: str


@dataclass(frozen=True)
class Numeric:
    """A numeric feature (column ``name``).

    Args:
        name: Column name.
        normalize: Standardise with the mean and (population) standard deviation of the
            table's known values; a constant column is only centred. Missing values (and
            entities without a row) become ``0`` after standardising, i.e. the mean; without
            ``normalize`` they become a raw ``0``.

    Example:
        >>> Numeric("age")
        Numeric(name='age', normalize=True)
    """

    name: str
    normalize: bool = True


@dataclass(frozen=True)
class MultiCategorical:
    """A set-valued categorical feature such as genres or tags (column ``name``).

    Args:
        name: Column name.
        sep: Separator of the values in a string cell (``"Action|Comedy"``); RecBole
            ``token_seq`` columns need ``" "``; ``None`` splits on any whitespace. Cells that
            are lists, tuples or arrays are taken as they are; missing cells mean no values.
        max_length: Keep only the first ``max_length`` values of each entity; default: the
            longest list of the table.

    Example:
        >>> MultiCategorical("class", sep=" ")
        MultiCategorical(name='class', sep=' ', max_length=None)
    """

    name: str
    sep: str | None = "|"
    max_length: int | None = None


FeatureSpec = Categorical | Numeric | MultiCategorical


# --------------------------------------------------------------------------- encoded columns
@dataclass(frozen=True, eq=False)
class CategoricalColumn:
    """An encoded :class:`Categorical` feature.

    Attributes:
        codes: LongTensor ``(n,)``; ``0`` is unknown, ``c >= 1`` is ``categories[c - 1]``.
        categories: The distinct values, sorted.
    """

    kind: ClassVar[str] = "categorical"
    codes: Tensor
    categories: tuple[Any, ...]

    @property
    def cardinality(self) -> int:
        """Number of codes, including the unknown code ``0``."""
        return len(self.categories) + 1


@dataclass(frozen=True, eq=False)
class NumericColumn:
    """An encoded :class:`Numeric` feature.

    Attributes:
        values: FloatTensor ``(n,)``, standardised as ``(x - mean) / std``; missing values 0.
        mean: Subtracted mean (``0.0`` without normalisation).
        std: Divisor (``1.0`` without normalisation or for a constant column).
    """

    kind: ClassVar[str] = "numeric"
    values: Tensor
    mean: float
    std: float


@dataclass(frozen=True, eq=False)
class MultiCategoricalColumn:
    """An encoded :class:`MultiCategorical` feature.

    Attributes:
        codes: LongTensor ``(n, max_length)`` of codes (as for :class:`CategoricalColumn`),
            right-padded with ``0``.
        lengths: LongTensor ``(n,)``, number of real codes per row (``0`` for no values).
        categories: The distinct values, sorted.
    """

    kind: ClassVar[str] = "multi_categorical"
    codes: Tensor
    lengths: Tensor
    categories: tuple[Any, ...]

    @property
    def cardinality(self) -> int:
        """Number of codes, including the unknown/padding code ``0``."""
        return len(self.categories) + 1


FeatureColumn = CategoricalColumn | NumericColumn | MultiCategoricalColumn


# --------------------------------------------------------------------------- table
@dataclass(frozen=True, eq=False)
class FeatureTable:
    """Encoded side features, row ``i`` = entity with vocabulary index ``i``.

    Attributes:
        num_rows: Number of entities (the vocabulary size).
        columns: Encoded features by name, in spec order.

    Example:
        >>> users = pd.DataFrame({"user_id": ["a", "b"], "job": ["writer", "artist"]})
        >>> table = FeatureTable.from_frame(
        ...     users, "user_id", IdVocabulary.from_values(["a", "b", "c"]), [Categorical("job")])
        >>> table["job"].codes.tolist(), table["job"].cardinality, table.vocabulary("job")
        ([2, 1, 0], 3, [None, 'artist', 'writer'])
    """

    num_rows: int
    columns: Mapping[str, FeatureColumn]

    def __len__(self) -> int:
        return self.num_rows

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, in spec order."""
        return tuple(self.columns)

    def __getitem__(self, name: str) -> FeatureColumn:
        """The encoded feature ``name``; ``KeyError`` lists the available ones."""
        if name not in self.columns:
            raise KeyError(f"no feature {name!r}; the table has {list(self.columns)}")
        return self.columns[name]

    def vocabulary(self, name: str) -> list[Any]:
        """Values of a (multi-)categorical feature indexed by code: ``[None, v1, v2, ...]``.

        Element ``0`` (``None``) stands for unknown/missing, element ``c`` is the value coded
        ``c``, so ``table.vocabulary(name)[code]`` explains a code.
        """
        column = self[name]
        if isinstance(column, NumericColumn):
            raise ValueError(f"feature {name!r} is numeric and has no vocabulary")
        return [None, *column.categories]

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        id_col: str,
        vocab: IdVocabulary,
        specs: Sequence[FeatureSpec],
    ) -> FeatureTable:
        """Encode the ``specs`` columns of ``frame`` in the order of ``vocab``.

        Frame rows whose id is not in ``vocab`` are ignored; vocabulary entities without a row
        get unknown features (categorical code ``0``, no multi-categorical values, numeric
        ``0``). How many of each is logged. Category codes and numeric statistics are computed
        over the table's rows only.

        Args:
            frame: One row per entity; ids in ``id_col`` (same dtype as ``vocab``'s raw ids).
            id_col: Column of raw ids.
            vocab: The id vocabulary the model indexes with.
            specs: Features to encode (unique names).

        Raises:
            ValueError: For missing columns, no or duplicate specs, missing or duplicate ids,
                and non-numeric or infinite values in a :class:`Numeric` column.
        """
        _check_specs(frame, id_col, specs)
        positions = _align(frame, id_col, vocab)
        columns = {
            spec.name: _encode(spec, _aligned(frame[spec.name], positions)) for spec in specs
        }
        return cls(num_rows=len(vocab), columns=columns)


def _check_specs(frame: pd.DataFrame, id_col: str, specs: Sequence[FeatureSpec]) -> None:
    """Raise ``ValueError`` for no specs, repeated names or columns missing from ``frame``."""
    if not specs:
        raise ValueError("specs is empty: name at least one feature to encode")
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"feature(s) {repeated} are specified more than once")
    missing = [col for col in [id_col, *names] if col not in frame.columns]
    if missing:
        raise ValueError(
            f"feature frame has no column(s) {missing}; its columns are {list(frame.columns)}"
        )


def _align(frame: pd.DataFrame, id_col: str, vocab: IdVocabulary) -> np.ndarray:
    """Frame row position of each vocabulary entity (``-1`` without a row); logs the counts."""
    ids = frame[id_col]
    if ids.isna().any():
        raise ValueError(f"column {id_col!r} has {int(ids.isna().sum())} missing id(s)")
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise ValueError(
            f"column {id_col!r} has {len(duplicated)} repeated id(s), e.g. {duplicated.iloc[0]!r}:"
            " the feature frame needs one row per entity"
        )
    positions = pd.Index(ids).get_indexer(vocab.raw_ids)
    found = int((positions >= 0).sum())
    rank_zero_info(
        f"lit_matching: feature table for {id_col!r}: {len(vocab) - found} of {len(vocab)} "
        f"vocabulary ids have no row (unknown features); {len(frame) - found} of {len(frame)} "
        "frame rows are not in the vocabulary"
        + (" (do the id dtypes match?)" if found == 0 and len(vocab) else "")
    )
    return positions


def _aligned(column: pd.Series, positions: np.ndarray) -> pd.Series:
    """``column``'s values at frame ``positions`` (``NaN`` at ``-1``), as objects.

    Object dtype keeps integer values integers when ``NaN`` is inserted.
    """
    values = column.astype(object).reset_index(drop=True).reindex(positions)
    return values.reset_index(drop=True)


def _encode(spec: FeatureSpec, values: pd.Series) -> FeatureColumn:
    """Encode one aligned column (``NaN`` for entities without a row)."""
    if isinstance(spec, Categorical):
        return _encode_categorical(values)
    if isinstance(spec, Numeric):
        return _encode_numeric(spec, values)
    if isinstance(spec, MultiCategorical):
        return _encode_multi(spec, values)
    raise TypeError(f"unknown feature spec {spec!r}")


def _encode_categorical(values: pd.Series) -> CategoricalColumn:
    """Sorted distinct values -> codes ``1..n``, missing -> ``0``.

    Example:
        >>> _encode_categorical(pd.Series(["m", None, "f", "m"])).codes.tolist()
        [2, 0, 1, 2]
    """
    categories = sorted_values(pd.unique(values.dropna()))
    codes = category_codes(categories, values.tolist())
    codes[values.isna().to_numpy()] = 0
    return CategoricalColumn(codes=torch.from_numpy(codes), categories=categories)


def _encode_numeric(spec: Numeric, values: pd.Series) -> NumericColumn:
    """Floats, standardised over the known values when ``spec.normalize``; missing -> ``0``.

    Example:
        >>> _encode_numeric(Numeric("x"), pd.Series([1.0, None, 3.0])).values.tolist()
        [-1.0, 0.0, 1.0]
    """
    try:
        numbers = pd.to_numeric(values, errors="raise").to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"numeric feature {spec.name!r} has a non-numeric value ({err})") from err
    if np.isinf(numbers).any():
        raise ValueError(f"numeric feature {spec.name!r} has infinite value(s)")
    known = numbers[~np.isnan(numbers)]
    mean, std = 0.0, 1.0
    if spec.normalize and len(known):
        mean = float(known.mean())
        std = float(known.std()) or 1.0
    standardised = np.nan_to_num((numbers - mean) / std, nan=0.0)
    return NumericColumn(
        values=torch.from_numpy(standardised.astype(np.float32)), mean=mean, std=std
    )


def _encode_multi(spec: MultiCategorical, values: pd.Series) -> MultiCategoricalColumn:
    """Lists of codes, truncated to ``spec.max_length`` and right-padded with ``0``.

    Example:
        >>> column = _encode_multi(MultiCategorical("g"), pd.Series(["b|a", None, "c|a|b"]))
        >>> column.codes.tolist(), column.lengths.tolist()
        ([[2, 1, 0], [0, 0, 0], [3, 1, 2]], [2, 0, 3])
    """
    if spec.max_length is not None and spec.max_length < 1:
        raise ValueError(f"max_length of {spec.name!r} has to be positive, got {spec.max_length}")
    lists = [split_values(value, spec.sep) for value in values.tolist()]
    if spec.max_length is not None:
        lists = [values[: spec.max_length] for values in lists]
    categories = sorted_values({v for values in lists for v in values})
    codes, lengths = padded_codes(categories, lists, width=max([1, *map(len, lists)]))
    return MultiCategoricalColumn(
        codes=torch.from_numpy(codes), lengths=torch.from_numpy(lengths), categories=categories
    )
