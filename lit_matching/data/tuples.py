"""Training tuples of each mode, built a whole batch at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, Dataset, RandomSampler, Sampler, get_worker_info

from lit_matching.data.sampling import NegativeSampler

__all__ = [
    "MODES",
    "ArrayBatchSampler",
    "BatchIndex",
    "EpochBatchSampler",
    "EpochCounter",
    "HistoryLookup",
    "InteractionTuples",
    "UserBatches",
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
    The log-probabilities of in-batch sampling are left out: point-wise rows have no in-batch
    negatives to correct.
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


@dataclass(frozen=True)
class BatchIndex:
    """The dataset positions of one training batch and its key ``(epoch, batch number)``.

    :class:`InteractionTuples` seeds the batch's negatives from the key, so a batch is the same
    whatever came before it and whichever ``DataLoader`` worker builds it.
    """

    positions: np.ndarray
    key: tuple[int, int]


@dataclass
class EpochCounter:
    """Training epochs begun, shared by all training loaders of a DataModule.

    Setting ``resume = (epoch, batch)`` (done when a checkpoint is loaded) makes the next
    iteration continue that epoch from that batch.
    """

    started: int = 0
    resume: tuple[int, int] | None = None


class EpochBatchSampler(ArrayBatchSampler):
    """Training batches that are a function of ``(seed, epoch, batch number)`` alone.

    Each iteration is the next epoch of ``counter``. Epoch ``e`` takes its order from its own
    stream, ``SeedSequence(seed, spawn_key=(e,))``, when ``sampler`` is a
    :class:`~torch.utils.data.RandomSampler`; any other sampler (Lightning's
    ``DistributedSampler`` under DDP) gets ``set_epoch(e)`` and is iterated. Batch ``b`` comes
    as a :class:`BatchIndex` keyed ``(e, b)``. Nothing depends on the global torch RNG or on
    earlier batches, so a run can start at any ``(epoch, batch)``: see
    :attr:`EpochCounter.resume`.

    Example:
        >>> counter = EpochCounter()
        >>> batches = EpochBatchSampler(RandomSampler(range(5)), 2, False, counter, seed=0)
        >>> first = [(b.key, b.positions.tolist()) for b in batches]
        >>> [key for key, _ in first]
        [(0, 0), (0, 1), (0, 2)]
        >>> [b.key for b in batches]  # the next epoch
        [(1, 0), (1, 1), (1, 2)]
        >>> counter.resume = (0, 1)
        >>> [(b.key, b.positions.tolist()) for b in batches] == first[1:]
        True
    """

    def __init__(
        self,
        sampler: Sampler[int] | Iterable[int],
        batch_size: int,
        drop_last: bool,
        counter: EpochCounter | None = None,
        seed: int = 0,
    ):
        super().__init__(sampler, batch_size, drop_last)
        self.counter = EpochCounter() if counter is None else counter
        self.seed = seed

    def __iter__(self) -> Iterator[BatchIndex]:  # type: ignore[override]
        """The batches of the next epoch, or of the epoch to resume from its batch on."""
        counter = self.counter
        epoch, skip = (counter.started, 0) if counter.resume is None else counter.resume
        counter.started, counter.resume = epoch + 1, None
        order = self._order(epoch)
        size = self.batch_size
        stop = len(order) - len(order) % size if self.drop_last else len(order)
        for start in range(skip * size, stop, size):
            yield BatchIndex(order[start : start + size], (epoch, start // size))

    def _order(self, epoch: int) -> np.ndarray:
        sampler = self.sampler
        if type(sampler) is RandomSampler and not sampler.replacement:
            stream = np.random.SeedSequence(self.seed, spawn_key=(epoch,))
            return np.random.default_rng(stream).permutation(len(sampler))
        if callable(set_epoch := getattr(sampler, "set_epoch", None)):
            set_epoch(epoch)  # also where Lightning has not yet set it (resuming mid-epoch)
        return np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))  # type: ignore[arg-type]


@dataclass(frozen=True)
class HistoryLookup:
    """The last ``length`` items of a user strictly before each row, left-padded.

    ``source_items`` lists the items a history may draw from (e.g. the training interactions)
    in ``(user, time)`` order, after ``length`` padding entries. For row ``r``, the user's
    source items occupy positions ``starts[r]`` up to ``ends[r]`` (exclusive), where
    ``ends[r]`` counts only source interactions strictly before row ``r``; the history is the
    last ``length`` of them.

    Example:
        >>> lookup = HistoryLookup(np.array([99, 99, 5, 6, 7]), starts=np.array([2, 2]),
        ...                        ends=np.array([3, 5]), length=2, pad=99)
        >>> histories, lengths = lookup.gather(np.array([0, 1]))
        >>> histories.tolist(), lengths.tolist()
        ([[99, 5], [6, 7]], [1, 2])
    """

    source_items: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    length: int
    pad: int

    @classmethod
    def build(
        cls,
        source: tuple[np.ndarray, np.ndarray, np.ndarray],
        rows: tuple[np.ndarray, np.ndarray],
        length: int,
        pad: int,
    ) -> HistoryLookup:
        """From ``source = (users, items, order)`` and ``rows = (users, order)``.

        ``order`` is a global position that sorts interactions by ``(user, time)`` with ties
        in input order, so "strictly before" means a smaller order.
        """
        src_users, src_items, src_order = source
        sort = np.argsort(src_order, kind="stable")
        row_users, row_order = rows
        # ``length`` pads in front keep every gathered position in range (see ``gather``).
        # int32 halves the memory traffic of the per-batch gather (items < 2**31).
        return cls(
            source_items=np.concatenate([np.full(length, pad), src_items[sort]]).astype(np.int32),
            starts=(np.searchsorted(src_users[sort], row_users, side="left") + length).astype(
                np.int32
            ),
            ends=(np.searchsorted(src_order[sort], row_order, side="left") + length).astype(
                np.int32
            ),
            length=length,
            pad=pad,
        )

    @classmethod
    def latest(
        cls,
        source: tuple[np.ndarray, np.ndarray, np.ndarray],
        users: np.ndarray,
        length: int,
        pad: int,
    ) -> HistoryLookup:
        """Each of ``users``' last ``length`` source items (all of them, not just the past).

        For evaluation and serving: the history that precedes whatever comes next.
        """
        src_users, src_items, src_order = source
        sort = np.argsort(src_order, kind="stable")
        sorted_users = src_users[sort]
        return cls(
            source_items=np.concatenate([np.full(length, pad), src_items[sort]]).astype(np.int32),
            starts=(np.searchsorted(sorted_users, users, side="left") + length).astype(np.int32),
            ends=(np.searchsorted(sorted_users, users, side="right") + length).astype(np.int32),
            length=length,
            pad=pad,
        )

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(histories (B, length), lengths (B,))`` of the given rows."""
        ends = self.ends[rows]
        starts = np.maximum(self.starts[rows], ends - self.length)
        positions = ends[:, None] - np.arange(self.length, 0, -1, dtype=np.int32)
        # Positions before the user's first item are in range thanks to the leading pads
        # and are then overwritten with the pad.
        histories = self.source_items[positions]
        histories[positions < starts[:, None]] = self.pad
        return histories.astype(np.int64), (ends - starts).astype(np.int64)


class InteractionTuples(Dataset[Batch]):
    """Positive ``(user, item)`` pairs, with negatives drawn per batch.

    With ``resample=True`` every batch gets fresh negatives (so every epoch differs); with
    ``resample=False`` the negatives are drawn once from ``seed`` (for stable validation).
    Whole batches are built at once in :meth:`__getitems__`, which the ``DataLoader`` calls with
    the batch's indices, so building a batch costs a few vectorised numpy calls.

    Args:
        users: User of each positive.
        items: Item of each positive.
        sampler: Draws the negatives and their log-probabilities.
        num_negatives: Negatives per positive.
        build: Turns the arrays into the mode's batch (see :data:`MODES`).
        seed: Seed (or seed sequence, e.g. ``[seed, rank]``) of the negatives.
        resample: Fresh negatives per batch, or fixed ones.
        history: Adds ``history`` (B, L) and ``history_length`` (B,) to each batch.
        item_log_q: Per-item log-probability of being drawn as a batch's positive; adds
            ``pos_log_q`` (B,) to each batch, for log-Q correction of in-batch negatives, and
            for the mixture of in-batch and sampled negatives ``neg_batch_log_q`` (B, N) (the
            same for the negatives) and ``pos_sampler_log_q`` (B,) (the sampler's
            unconditional log-probability of each positive).
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        sampler: NegativeSampler,
        num_negatives: int,
        build: BatchBuilder,
        seed: int | Sequence[int],
        resample: bool = True,
        history: HistoryLookup | None = None,
        item_log_q: np.ndarray | None = None,
    ):
        self.users = np.asarray(users, dtype=np.int64)
        self.items = np.asarray(items, dtype=np.int64)
        self.sampler = sampler
        self.num_negatives = num_negatives
        self.build = build
        self.seed = [seed] if isinstance(seed, int) else list(seed)
        self.history = history
        self.item_log_q = None if item_log_q is None else item_log_q.astype(np.float32)
        self._generator: np.random.Generator | None = None
        self._worker_seed: int | None = None
        self.fixed_negatives = (
            None
            if resample
            else sampler.sample(self.users, num_negatives, np.random.default_rng(self.seed))
        )

    def __len__(self) -> int:
        return len(self.users)

    def _rng(self) -> np.random.Generator:
        # Each DataLoader worker gets its own stream; torch gives workers a new seed each epoch.
        info = get_worker_info()
        worker_seed = None if info is None else info.seed
        if self._generator is None or worker_seed != self._worker_seed:
            self._generator = np.random.default_rng([*self.seed, worker_seed or 0])
            self._worker_seed = worker_seed
        return self._generator

    def __getitems__(self, indices: Sequence[int] | BatchIndex) -> Batch:
        """The batch of the given positions, negatives included.

        A :class:`BatchIndex` (from :class:`EpochBatchSampler`) draws its negatives from the
        stream of its key, ``SeedSequence(seed, spawn_key=key)``; plain positions draw from
        the dataset's running stream.
        """
        if isinstance(indices, BatchIndex):
            index, key = indices.positions, indices.key
        else:  # a no-op for ArrayBatchSampler's arrays
            index, key = np.asarray(indices, dtype=np.int64), None
        users = self.users[index]
        if self.fixed_negatives is None:
            rng = (
                self._rng()
                if key is None
                else np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))
            )
            negatives, log_q = self.sampler.sample(users, self.num_negatives, rng)
        else:
            negatives, log_q = (part[index] for part in self.fixed_negatives)
        extras: dict[str, np.ndarray] = {}
        if self.history is not None:
            extras["history"], extras["history_length"] = self.history.gather(index)
        if self.item_log_q is not None:
            positives = self.items[index]
            extras["pos_log_q"] = self.item_log_q[positives]
            # The other source's probability of each item, for the mixture's log-Q.
            extras["neg_batch_log_q"] = self.item_log_q[negatives]
            extras["pos_sampler_log_q"] = self.sampler.item_log_p[positives].astype(np.float32)
        return self.build(users, self.items[index], negatives, log_q, extras)

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])


class UserBatches(Dataset[Batch]):
    """All user indices, served as ``{"users": ...}`` batches for prediction."""

    def __init__(self, num_users: int):
        self.num_users = num_users

    def __len__(self) -> int:
        return self.num_users

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """The users at these positions."""
        return {"users": torch.as_tensor(np.asarray(indices, dtype=np.int64))}

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])
