"""What a batch is: the builders of each training mode, the mode registry and batch sampling.

The mode contract lives here: :data:`MODES` maps each training mode to the function that turns
a batch's positives and sampled negatives into that mode's batch, whose keys the mode's
``LightningModule`` reads (``users``, ``items``, ``labels`` point-wise; ``users``,
``pos_items``, ``neg_items``, ``neg_log_q`` pair- and list-wise, plus the
:data:`IN_BATCH_LOG_Q` keys and ``history`` / ``history_length`` where the data has them).
Batches are built whole (see :class:`~lit_matching.data.tuples.InteractionTuples`), so the
``DataLoader`` collates with :func:`keep_batch` and draws positions from an
:class:`ArrayBatchSampler`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

__all__ = [
    "IN_BATCH_LOG_Q",
    "MODES",
    "ArrayBatchSampler",
    "Batch",
    "BatchBuilder",
    "batch_loader",
    "keep_batch",
    "labelled_batch",
    "ranked_batch",
]

Batch = dict[str, Tensor]
#: ``(users, pos_items, neg_items, neg_log_q, per_row_extras) -> batch``
BatchBuilder = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]], Batch
]


#: Batch keys of the log-probabilities that only in-batch negatives need.
IN_BATCH_LOG_Q = ("pos_log_q", "neg_batch_log_q", "pos_sampler_log_q")


def labelled_batch(
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    neg_log_q: np.ndarray,
    extras: dict[str, np.ndarray],
) -> Batch:
    """Point-wise rows ``(user, item, label)``: each positive then its negatives, flattened.

    Per-row ``extras`` (e.g. the user's history) are repeated for every row of a positive;
    the log-probabilities of in-batch sampling are left out: point-wise rows have no in-batch
    negatives to correct.

    Example:
        >>> batch = labelled_batch(np.array([3]), np.array([7]), np.array([[1, 2]]),
        ...                        np.zeros((1, 2)), {})
        >>> {key: value.tolist() for key, value in batch.items()}
        {'users': [3, 3, 3], 'items': [7, 1, 2], 'labels': [1.0, 0.0, 0.0]}
    """
    extras = {k: v for k, v in extras.items() if k not in IN_BATCH_LOG_Q}
    repeats = 1 + negatives.shape[1]
    items = np.concatenate([positives[:, None], negatives], axis=1)
    labels = np.zeros_like(items, dtype=np.float32)
    labels[:, 0] = 1.0
    batch = {
        "users": torch.from_numpy(np.repeat(users, repeats)),
        "items": torch.from_numpy(items.reshape(-1)),
        "labels": torch.from_numpy(labels.reshape(-1)),
    }
    return batch | {k: torch.from_numpy(np.repeat(v, repeats, axis=0)) for k, v in extras.items()}


def ranked_batch(
    users: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    neg_log_q: np.ndarray,
    extras: dict[str, np.ndarray],
) -> Batch:
    """Pair- and list-wise rows ``(user, pos_item, neg_items[N])`` with ``neg_log_q[N]``.

    ``extras`` add e.g. ``pos_log_q`` (the in-batch sampling log-probability of each positive)
    and the history.

    Example:
        >>> batch = ranked_batch(np.array([3]), np.array([7]), np.array([[1, 2]]),
        ...                      np.zeros((1, 2)), {})
        >>> {key: tuple(value.shape) for key, value in batch.items()}
        {'users': (1,), 'pos_items': (1,), 'neg_items': (1, 2), 'neg_log_q': (1, 2)}
    """
    batch = {
        "users": torch.from_numpy(users),
        "pos_items": torch.from_numpy(positives),
        "neg_items": torch.from_numpy(np.ascontiguousarray(negatives)),
        "neg_log_q": torch.from_numpy(neg_log_q.astype(np.float32)),
    }
    return batch | {k: torch.from_numpy(v) for k, v in extras.items()}


#: Training modes: name -> (batch builder, default number of negatives per positive).
MODES: dict[str, tuple[BatchBuilder, int]] = {
    "pointwise": (labelled_batch, 4),
    "pairwise": (ranked_batch, 1),
    "listwise": (ranked_batch, 8),
}


def keep_batch(batch: Batch) -> Batch:
    """Collation for datasets that already return whole batches (the identity)."""
    return batch


class ArrayBatchSampler(BatchSampler):
    """A :class:`~torch.utils.data.BatchSampler` that yields each batch as a numpy array.

    It takes the whole epoch's order from ``sampler`` at once instead of collecting Python
    ints one batch at a time, which halves the cost of indexing an epoch. Lightning swaps in
    its ``DistributedSampler`` under DDP as for any ``BatchSampler``.

    Example:
        >>> from torch.utils.data import SequentialSampler
        >>> [b.tolist() for b in ArrayBatchSampler(SequentialSampler(range(5)), 2, False)]
        [[0, 1], [2, 3], [4]]
    """

    def __iter__(self) -> Iterator[np.ndarray]:  # type: ignore[override]
        """Index arrays of ``batch_size`` (the last one shorter unless ``drop_last``)."""
        order = self._epoch_order()
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield order[start : start + self.batch_size]

    def _epoch_order(self) -> np.ndarray:
        sampler = self.sampler
        if type(sampler) is RandomSampler and not sampler.replacement:
            # What RandomSampler.__iter__ draws, without a Python int per index.
            generator = sampler.generator
            if generator is None:
                generator = torch.Generator()
                generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
            return torch.randperm(len(sampler), generator=generator).numpy()
        return np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))  # type: ignore[arg-type]


def batch_loader(
    dataset: Dataset[Any],
    batches: ArrayBatchSampler,
    *,
    num_workers: int,
    seed: int,
    pin_memory: bool,
    loader_class: type[DataLoader] = DataLoader,
) -> DataLoader:
    """A ``DataLoader`` of ``dataset``'s whole batches at the positions ``batches`` yields."""
    return loader_class(
        dataset,
        batch_sampler=batches,
        collate_fn=keep_batch,  # type: ignore[arg-type]
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        # Worker seeds come from here, not from the global torch RNG: loading data never
        # moves the RNG the model draws from (dropout), which checkpoints save.
        generator=torch.Generator().manual_seed(seed),
    )
