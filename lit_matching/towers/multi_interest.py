"""Multi-interest user towers: several vectors per user, one per interest (MIND, ComiRec).

A multi-interest tower follows the sequence-tower contract (``features`` with a LEFT-padded
``"history"`` and ``"history_length"``, see :mod:`lit_matching.towers.sequence`) but returns
``(B, K, d)``: ``K`` interest vectors per user. The rest of the library handles the extra axis:

* training (every mode) scores each row with the interest closest to the row's target item,
  as MIND and ComiRec do (see :meth:`MatchingModule.select_interest
  <lit_matching.modes.base.MatchingModule.select_interest>`);
* retrieval searches the top K of every interest and merges them per user, keeping each item
  once with its best score (:func:`~lit_matching.retrieval.search.merge_interests`); that is
  the exact top K under "score = the best interest's score".

Two interest extractors are offered:

* ``"attention"`` (ComiRec-SA, Cen et al. 2020): ``K`` attention heads over the history items,
  ``A = softmax_L(W_2 tanh(W_1 H^T))``, interests ``A H``;
* ``"routing"`` (MIND's behaviour-to-interest routing, Li et al. 2019, in ComiRec-DR's form):
  per-interest maps of the item vectors, coupling logits starting at zero and updated by
  agreement for ``routing_iterations`` rounds, interests squashed.

Pads never take part: their attention weights and routing couplings are zero, so extra left
padding or garbage in pad positions leaves the output unchanged. An empty history gives zero
interests (after the output projection, its bias).

Example:
    >>> tower = MultiInterestTower(num_items=5, embedding_dim=4, num_interests=3)
    >>> features = {"history": torch.tensor([[5, 1, 2], [5, 5, 5]]),
    ...             "history_length": torch.tensor([2, 0])}
    >>> tower(features).shape
    torch.Size([2, 3, 4])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from lit_matching.towers.sequence import (
    _embed,
    _history,
    _HistoryTower,
    _projection,
    history_mask,
)

__all__ = ["MultiInterestTower"]

_EXTRACTORS = ("attention", "routing")


def squash(x: Tensor, eps: float = 1e-9) -> Tensor:
    """Capsule squashing ``|x|^2 / (1 + |x|^2) * x / |x|`` along the last axis.

    Example:
        >>> squash(torch.tensor([[3.0, 4.0], [0.0, 0.0]])).norm(dim=-1)  # 25 / 26, 0
        tensor([0.9615, 0.0000])
    """
    norm_sq = x.pow(2).sum(-1, keepdim=True)
    return x * (norm_sq / (1 + norm_sq) / (norm_sq + eps).sqrt())


class MultiInterestTower(_HistoryTower):
    """MIND / ComiRec-style user tower: ``num_interests`` vectors per user from the history.

    Args:
        num_items: Number of items; history pad index is ``num_items``.
        embedding_dim: Size of each interest vector (and of the own item table).
        num_interests: ``K``, interests per user.
        extractor: ``"attention"`` (ComiRec-SA) or ``"routing"`` (MIND / ComiRec-DR capsule
            routing).
        hidden_dim: Width of the attention MLP (``"attention"``); default ``4 * width``.
        routing_iterations: Rounds of routing (``"routing"``).
        max_length: Use only the last ``max_length`` history items (``None``: all).
        item_embedding: Item table to share (e.g. the item tower's); ``num_items`` or
            ``num_items + 1`` rows. Default: a new padded table.

    Example:
        >>> tower = MultiInterestTower(num_items=5, embedding_dim=4, num_interests=2,
        ...                            extractor="routing")
        >>> tower({"history": torch.tensor([[1, 2, 3]]), "history_length": torch.tensor([3])}).shape
        torch.Size([1, 2, 4])
    """

    def __init__(
        self,
        num_items: int | None = None,
        embedding_dim: int = 64,
        num_interests: int = 4,
        extractor: str = "attention",
        hidden_dim: int | None = None,
        routing_iterations: int = 3,
        max_length: int | None = None,
        item_embedding: nn.Embedding | None = None,
    ):
        if extractor not in _EXTRACTORS:
            raise ValueError(f"extractor has to be one of {_EXTRACTORS}, got {extractor!r}")
        if num_interests < 1:
            raise ValueError(f"num_interests has to be a positive integer, got {num_interests}")
        if routing_iterations < 1:
            raise ValueError(f"routing_iterations has to be positive, got {routing_iterations}")
        super().__init__(num_items, embedding_dim, item_embedding)
        self.num_interests = num_interests
        self.extractor = extractor
        self.routing_iterations = routing_iterations
        self.max_length = max_length
        width = self.item_embedding.embedding_dim
        if extractor == "attention":
            self.attention = nn.Sequential(
                nn.Linear(width, hidden_dim or 4 * width, bias=False),
                nn.Tanh(),
                nn.Linear(hidden_dim or 4 * width, num_interests, bias=False),
            )
        else:
            # One map per interest (ComiRec-DR): with a shared map and zero initial couplings
            # every interest would receive the same input and stay identical.
            self.routing_maps = nn.Parameter(torch.randn(num_interests, width, width) / width**0.5)
        self.projection = _projection(width, embedding_dim)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """Interest vectors ``(B, num_interests, embedding_dim)``."""
        history, lengths = _history(features, self.max_length)
        mask = history_mask(lengths, history.shape[1])
        items = _embed(self.item_embedding, history, mask)  # (B, L, w), pads zero
        if self.extractor == "attention":
            interests = self._attend(items, mask)
        else:
            interests = self._route(items, mask)
        return self.projection(interests)

    def _attend(self, items: Tensor, mask: Tensor) -> Tensor:
        logits = self.attention(items).transpose(1, 2)  # (B, K, L)
        logits = logits.masked_fill(~mask.unsqueeze(1), float("-inf"))
        # Empty rows: every logit is -inf; zero weights instead of a NaN softmax.
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
        return weights @ items

    def _route(self, items: Tensor, mask: Tensor) -> Tensor:
        # votes[b, k, l] = item l's prediction of interest k.
        votes = torch.einsum("blw,kwv->bklv", items, self.routing_maps)
        logits = votes.new_zeros(votes.shape[:3])
        real = mask.unsqueeze(1).to(votes.dtype)
        interests = votes.new_zeros(votes.shape[0], votes.shape[1], votes.shape[3])
        for iteration in range(self.routing_iterations):
            last = iteration == self.routing_iterations - 1
            # Each item spreads itself over the interests; pads contribute nothing.
            couplings = torch.softmax(logits, dim=1) * real
            # Gradients flow through the last round only (as in ComiRec-DR), which keeps the
            # routing a fixed-point estimate rather than an unrolled recurrence.
            used = votes if last else votes.detach()
            interests = squash((couplings.unsqueeze(-1) * used).sum(2))
            if not last:
                logits = logits + (used * interests.unsqueeze(2)).sum(-1)
        return interests
