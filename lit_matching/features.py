"""Static side features of users or items, stored inside the tower.

Side features (a user's age and occupation, an item's genres and release year) are encoded once
into a :class:`FeatureTable` aligned with an :class:`~lit_matching.data.interactions.IdVocabulary`:
row ``i`` describes the entity with index ``i``. A :class:`FeatureEncoder` keeps the table as
buffers (so it moves with ``.to(device)`` and is saved in checkpoints) and looks rows up by
``features["ids"]``; batches, evaluation and export therefore only ever pass ids.

Three kinds of feature are supported, each described by a spec:

* :class:`Categorical`: one value per entity (gender, occupation). Codes ``1..n`` are the
  distinct values in sorted order; code ``0`` is reserved for unknown/missing.
* :class:`Numeric`: one number per entity (age, release year), standardised by default;
  missing values become ``0`` (the mean, after standardising).
* :class:`MultiCategorical`: a set of values per entity (genres, tags), given as a string
  split on ``sep`` (``"Action|Comedy"``; RecBole ``token_seq`` columns use ``sep=" "``) or as
  a list. Codes as for :class:`Categorical`, right-padded with ``0``.

:class:`FeatureTower` turns a table into a DSSM-style tower (features, optionally an id
embedding and a history tower's output, then an MLP); with a
:class:`~lit_matching.sequence_towers.HistoryPoolingTower` it is a YouTubeDNN user tower.

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
    >>> tower = FeatureTower(table, embedding_dim=8)
    >>> tower({"ids": torch.tensor([[0, 2], [1, 1]])}).shape
    torch.Size([2, 2, 8])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from lit_matching.data.interactions import IdVocabulary
from lit_matching.towers import Features, as_features, mlp

__all__ = [
    "Categorical",
    "CategoricalColumn",
    "FeatureEncoder",
    "FeatureSpec",
    "FeatureTable",
    "FeatureTower",
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


def _sorted(values: Iterable[Any]) -> tuple[Any, ...]:
    """Values sorted naturally, or by type and text when they do not compare."""
    values = list(values)
    try:
        return tuple(sorted(values))
    except TypeError:
        return tuple(sorted(values, key=lambda v: (type(v).__name__, str(v))))


def _codes(categories: tuple[Any, ...], values: Sequence[Any]) -> np.ndarray:
    """Codes ``1..n`` of ``values`` among ``categories``; ``0`` for values not among them."""
    index = pd.Index(categories, dtype=object).get_indexer(pd.Index(values, dtype=object))
    return (index + 1).astype(np.int64)


def _encode_categorical(values: pd.Series) -> CategoricalColumn:
    """Sorted distinct values -> codes ``1..n``, missing -> ``0``.

    Example:
        >>> _encode_categorical(pd.Series(["m", None, "f", "m"])).codes.tolist()
        [2, 0, 1, 2]
    """
    categories = _sorted(pd.unique(values.dropna()))
    codes = _codes(categories, values.tolist())
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


def _split(value: Any, sep: str | None) -> list[Any]:
    """The values of one multi-categorical cell (missing cell or values dropped).

    Example:
        >>> _split("Action| Comedy|", "|"), _split(["a", None], "|"), _split(float("nan"), "|")
        (['Action', 'Comedy'], ['a'], [])
    """
    if isinstance(value, str):
        return [token.strip() for token in value.split(sep) if token.strip()]
    if isinstance(value, list | tuple | np.ndarray | pd.Series):
        return [v for v in value if not _is_missing(v)]
    return [] if _is_missing(value) else [value]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _encode_multi(spec: MultiCategorical, values: pd.Series) -> MultiCategoricalColumn:
    """Lists of codes, truncated to ``spec.max_length`` and right-padded with ``0``.

    Example:
        >>> column = _encode_multi(MultiCategorical("g"), pd.Series(["b|a", None, "c|a|b"]))
        >>> column.codes.tolist(), column.lengths.tolist()
        ([[2, 1, 0], [0, 0, 0], [3, 1, 2]], [2, 0, 3])
    """
    if spec.max_length is not None and spec.max_length < 1:
        raise ValueError(f"max_length of {spec.name!r} has to be positive, got {spec.max_length}")
    lists = [_split(value, spec.sep) for value in values.tolist()]
    if spec.max_length is not None:
        lists = [values[: spec.max_length] for values in lists]
    categories = _sorted({v for values in lists for v in values})
    width = max([1, *map(len, lists)])
    codes = np.zeros((len(lists), width), dtype=np.int64)
    for row, row_values in enumerate(lists):
        if row_values:
            codes[row, : len(row_values)] = _codes(categories, row_values)
    lengths = np.array([len(values) for values in lists], dtype=np.int64)
    return MultiCategoricalColumn(
        codes=torch.from_numpy(codes), lengths=torch.from_numpy(lengths), categories=categories
    )


# --------------------------------------------------------------------------- encoder
def _embedding(num_embeddings: int, embedding_dim: int) -> nn.Embedding:
    embedding = nn.Embedding(num_embeddings, embedding_dim)
    nn.init.normal_(embedding.weight, std=0.1)
    return embedding


class _Lookup(nn.Module):
    """A per-feature part of :class:`FeatureEncoder`: ``(...) ids -> (..., out_dim)``."""

    out_dim: int


class _CategoricalLookup(_Lookup):
    """Embedding of each row's code; unknown (code 0) has its own learned vector."""

    codes: Tensor

    def __init__(self, column: CategoricalColumn, embedding_dim: int):
        super().__init__()
        self.register_buffer("codes", column.codes.clone())
        self.embedding = _embedding(column.cardinality, embedding_dim)
        self.out_dim = embedding_dim

    def forward(self, ids: Tensor) -> Tensor:
        return self.embedding(self.codes[ids])


class _MultiCategoricalLookup(_Lookup):
    """Mean of the embeddings of each row's real codes (``lengths``); no values -> zeros."""

    codes: Tensor
    lengths: Tensor

    def __init__(self, column: MultiCategoricalColumn, embedding_dim: int):
        super().__init__()
        self.register_buffer("codes", column.codes.clone())
        self.register_buffer("lengths", column.lengths.clone())
        self.embedding = _embedding(column.cardinality, embedding_dim)
        self.out_dim = embedding_dim

    def forward(self, ids: Tensor) -> Tensor:
        codes, lengths = self.codes[ids], self.lengths[ids]
        mask = torch.arange(codes.shape[-1], device=codes.device) < lengths.unsqueeze(-1)
        vectors = self.embedding(codes.masked_fill(~mask, 0))
        vectors = vectors * mask.unsqueeze(-1).to(vectors.dtype)
        return vectors.sum(dim=-2) / lengths.clamp(min=1).unsqueeze(-1).to(vectors.dtype)


class _NumericLookup(_Lookup):
    """The row's (standardised) value as a width-1 feature."""

    values: Tensor

    def __init__(self, column: NumericColumn):
        super().__init__()
        self.register_buffer("values", column.values.clone())
        self.out_dim = 1

    def forward(self, ids: Tensor) -> Tensor:
        return self.values[ids].unsqueeze(-1)


def _lookup(column: FeatureColumn, embedding_dim: int) -> _Lookup:
    if isinstance(column, CategoricalColumn):
        return _CategoricalLookup(column, embedding_dim)
    if isinstance(column, MultiCategoricalColumn):
        return _MultiCategoricalLookup(column, embedding_dim)
    return _NumericLookup(column)


class FeatureEncoder(nn.Module):
    """Side-feature vectors of ids, from a :class:`FeatureTable` kept as buffers.

    The output concatenates, in the table's feature order, a learned embedding per categorical
    feature (unknown entities share the code-0 vector), the mean embedding of the real values
    per multi-categorical feature (padding is ignored; no values give a zero vector) and the
    value of each numeric feature. The table's tensors are buffers: they follow
    ``.to(device)`` and are part of ``state_dict`` (``parts.<i>.codes`` etc., ``i`` the
    feature's position), so a module built from a table of the same shapes can load them.

    Args:
        table: The encoded features; ids index its rows (``0..len(table) - 1``).
        embedding_dim: Size of each (multi-)categorical embedding.

    Example:
        >>> table = FeatureTable.from_frame(
        ...     pd.DataFrame({"id": [0, 1], "g": ["x", "y"], "age": [20, 30]}), "id",
        ...     IdVocabulary.from_values([0, 1]), [Categorical("g"), Numeric("age")])
        >>> encoder = FeatureEncoder(table, embedding_dim=4)
        >>> encoder.out_dim, encoder(torch.tensor([[0, 1, 1]])).shape
        (5, torch.Size([1, 3, 5]))
    """

    def __init__(self, table: FeatureTable, embedding_dim: int = 16):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim has to be a positive integer, got {embedding_dim}")
        if not table.columns:
            raise ValueError("the feature table has no features")
        self.names = table.names
        self.num_rows = len(table)
        lookups = [_lookup(table[name], embedding_dim) for name in self.names]
        self._out_dim = sum(lookup.out_dim for lookup in lookups)
        self.parts = nn.ModuleList(lookups)

    @property
    def out_dim(self) -> int:
        """Width of the concatenated feature vector."""
        return self._out_dim

    def forward(self, ids: Features | Tensor) -> Tensor:
        """Feature vectors of ``ids`` (or ``features["ids"]``): ``(...) -> (..., out_dim)``."""
        index = as_features(ids)["ids"].to(dtype=torch.long)
        return torch.cat([part(index) for part in self.parts], dim=-1)


# --------------------------------------------------------------------------- tower
def _broadcast(vectors: Tensor, shape: torch.Size) -> Tensor:
    """``(B, d)`` per-row vectors expanded to ``(*shape, d)`` with ``shape[0] == B``."""
    if vectors.dim() != 2 or len(shape) == 0 or vectors.shape[0] != shape[0]:
        raise ValueError(
            f"history tower output {tuple(vectors.shape)} does not match ids {tuple(shape)}"
        )
    view = vectors.view(vectors.shape[0], *([1] * (len(shape) - 1)), vectors.shape[1])
    return view.expand(*shape, vectors.shape[1])


class FeatureTower(nn.Module):
    """DSSM-style tower: side features (+ id embedding, + history tower), then an MLP.

    The MLP input concatenates the :class:`FeatureEncoder` output of ``features["ids"]``, an
    id embedding when ``num_ids`` is set, and the output of ``history_tower(features)`` when
    one is given (e.g. a :class:`~lit_matching.sequence_towers.HistoryPoolingTower`: user
    features + pooled history = the YouTubeDNN user tower). Ids may have any shape; the history
    output ``(B, d)`` is broadcast over the extra dimensions of ``(B, ...)`` ids.

    Args:
        table: The entities' side features; ids index its rows.
        embedding_dim: Size of the output vectors.
        feature_dim: Size of each (multi-)categorical feature embedding.
        hidden_dims: Hidden layer sizes of the MLP (ReLU); empty: one linear layer.
        dropout: Dropout before each MLP layer.
        num_ids: Add a learned id embedding with this many rows (at least ``len(table)``).
        id_dim: Size of the id embedding; default ``embedding_dim``. Given without
            ``num_ids`` it adds an id embedding with one row per table row (the vocabulary),
            which is how a config asks for one.
        history_tower: A tower of ``features`` with an integer ``embedding_dim`` attribute
            (its output width), e.g. a sequence tower of the user's history.

    Example:
        >>> table = FeatureTable.from_frame(
        ...     pd.DataFrame({"id": [0, 1, 2], "g": ["x", "y", "x"]}), "id",
        ...     IdVocabulary.from_values([0, 1, 2]), [Categorical("g")])
        >>> tower = FeatureTower(table, embedding_dim=8, feature_dim=4, num_ids=3, id_dim=2)
        >>> tower({"ids": torch.tensor([2, 0])}).shape
        torch.Size([2, 8])
    """

    def __init__(
        self,
        table: FeatureTable | None = None,
        embedding_dim: int = 64,
        feature_dim: int = 16,
        hidden_dims: Sequence[int] = (128,),
        dropout: float = 0.0,
        num_ids: int | None = None,
        id_dim: int | None = None,
        history_tower: nn.Module | None = None,
    ):
        super().__init__()
        if table is None:
            raise ValueError(
                "FeatureTower needs a FeatureTable (MatchingDataModule.item_feature_table or "
                "user_feature_table; the lit-matching CLI fills it from the data's side features)"
            )
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim has to be a positive integer, got {embedding_dim}")
        self.embedding_dim = embedding_dim
        self.encoder = FeatureEncoder(table, feature_dim)
        in_dim = self.encoder.out_dim
        self.id_embedding: nn.Embedding | None = None
        if id_dim is not None and id_dim < 1:
            raise ValueError(f"id_dim has to be a positive integer, got {id_dim}")
        if num_ids is None and id_dim is not None:
            num_ids = len(table)
        if num_ids is not None:
            if num_ids < len(table):
                raise ValueError(f"num_ids={num_ids} is less than the {len(table)} table rows")
            self.id_embedding = _embedding(num_ids, embedding_dim if id_dim is None else id_dim)
            in_dim += self.id_embedding.embedding_dim
        self.history_tower = history_tower
        if history_tower is not None:
            history_dim = getattr(history_tower, "embedding_dim", None)
            if not isinstance(history_dim, int):
                raise ValueError(
                    "history_tower needs an integer embedding_dim attribute (its output width), "
                    f"got {history_dim!r}"
                )
            in_dim += history_dim
        self.mlp = mlp(in_dim, hidden_dims, embedding_dim, dropout)

    def forward(self, features: Features | Tensor) -> Tensor:
        """Vectors ``(..., embedding_dim)`` of ``features["ids"]`` ``(...)``."""
        features = as_features(features)
        ids = features["ids"].to(dtype=torch.long)
        parts = [self.encoder(ids)]
        if self.id_embedding is not None:
            parts.append(self.id_embedding(ids))
        if self.history_tower is not None:
            parts.append(_broadcast(self.history_tower(features), ids.shape))
        return self.mlp(torch.cat(parts, dim=-1))
