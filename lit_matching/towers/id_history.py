"""A user tower that mixes the user's id vector with an aggregate of their history (SimpleX).

SimpleX (Mao et al., CIKM 2021) encodes a user as

    u = g * e_u + (1 - g) * V h_u,

with ``e_u`` the user's id embedding, ``h_u`` an aggregate of the embeddings of the items in the
user's history, ``V`` a linear map (no bias) and ``g`` a mixing weight in ``[0, 1]``, fixed or
learned. The id vector carries what is particular to the user; the history term ties users who
interacted with the same items together, which matters most for users with few interactions.

Inputs follow the tower contract (see :mod:`lit_matching.towers.id` and
:mod:`lit_matching.towers.sequence`): ``"ids"`` ``(B,)`` user indices, ``"history"`` ``(B, L)``
LEFT-padded with ``num_items`` and ``"history_length"`` ``(B,)``. Only ``history_length`` is
trusted: pad positions are never looked up. An empty history aggregates to the zero vector, so
such a user's vector is ``g * e_u``. An id below 0 stands for a user the model never saw (a
served request with a fresh history): it has no id vector (zeros), so the history term alone
encodes that user (with ``"user_attention"``, the history's plain mean then).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from lit_matching.towers.sequence import (
    _embed,
    _history,
    _item_embedding,
    history_mask,
    masked_bag_sum,
)

__all__ = ["IDHistoryTower"]

_AGGREGATIONS = ("mean", "attention", "user_attention")


class IDHistoryTower(nn.Module):
    """SimpleX's user tower: ``g * id_embedding + (1 - g) * V(aggregate of the history)``.

    The history aggregate ``h`` is one of

    * ``"mean"``: the mean of the real history items' vectors;
    * ``"attention"``: ``sum_k a_k e_k`` with ``a = softmax_k(q . tanh(W e_k + b))`` over the real
      items, ``q`` a learned query vector (SimpleX's self-attention aggregation);
    * ``"user_attention"``: the same with the user's id vector as the query (the user decides
      which of their items count).

    Args:
        num_users: Number of users (rows of the id table). Left unset in a ``lit-matching``
            config, it is filled from the data.
        num_items: Number of items; the history pad index is ``num_items``. Filled likewise.
        embedding_dim: Size of the output vectors and of the id vectors (and of the own item
            table).
        aggregation: ``"mean"``, ``"attention"`` or ``"user_attention"``.
        id_weight: The mixing weight ``g`` in ``[0, 1]``: ``1`` is a plain id tower, ``0`` a
            history-only tower. With ``learn_id_weight`` it is the initial value, in ``(0, 1)``.
        learn_id_weight: Learn ``g`` (as ``sigmoid`` of a scalar parameter, so it stays in
            ``(0, 1)``); otherwise it stays fixed.
        dropout: Dropout on the history aggregate, before ``V``.
        item_embedding: Item table to share (e.g. the item tower's ``embedding``); ``num_items``
            or ``num_items + 1`` rows. Default: a new ``nn.Embedding(num_items + 1,
            embedding_dim, padding_idx=num_items)``.
        init_std: Standard deviation of the normal initialisation of the id table.

    Example:
        >>> import torch
        >>> tower = IDHistoryTower(num_users=3, num_items=5, embedding_dim=4, id_weight=0.5)
        >>> features = {"ids": torch.tensor([0, 2]),
        ...             "history": torch.tensor([[5, 1, 2], [5, 5, 5]]),
        ...             "history_length": torch.tensor([2, 0])}
        >>> users = tower(features)
        >>> users.shape
        torch.Size([2, 4])
        >>> # an empty history leaves g * e_u
        >>> torch.allclose(users[1], 0.5 * tower.user_embedding.weight[2])
        True
    """

    def __init__(
        self,
        num_users: int | None = None,
        num_items: int | None = None,
        embedding_dim: int = 64,
        aggregation: str = "mean",
        id_weight: float = 0.5,
        learn_id_weight: bool = False,
        dropout: float = 0.0,
        item_embedding: nn.Embedding | None = None,
        init_std: float = 0.1,
    ):
        super().__init__()
        _check_arguments(num_users, aggregation, id_weight, learn_id_weight)
        self.num_users, self.num_items = num_users, num_items
        self.embedding_dim = embedding_dim
        self.aggregation = aggregation
        self.item_embedding = _item_embedding(num_items, embedding_dim, item_embedding)
        self.user_embedding = nn.Embedding(num_users, embedding_dim)  # type: ignore[arg-type]
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        width = self.item_embedding.embedding_dim
        self.dropout = nn.Dropout(dropout)
        self.history_map = nn.Linear(width, embedding_dim, bias=False)  # SimpleX's V
        if aggregation != "mean":
            query_dim = embedding_dim if aggregation == "user_attention" else width
            self.attention_map = nn.Linear(width, query_dim)  # W, b
            if aggregation == "attention":
                self.query = nn.Parameter(torch.randn(width) / math.sqrt(width))
        self.learn_id_weight = learn_id_weight
        if learn_id_weight:
            self.id_weight_logit = nn.Parameter(torch.tensor(math.log(id_weight / (1 - id_weight))))
        else:  # a buffer: saved with the model, never handed to the optimiser
            self.register_buffer("fixed_id_weight", torch.tensor(float(id_weight)))

    @property
    def id_weight(self) -> Tensor:
        """The mixing weight ``g`` (a scalar tensor; differentiable when learned)."""
        if self.learn_id_weight:
            return torch.sigmoid(self.id_weight_logit)
        return self.get_buffer("fixed_id_weight")

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """User vectors ``(B, embedding_dim)`` from ``ids``, ``history`` and ``history_length``."""
        users = self._user_vectors(features["ids"])
        history = self.dropout(self.aggregate(features, users))
        g = self.id_weight.to(users.dtype)
        return g * users + (1.0 - g) * self.history_map(history)

    def _user_vectors(self, ids: Tensor) -> Tensor:
        """Id vectors; an id below 0 (a user never seen in training) gets zeros."""
        ids = ids.to(dtype=torch.long)
        known = (ids >= 0).unsqueeze(-1).to(self.user_embedding.weight.dtype)
        return self.user_embedding(ids.clamp(min=0)) * known

    def aggregate(self, features: Mapping[str, Tensor], users: Tensor | None = None) -> Tensor:
        """The history aggregate ``h`` ``(B, item width)``; zero for an empty history.

        ``users`` (the id vectors) is the query of ``"user_attention"``; looked up if not given.
        """
        history, lengths = _history(features)
        mask = history_mask(lengths, history.shape[1])
        if self.aggregation == "mean":
            summed = masked_bag_sum(self.item_embedding, history, mask)
            return summed / lengths.clamp(min=1).unsqueeze(1).to(summed.dtype)
        vectors = _embed(self.item_embedding, history, mask)  # (B, L, width), pads zero
        keys = torch.tanh(self.attention_map(vectors))
        if self.aggregation == "attention":
            scores = keys @ self.query
        else:
            query = self._user_vectors(features["ids"]) if users is None else users
            scores = (keys * query.unsqueeze(1)).sum(-1)
        # Pads get -inf, except in an empty row (all -inf would give a NaN softmax): its scores
        # stay finite and its weights are zeroed afterwards.
        empty = (lengths == 0).unsqueeze(1)
        scores = scores.masked_fill(~(mask | empty), float("-inf"))
        weights = torch.softmax(scores, dim=1).masked_fill(empty, 0.0)
        return (weights.unsqueeze(-1) * vectors).sum(1)


def _check_arguments(
    num_users: int | None, aggregation: str, id_weight: float, learn_id_weight: bool
) -> None:
    """Raise on arguments the tower cannot use, naming the value."""
    if num_users is None or num_users < 1:
        raise ValueError(
            f"num_users has to be a positive integer, got {num_users!r} (the lit-matching CLI "
            "fills it from the data; in Python pass MatchingDataModule.num_users)"
        )
    if aggregation not in _AGGREGATIONS:
        raise ValueError(f"aggregation has to be one of {_AGGREGATIONS}, got {aggregation!r}")
    if not 0.0 <= id_weight <= 1.0:
        raise ValueError(f"id_weight has to be in [0, 1], got {id_weight}")
    if learn_id_weight and not 0.0 < id_weight < 1.0:
        raise ValueError(
            f"a learned id_weight starts strictly inside (0, 1) (it is a sigmoid), got {id_weight}"
        )
