"""Training tuples: the datasets that build a whole batch at a time, and history lookup.

:class:`InteractionTuples` turns positive ``(user, item)`` pairs into batches of one mode
(built by a :data:`~lit_matching.data.batches.MODES` builder) with sampled negatives;
:class:`HistoryLookup` gives each row the user's preceding items; :class:`UserBatches` serves
user indices for prediction. Batch positions come from the samplers of
:mod:`lit_matching.data.batches` and :mod:`lit_matching.data.resume`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from lit_matching.data.batches import Batch, BatchBuilder
from lit_matching.data.pipeline import PreparedData
from lit_matching.data.resume import BatchIndex
from lit_matching.data.sampling import NegativeSampler

__all__ = [
    "HistoryLookup",
    "InteractionTuples",
    "RowHistories",
    "UserBatches",
    "held_out_seed",
    "stage_tuples",
    "tuple_batch",
]


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


@dataclass(frozen=True)
class RowHistories:
    """Histories stored beside their rows (prepared shards): row ``r``'s is ``histories[r]``.

    The same ``gather`` as :class:`HistoryLookup`; a stored history longer than ``length``
    keeps its last ``length`` items (histories are left-padded with ``pad``).

    Example:
        >>> rows = RowHistories(np.array([[9, 9, 4], [9, 2, 3]]), length=2, pad=9)
        >>> histories, lengths = rows.gather(np.array([1, 0]))
        >>> histories.tolist(), lengths.tolist()
        ([[2, 3], [9, 4]], [2, 1])
    """

    histories: np.ndarray
    length: int
    pad: int

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(histories (B, length), lengths (B,))`` of the given rows."""
        histories = np.asarray(self.histories[rows][:, -self.length :], dtype=np.int64)
        return histories, (histories != self.pad).sum(axis=1)


def tuple_batch(
    build: BatchBuilder,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    histories: tuple[np.ndarray, np.ndarray] | None,
    item_log_q: np.ndarray | None,
    sampler: NegativeSampler,
) -> Batch:
    """The mode's batch of ``rows = (users, positives, negatives, neg_log_q)``.

    Adds ``history`` / ``history_length`` and, with ``item_log_q``, the in-batch
    log-probabilities (see :class:`InteractionTuples`).
    """
    users, positives, negatives, log_q = rows
    extras: dict[str, np.ndarray] = {}
    if histories is not None:
        extras["history"], extras["history_length"] = histories
    if item_log_q is not None:
        extras["pos_log_q"] = item_log_q[positives]
        # The other source's probability of each item, for the mixture's log-Q.
        extras["neg_batch_log_q"] = item_log_q[negatives]
        extras["pos_sampler_log_q"] = sampler.item_log_p[positives].astype(np.float32)
    return build(users, positives, negatives, log_q, extras)


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
        build: Turns the arrays into the mode's batch (see
            :data:`~lit_matching.data.batches.MODES`).
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
        history: HistoryLookup | RowHistories | None = None,
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

        A :class:`~lit_matching.data.resume.BatchIndex` (from
        :class:`~lit_matching.data.resume.EpochBatchSampler`) draws its negatives from the
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
        histories = None if self.history is None else self.history.gather(index)
        return tuple_batch(
            self.build,
            (users, self.items[index], negatives, log_q),
            histories,
            self.item_log_q,
            self.sampler,
        )

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


def held_out_seed(seed: int, stage: str) -> list[int]:
    """The stream of the fixed negatives of ``"val"`` or ``"test"`` tuples: ``[seed, 1 or 2]``."""
    return [seed, {"val": 1, "test": 2}[stage]]


def stage_tuples(
    data: PreparedData,
    stage: str,
    sampler: NegativeSampler,
    *,
    build: BatchBuilder,
    num_negatives: int,
    history_length: int,
    seed: Sequence[int],
) -> InteractionTuples:
    """The tuples of ``data``'s part ``stage`` (``"train"``, ``"val"`` or ``"test"``).

    Training draws fresh negatives per batch from the stream ``seed`` (e.g. ``[seed, rank]``:
    distinct per DDP rank); validation and test draw theirs once, from ``[seed[0], 1]`` and
    ``[seed[0], 2]``. With ``history_length > 0`` each row gets the user's preceding items
    known at ``stage`` (see :meth:`~lit_matching.data.pipeline.PreparedData.history_source`).
    """
    part = getattr(data.splits, stage)
    train = stage == "train"
    history = (
        HistoryLookup.build(
            data.history_source(stage),
            (part.user.to_numpy(), part.order.to_numpy()),
            history_length,
            pad=len(data.item_vocab),
        )
        if history_length
        else None
    )
    return InteractionTuples(
        part.user.to_numpy(),
        part.item.to_numpy(),
        sampler,
        num_negatives,
        build,
        # Distinct streams per DDP rank; fixed ones for validation and test.
        seed=list(seed) if train else held_out_seed(seed[0], stage),
        resample=train,
        history=history,
        item_log_q=data.item_log_q,
    )
