"""Hard negatives: a mixture of a user's mined candidates and a base sampler, with exact log q.

:class:`MinedNegativeSampler` draws each negative of user ``u`` from ``u``'s mined list ``M_u``
(e.g. the top-K items of the model's own index, found by
:class:`~lit_matching.callbacks.hard_negatives.HardNegativeMiner`) with probability
``hard_fraction`` and from a base :class:`~lit_matching.data.sampling.NegativeSampler`
otherwise. Both sources avoid the user's training positives, so the draw does too, and the
returned log-probability is that of the mixture::

    q(i | u) = h * [i in M_u] / |M_u| + (1 - h) * q_base(i | u)

(``h = 0`` for users with an empty list), which keeps the list-wise log-Q correction honest.
"""

from __future__ import annotations

import numpy as np

from lit_matching.data.item_sets import ItemSets
from lit_matching.data.sampling import NegativeSampler

__all__ = ["MinedNegativeSampler"]


class MinedNegativeSampler(NegativeSampler):
    """Each negative from the user's mined list with probability ``hard_fraction``, else ``base``.

    Args:
        base: The sampler of the other draws (its positives are the ones excluded).
        mined: ``(num_users, K)`` candidate items per user, ``-1`` for none; items that are
            one of the user's positives, and repeats, are dropped here.
        hard_fraction: Probability ``h`` that a negative comes from the mined list.

    Example:
        >>> from lit_matching.data.sampling import UniformNegativeSampler
        >>> positives = ItemSets.from_pairs(np.array([0, 1]), np.array([0, 0]), 2, 4)
        >>> base = UniformNegativeSampler(positives)
        >>> sampler = MinedNegativeSampler(base, np.array([[3, 0], [-1, -1]]), 0.5)
        >>> sampler.mined.row(0).tolist(), sampler.mined.row(1).tolist()  # 0 is a positive
        ([3], [])
        >>> np.exp(sampler.log_prob(np.array([0, 0]), np.array([3, 1]))).round(4).tolist()
        [0.6667, 0.1667]
        >>> negatives, log_q = sampler.sample(np.array([0, 1]), 4, np.random.default_rng(0))
        >>> bool((negatives != 0).all()), log_q.shape
        (True, (2, 4))
    """

    def __init__(self, base: NegativeSampler, mined: np.ndarray, hard_fraction: float = 0.5):
        if not 0.0 <= hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction!r}")
        mined = np.asarray(mined, dtype=np.int64)
        if mined.ndim != 2 or mined.shape[0] != base.positives.num_rows:
            raise ValueError(
                f"mined must be (num_users={base.positives.num_rows}, K), got {mined.shape}"
            )
        if ((mined < -1) | (mined >= base.num_items)).any():
            raise ValueError(f"mined items must be -1 or in [0, {base.num_items})")
        rows = np.broadcast_to(np.arange(len(mined))[:, None], mined.shape)
        keep = mined >= 0
        keep[keep] = ~base.positives.contains(rows[keep], mined[keep])
        self.base = base
        self.hard_fraction = float(hard_fraction)
        self.mined = ItemSets.from_pairs(rows[keep], mined[keep], len(mined), base.num_items)
        self.positives, self.num_items = base.positives, base.num_items
        self.max_rounds = base.max_rounds
        counts = self.mined.counts()
        self._sizes = np.maximum(counts, 1)
        # A user without candidates draws every negative from the base sampler.
        self._h = np.where(counts > 0, self.hard_fraction, 0.0)
        self._item_log_p = self._marginal_log_p()

    def _marginal_log_p(self) -> np.ndarray:
        """``log`` of ``q``'s average over users weighted by their training rows."""
        weights = self.positives.counts().astype(np.float64)
        weights /= max(weights.sum(), 1.0)
        share = weights * self._h / self._sizes  # each mined item's mass, per user
        hard = np.bincount(
            self.mined.indices,
            weights=np.repeat(share, self.mined.counts()),
            minlength=self.num_items,
        )
        soft = float((weights * (1.0 - self._h)).sum()) * self.base.p
        with np.errstate(divide="ignore"):
            return np.log(hard + soft)

    @property
    def item_log_p(self) -> np.ndarray:
        """Row-weighted marginal ``log q(item)`` over users (for the in-batch mixture).

        Like the base sampler's ``log p``, it leaves out each user's renormalisation; a mined
        item counts with the share of the rows whose user mined it.
        """
        return self._item_log_p

    def sample(
        self, users: np.ndarray, num_negatives: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Negatives for each of ``users`` and their mixture log-probabilities, both ``(B, n)``."""
        users = np.asarray(users, dtype=np.int64)
        negatives, _ = self.base.sample(users, num_negatives, rng)
        shape = negatives.shape
        hard = rng.random(shape) < self._h[users][:, None]
        rows = np.broadcast_to(users[:, None], shape)[hard]
        picks = np.floor(rng.random(rows.size) * self._sizes[rows]).astype(np.int64)
        negatives[hard] = self.mined.indices[self.mined.indptr[rows] + picks]
        users_2d = np.broadcast_to(users[:, None], shape)
        # A mined draw is in the list; only the base's draws need the (costlier) lookup.
        in_list = hard.copy()
        in_list[~hard] = self.mined.contains(users_2d[~hard], negatives[~hard])
        return negatives, self._log_q(users_2d, negatives, in_list)

    def log_prob(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``log q(item | user)`` of the mixture, for items the user may get (broadcasting)."""
        users, items = np.broadcast_arrays(np.asarray(users), np.asarray(items))
        return self._log_q(users, items, self.mined.contains(users, items))

    def _log_q(self, users: np.ndarray, items: np.ndarray, in_list: np.ndarray) -> np.ndarray:
        h = self._h[users]
        mass = h * in_list / self._sizes[users] + (1.0 - h) * np.exp(
            self.base.log_prob(users, items)
        )
        with np.errstate(divide="ignore"):
            return np.log(mass)
