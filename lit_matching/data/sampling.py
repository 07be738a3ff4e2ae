"""Negative samplers: uniform and popularity, with exact sampling log-probabilities.

Every sampler draws negatives that are never one of the user's own positives, vectorised over
the batch, and returns with them the log-probability with which each negative was drawn:
``log q(item | user) = log p(item) - log(1 - p(positives of user))``, the proposal
distribution renormalised over the items the user may get. The list-wise loss can subtract it
from the logits (log-Q correction).
"""

from __future__ import annotations

import numpy as np

from lit_matching.data.item_sets import ItemSets
from lit_matching.data.stored_sets import StoredItemSets

#: Items of each user, in memory or memory-mapped from prepared shards.
Positives = ItemSets | StoredItemSets

__all__ = [
    "NegativeSampler",
    "PopularityNegativeSampler",
    "UniformNegativeSampler",
    "negative_sampler",
]


class NegativeSampler:
    """Draws from a fixed distribution ``p`` over items, rejecting each user's positives.

    All negatives are drawn at once and only the rejected ones are redrawn, for at most
    ``max_rounds`` rounds. Whatever is still rejected after that belongs to users who have
    interacted with nearly every item (or nearly all of ``p``'s mass); those few are drawn
    exactly from ``p`` restricted to the items they may get, one at a time.

    Args:
        probabilities: ``p``, one non-negative weight per item (normalised here).
        positives: Items each user must never get as a negative (the training positives).
        max_rounds: Vectorised redraw rounds before the exact per-user fallback.

    Raises:
        ValueError: when a user's positives cover all of ``p``'s mass, so no negative exists.
    """

    def __init__(self, probabilities: np.ndarray, positives: Positives, max_rounds: int = 20):
        p = np.asarray(probabilities, dtype=np.float64)
        if p.shape != (positives.num_items,) or (p < 0).any() or not p.sum() > 0:
            raise ValueError(
                f"probabilities must be {positives.num_items} non-negative weights with a "
                "positive sum"
            )
        self.p = p / p.sum()
        self.positives = positives
        self.num_items = positives.num_items
        self.max_rounds = max_rounds
        self._cdf = np.cumsum(self.p)
        # Mass of p left to each user once their positives are removed.
        seen_mass = positives.row_sums(self.p)
        self.free_mass = np.clip(1.0 - seen_mass, 0.0, 1.0)
        with np.errstate(divide="ignore"):
            self._log_p = np.log(self.p)
            self._log_free_mass = np.log(self.free_mass)
        stuck = np.flatnonzero(self.free_mass <= 1e-12)
        if stuck.size:
            raise ValueError(
                f"{stuck.size} user(s) interacted with every item this sampler can draw "
                f"({int((self.p > 0).sum())} of {self.num_items}), so no negative exists for "
                f"them (first: user index {stuck[0]})"
            )

    @property
    def item_log_p(self) -> np.ndarray:
        """``log p(item)`` of every item, before any user's positives are removed."""
        return self._log_p

    def _draw(self, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        draws = np.searchsorted(self._cdf, rng.random(size) * self._cdf[-1], side="right")
        return np.minimum(draws, self.num_items - 1)

    def sample(
        self, users: np.ndarray, num_negatives: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Negatives for each of ``users`` and their log-probabilities, both ``(B, n)``."""
        users = np.asarray(users, dtype=np.int64)
        negatives = self._draw((len(users), num_negatives), rng)
        rows = np.broadcast_to(users[:, None], negatives.shape)
        bad = self.positives.contains(rows, negatives)
        for _ in range(self.max_rounds):
            if not bad.any():
                break
            negatives[bad] = self._draw(int(bad.sum()), rng)
            bad[bad] = self.positives.contains(rows[bad], negatives[bad])
        for r, c in zip(*np.nonzero(bad), strict=True):
            allowed = self.p.copy()
            allowed[self.positives.row(users[r])] = 0.0
            negatives[r, c] = rng.choice(self.num_items, p=allowed / allowed.sum())
        return negatives, self.log_prob(users[:, None], negatives)

    def log_prob(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``log q(item | user)`` for items the user may get (broadcasting users to items)."""
        return self._log_p[items] - self._log_free_mass[users]


class UniformNegativeSampler(NegativeSampler):
    """Uniform negatives over the catalogue, never one of the user's own positives.

    Example:
        >>> positives = ItemSets.from_pairs(np.array([0, 0]), np.array([0, 1]), 1, 4)
        >>> sampler = UniformNegativeSampler(positives)
        >>> negatives, log_q = sampler.sample(np.array([0, 0]), 5, np.random.default_rng(0))
        >>> negatives.shape, bool(np.isin(negatives, [2, 3]).all())
        ((2, 5), True)
        >>> bool(np.allclose(log_q, np.log(1 / 2)))  # 2 items left to this user
        True
    """

    def __init__(self, positives: Positives, max_rounds: int = 20):
        super().__init__(np.ones(positives.num_items), positives, max_rounds)

    def _draw(self, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.num_items, size=size)


class PopularityNegativeSampler(NegativeSampler):
    """Negatives drawn with probability proportional to ``count ** alpha``.

    ``alpha = 0.75`` is word2vec's unigram exponent (Mikolov et al., 2013), common for item
    negatives; ``alpha = 0`` is uniform over items with a positive count, ``1`` is pure
    popularity. Items with a count of zero are never drawn.

    Args:
        item_counts: Training interactions per item.
        positives: Items each user must never get as a negative.
        alpha: Popularity exponent.
        max_rounds: Vectorised redraw rounds before the exact per-user fallback.

    Example:
        >>> positives = ItemSets.from_pairs(np.array([0]), np.array([0]), 2, 3)
        >>> sampler = PopularityNegativeSampler(np.array([8, 1, 0]), positives, alpha=1.0)
        >>> negatives, log_q = sampler.sample(np.array([0, 1]), 3, np.random.default_rng(0))
        >>> negatives[0].tolist(), np.exp(log_q[0]).round(3).tolist()  # item 0 is user 0's
        ([1, 1, 1], [1.0, 1.0, 1.0])
    """

    def __init__(
        self,
        item_counts: np.ndarray,
        positives: Positives,
        alpha: float = 0.75,
        max_rounds: int = 20,
    ):
        counts = np.asarray(item_counts, dtype=np.float64)
        if (counts < 0).any():
            raise ValueError("item_counts must be non-negative")
        self.alpha = alpha
        super().__init__(np.where(counts > 0, counts**alpha, 0.0), positives, max_rounds)


def negative_sampler(
    name: str, item_counts: np.ndarray, positives: Positives, alpha: float = 0.75
) -> NegativeSampler:
    """The sampler ``name`` (``"uniform"`` or ``"popularity"``, with ``count ** alpha``)."""
    if name == "popularity":
        return PopularityNegativeSampler(item_counts, positives, alpha=alpha)
    return UniformNegativeSampler(positives)
