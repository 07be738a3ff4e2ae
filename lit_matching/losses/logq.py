"""Sampling-bias (log-Q) correction of list-wise negatives.

A sampled softmax contrasts the positive with a few negatives instead of the whole catalogue.
Negatives drawn from a distribution ``q`` that is not uniform (the other positives of the batch
follow item popularity; a popularity sampler follows ``count^alpha``) are over-represented in
proportion to ``q``, so the model learns to push popular items down. Subtracting
``log E[count of the item among the row's negatives]`` from each negative logit turns the sum
over the negatives into an importance-sampling estimate of the sum over the whole catalogue
(Bengio & Senécal 2008; Jean et al. 2015; Yi et al., RecSys 2019). The positive is scored
exactly and left uncorrected.

With several sources of negatives the count is that of the mixture: ``n_batch * q_batch(i) +
n_sampled * q_sampler(i)`` (:func:`log_expected_count`). The in-batch distribution
``q_batch`` is the item's training frequency (given by the data), or estimated online by
:class:`StreamingFrequency` from the stream of batches (Yi et al. 2019, Algorithm 2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["StreamingFrequency", "log_expected_count"]


def log_expected_count(
    batch_log_q: Tensor | None, num_batch: int, sampler_log_q: Tensor | None, num_sampled: int
) -> Tensor:
    """``log(num_batch * q_batch + num_sampled * q_sampler)``, computed stably.

    Args:
        batch_log_q: ``log q_batch`` of each candidate (ignored when ``num_batch`` is 0).
        num_batch: In-batch draws per row (e.g. the other rows' positives).
        sampler_log_q: ``log q_sampler`` of each candidate (ignored when ``num_sampled`` is 0).
        num_sampled: Sampler draws per row.

    Example:
        >>> log_q = torch.log(torch.tensor([0.5, 0.1]))
        >>> log_expected_count(log_q, 3, log_q.flip(0), 2).exp()  # 3 q_b + 2 q_s
        tensor([1.7000, 1.3000])
    """
    terms = [
        math.log(count) + log_q
        for log_q, count in ((batch_log_q, num_batch), (sampler_log_q, num_sampled))
        if count > 0 and log_q is not None
    ]
    if not terms:
        raise ValueError("log_expected_count needs at least one source of negatives")
    return terms[0] if len(terms) == 1 else torch.logaddexp(terms[0], terms[1])


class StreamingFrequency(nn.Module):
    """Online estimate of each item's probability of being a batch positive.

    For every item (hashed into ``num_buckets`` buckets) it keeps the step it was last seen and
    moving averages of the number of steps between sightings (``gap``) and of the number of
    times it appears in a step where it appears (``hits``), after Yi et al. 2019 (their
    Algorithm 2 assumes one appearance per step; counting them keeps frequent items unbiased).
    The item's expected count per step is ``hits / gap``, so the probability of one positive of
    a batch of size ``B`` being the item is ``hits / (gap * B)``. Items never seen get
    probability 0. The state is made of buffers, so it is saved in checkpoints and, fed with the
    batch gathered across ranks, identical on every rank.

    Args:
        num_buckets: Hash buckets (item index modulo ``num_buckets``); at least the number of
            items avoids collisions.
        momentum: Weight ``alpha`` of the newest observation in the moving averages.

    Example:
        >>> frequency = StreamingFrequency(num_buckets=8)
        >>> for _ in range(50):
        ...     _ = frequency.update(torch.tensor([0, 0, 1, 2]))  # item 0: half the positives
        >>> frequency.log_q(torch.tensor([0, 1, 3]), batch_size=4).exp()
        tensor([0.5000, 0.2500, 0.0000])
    """

    last_step: Tensor
    gap: Tensor
    hits: Tensor
    step: Tensor

    def __init__(self, num_buckets: int = 2**20, momentum: float = 0.05):
        super().__init__()
        if num_buckets < 1:
            raise ValueError(f"num_buckets has to be a positive integer, got {num_buckets}")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum has to be in (0, 1], got {momentum}")
        self.num_buckets = num_buckets
        self.momentum = momentum
        self.register_buffer("last_step", torch.full((num_buckets,), -1, dtype=torch.long))
        self.register_buffer("gap", torch.zeros(num_buckets))
        self.register_buffer("hits", torch.zeros(num_buckets))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, items: Tensor) -> StreamingFrequency:
        """Record one step's positives ``items`` (any shape)."""
        self.step += 1
        buckets, counts = torch.unique(items.reshape(-1) % self.num_buckets, return_counts=True)
        last = self.last_step[buckets]
        seen_before = last >= 0
        # A first sighting at step t counts as a gap of t steps.
        gap = (self.step - last.clamp(min=0)).float()
        alpha = torch.where(seen_before, self.momentum, 1.0)
        self.gap[buckets] = (1 - alpha) * self.gap[buckets] + alpha * gap
        self.hits[buckets] = (1 - alpha) * self.hits[buckets] + alpha * counts.float()
        self.last_step[buckets] = self.step
        return self

    def log_q(self, items: Tensor, batch_size: int) -> Tensor:
        """``log q_batch(item)`` for each of ``items``; ``-inf`` for items never seen."""
        buckets = items % self.num_buckets
        seen = self.last_step[buckets] >= 0
        log_q = torch.log(self.hits[buckets].clamp(min=1e-12)) - torch.log(
            self.gap[buckets].clamp(min=1e-12) * batch_size
        )
        return torch.where(seen, log_q, torch.full_like(log_q, float("-inf")))
