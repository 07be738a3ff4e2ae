"""The side-feature tower: a table of encoded features kept as buffers, then an MLP.

:class:`FeatureEncoder` keeps an encoded table (a
:class:`~lit_matching.data.features.FeatureTable`, or anything of the same shape: see
:class:`EncodedTable`) as buffers, so it moves with ``.to(device)`` and is saved in checkpoints,
and looks rows up by ``features["ids"]``. :class:`FeatureTower` turns it into a DSSM-style tower
(features, optionally an id embedding and a history tower's output, then an MLP); with a
:class:`~lit_matching.towers.sequence.HistoryPoolingTower` it is a YouTubeDNN user tower.

Example:
    A user tower from each user's occupation and age:

    >>> import pandas as pd
    >>> from lit_matching.data.features import Categorical, FeatureTable, Numeric
    >>> from lit_matching.data.interactions import IdVocabulary
    >>> users = pd.DataFrame({"id": ["u1", "u2"], "job": ["artist", "doctor"], "age": [25, 40]})
    >>> vocab = IdVocabulary.from_values(users["id"])
    >>> table = FeatureTable.from_frame(users, "id", vocab, [Categorical("job"), Numeric("age")])
    >>> tower = FeatureTower(table, embedding_dim=8)
    >>> tower({"ids": torch.tensor([[0, 1], [1, 1]])}).shape
    torch.Size([2, 2, 8])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn

from lit_matching.towers.id import Features, as_features, mlp

__all__ = ["FEATURE_PREFIX", "EncodedTable", "FeatureEncoder", "FeatureTower"]

#: Prefix of the inputs that give a feature's encoded values (:meth:`FeatureEncoder.input_names`).
FEATURE_PREFIX = "feature."


# --------------------------------------------------------------------------- the input
# The encoded table comes from the data side (lit_matching.data.features), which towers may not
# import: the tower states what it reads as protocols, and the data's table satisfies them.
class _Categorical(Protocol):
    @property
    def kind(self) -> str: ...  # "categorical" (or "multi_categorical")

    @property
    def codes(self) -> Tensor: ...  # (n,), or (n, max_length) right-padded with 0

    @property
    def cardinality(self) -> int: ...


class _MultiCategorical(_Categorical, Protocol):
    @property
    def lengths(self) -> Tensor: ...  # (n,) real codes per row


class _Numeric(Protocol):
    @property
    def kind(self) -> str: ...  # "numeric"

    @property
    def values(self) -> Tensor: ...  # (n,)


class EncodedTable(Protocol):
    """What :class:`FeatureEncoder` reads of a table: ``len``, ``names`` and columns by name.

    Each column has a ``kind``: ``"categorical"`` (``codes`` ``(n,)``, ``cardinality``),
    ``"multi_categorical"`` (``codes`` ``(n, L)`` right-padded with 0, ``lengths``,
    ``cardinality``) or ``"numeric"`` (``values`` ``(n,)``), as
    :class:`~lit_matching.data.features.FeatureTable` has them.
    """

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, in order."""

    def __len__(self) -> int: ...

    def __getitem__(self, name: str) -> _Categorical | _Numeric:
        """The encoded column ``name``."""


# --------------------------------------------------------------------------- encoder
def _embedding(num_embeddings: int, embedding_dim: int) -> nn.Embedding:
    embedding = nn.Embedding(num_embeddings, embedding_dim)
    nn.init.normal_(embedding.weight, std=0.1)
    return embedding


class _Lookup(nn.Module):
    """A per-feature part of :class:`FeatureEncoder`: ``(...) ids -> (..., out_dim)``.

    :meth:`inputs` reads the rows' encoded values from the table (the buffers), :meth:`encode`
    turns encoded values into vectors; a caller that encodes the values itself (serving a new
    entity) gives them as :data:`FEATURE_PREFIX` inputs instead.
    """

    out_dim: int
    #: Input name suffixes of the encoded values (see :meth:`FeatureEncoder.input_names`).
    suffixes: tuple[str, ...] = ("",)

    def inputs(self, ids: Tensor) -> tuple[Tensor, ...]:
        """The encoded values of rows ``ids``, in the order :meth:`encode` takes them."""
        raise NotImplementedError

    def encode(self, *values: Tensor) -> Tensor:
        """Vectors ``(..., out_dim)`` of encoded values."""
        raise NotImplementedError

    def forward(self, ids: Tensor) -> Tensor:
        return self.encode(*self.inputs(ids))


class _CategoricalLookup(_Lookup):
    """Embedding of each row's code; unknown (code 0) has its own learned vector."""

    codes: Tensor

    def __init__(self, column: _Categorical, embedding_dim: int):
        super().__init__()
        self.register_buffer("codes", column.codes.clone())
        self.embedding = _embedding(column.cardinality, embedding_dim)
        self.out_dim = embedding_dim

    def inputs(self, ids: Tensor) -> tuple[Tensor, ...]:
        return (self.codes[ids],)

    def encode(self, *values: Tensor) -> Tensor:
        (codes,) = values
        return self.embedding(codes)


class _MultiCategoricalLookup(_Lookup):
    """Mean of the embeddings of each row's real codes (``lengths``); no values -> zeros."""

    codes: Tensor
    lengths: Tensor
    suffixes = ("", ".length")

    def __init__(self, column: _MultiCategorical, embedding_dim: int):
        super().__init__()
        self.register_buffer("codes", column.codes.clone())
        self.register_buffer("lengths", column.lengths.clone())
        self.embedding = _embedding(column.cardinality, embedding_dim)
        self.out_dim = embedding_dim

    def inputs(self, ids: Tensor) -> tuple[Tensor, ...]:
        return self.codes[ids], self.lengths[ids]

    def encode(self, *values: Tensor) -> Tensor:
        codes, lengths = values
        mask = torch.arange(codes.shape[-1], device=codes.device) < lengths.unsqueeze(-1)
        vectors = self.embedding(codes.masked_fill(~mask, 0))
        vectors = vectors * mask.unsqueeze(-1).to(vectors.dtype)
        return vectors.sum(dim=-2) / lengths.clamp(min=1).unsqueeze(-1).to(vectors.dtype)


class _NumericLookup(_Lookup):
    """The row's (standardised) value as a width-1 feature."""

    values: Tensor

    def __init__(self, column: _Numeric):
        super().__init__()
        self.register_buffer("values", column.values.clone())
        self.out_dim = 1

    def inputs(self, ids: Tensor) -> tuple[Tensor, ...]:
        return (self.values[ids],)

    def encode(self, *values: Tensor) -> Tensor:
        return values[0].to(self.values.dtype).unsqueeze(-1)


def _lookup(column: _Categorical | _Numeric, embedding_dim: int) -> _Lookup:
    if column.kind == "categorical":
        return _CategoricalLookup(cast(_Categorical, column), embedding_dim)
    if column.kind == "multi_categorical":
        return _MultiCategoricalLookup(cast(_MultiCategorical, column), embedding_dim)
    if column.kind == "numeric":
        return _NumericLookup(cast(_Numeric, column))
    raise ValueError(f"unknown feature column kind {column.kind!r}")


class FeatureEncoder(nn.Module):
    """Side-feature vectors of ids, from an encoded table kept as buffers.

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
        >>> import pandas as pd
        >>> from lit_matching.data.features import Categorical, FeatureTable, Numeric
        >>> from lit_matching.data.interactions import IdVocabulary
        >>> table = FeatureTable.from_frame(
        ...     pd.DataFrame({"id": [0, 1], "g": ["x", "y"], "age": [20, 30]}), "id",
        ...     IdVocabulary.from_values([0, 1]), [Categorical("g"), Numeric("age")])
        >>> encoder = FeatureEncoder(table, embedding_dim=4)
        >>> encoder.out_dim, encoder(torch.tensor([[0, 1, 1]])).shape
        (5, torch.Size([1, 3, 5]))
    """

    def __init__(self, table: EncodedTable, embedding_dim: int = 16):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim has to be a positive integer, got {embedding_dim}")
        if not table.names:
            raise ValueError("the feature table has no features")
        self.names = table.names
        self.num_rows = len(table)
        lookups = [_lookup(table[name], embedding_dim) for name in self.names]
        self._out_dim = sum(lookup.out_dim for lookup in lookups)
        self.parts = nn.ModuleList(lookups)

    @property
    def lookups(self) -> list[_Lookup]:
        """The per-feature parts, in the table's feature order."""
        return [cast(_Lookup, part) for part in self.parts]

    @property
    def out_dim(self) -> int:
        """Width of the concatenated feature vector."""
        return self._out_dim

    def input_names(self) -> dict[str, tuple[str, ...]]:
        """Per feature, the names of the inputs that give its encoded values directly.

        ``feature.<name>`` holds categorical codes ``(B,)``, multi-categorical codes
        ``(B, max_length)`` (with ``feature.<name>.length`` ``(B,)``) or standardised numeric
        values ``(B,)``, encoded as the table was.

        Example:
            >>> import pandas as pd
            >>> from lit_matching.data.features import Categorical, FeatureTable, Numeric
            >>> from lit_matching.data.interactions import IdVocabulary
            >>> table = FeatureTable.from_frame(
            ...     pd.DataFrame({"id": [0], "g": ["x"], "age": [20]}), "id",
            ...     IdVocabulary.from_values([0]), [Categorical("g"), Numeric("age")])
            >>> FeatureEncoder(table).input_names()
            {'g': ('feature.g',), 'age': ('feature.age',)}
        """
        return {
            name: tuple(f"{FEATURE_PREFIX}{name}{suffix}" for suffix in part.suffixes)
            for name, part in zip(self.names, self.lookups, strict=True)
        }

    def forward(self, ids: Features | Tensor) -> Tensor:
        """Feature vectors of ``ids`` (or ``features["ids"]``): ``(...) -> (..., out_dim)``.

        A feature whose :meth:`input_names` are all in ``features`` is encoded from them
        instead of the table's row (how a new entity, or new values, are encoded).
        """
        features = as_features(ids)
        index = features["ids"].to(dtype=torch.long)
        vectors = []
        for part, names in zip(self.lookups, self.input_names().values(), strict=True):
            given = all(name in features for name in names)
            values = tuple(features[name] for name in names) if given else part.inputs(index)
            vectors.append(part.encode(*values))
        return torch.cat(vectors, dim=-1)


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
    one is given (e.g. a :class:`~lit_matching.towers.sequence.HistoryPoolingTower`: user
    features + pooled history = the YouTubeDNN user tower). Ids may have any shape; the history
    output ``(B, d)`` is broadcast over the extra dimensions of ``(B, ...)`` ids.

    Args:
        table: The entities' side features (an :class:`EncodedTable`); ids index its rows.
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
        >>> import pandas as pd
        >>> from lit_matching.data.features import Categorical, FeatureTable
        >>> from lit_matching.data.interactions import IdVocabulary
        >>> table = FeatureTable.from_frame(
        ...     pd.DataFrame({"id": [0, 1, 2], "g": ["x", "y", "x"]}), "id",
        ...     IdVocabulary.from_values([0, 1, 2]), [Categorical("g")])
        >>> tower = FeatureTower(table, embedding_dim=8, feature_dim=4, num_ids=3, id_dim=2)
        >>> tower({"ids": torch.tensor([2, 0])}).shape
        torch.Size([2, 8])
    """

    def __init__(
        self,
        # Any, not EncodedTable: jsonargparse would check the protocol by signatures.
        table: Any = None,
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
        parts = [self.encoder(features)]
        if self.id_embedding is not None:
            # An id below 0 is an entity the model never saw (served from its features): it
            # has no id vector of its own, so it gets zeros.
            known = (ids >= 0).unsqueeze(-1).to(self.id_embedding.weight.dtype)
            parts.append(self.id_embedding(ids.clamp(min=0)) * known)
        if self.history_tower is not None:
            parts.append(_broadcast(self.history_tower(features), ids.shape))
        return self.mlp(torch.cat(parts, dim=-1))
