"""Negative samplers."""

from __future__ import annotations

import numpy as np

from lit_matching.data.item_sets import ItemSets

__all__ = ["UniformNegativeSampler"]


class UniformNegativeSampler:
    """Uniform negatives that never equal one of the user's own positives.

    Draws all negatives at once and redraws only the rejected ones (those in the user's
    positives), for at most ``max_rounds`` rounds. Whatever is still rejected after that belongs
    to users who have interacted with nearly every item; those few are drawn exactly from the
    complement of their positives, one user at a time.

    Args:
        positives: Items each user must never get as a negative (the training positives).
        max_rounds: Vectorised redraw rounds before the exact per-user fallback.

    Raises:
        ValueError: when a user has interacted with every item, so no negative exists.

    Example:
        >>> positives = ItemSets.from_pairs(np.array([0, 0]), np.array([0, 1]), 1, 4)
        >>> sampler = UniformNegativeSampler(positives)
        >>> negatives = sampler.sample(np.array([0, 0]), 5, np.random.default_rng(0))
        >>> negatives.shape, bool(np.isin(negatives, [2, 3]).all())
        ((2, 5), True)
    """

    def __init__(self, positives: ItemSets, max_rounds: int = 20):
        self.positives = positives
        self.num_items = positives.num_items
        self.max_rounds = max_rounds
        full = np.flatnonzero(positives.counts() >= self.num_items)
        if full.size:
            raise ValueError(
                f"{full.size} user(s) interacted with all {self.num_items} items, so no "
                f"negative can be drawn for them (first: user index {full[0]})"
            )

    def sample(self, users: np.ndarray, num_negatives: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``num_negatives`` negatives for each of ``users``: shape ``(len(users), n)``."""
        users = np.asarray(users, dtype=np.int64)
        negatives = rng.integers(0, self.num_items, size=(len(users), num_negatives))
        rows = np.broadcast_to(users[:, None], negatives.shape)
        bad = self.positives.contains(rows, negatives)
        for _ in range(self.max_rounds):
            if not bad.any():
                return negatives
            negatives[bad] = rng.integers(0, self.num_items, size=int(bad.sum()))
            bad[bad] = self.positives.contains(rows[bad], negatives[bad])
        for r, c in zip(*np.nonzero(bad), strict=True):
            allowed = np.setdiff1d(np.arange(self.num_items), self.positives.row(users[r]))
            negatives[r, c] = rng.choice(allowed)
        return negatives
