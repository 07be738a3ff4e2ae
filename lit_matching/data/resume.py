"""Exact resume: training batches keyed by ``(epoch, batch)``, and what checkpoints keep.

A training batch is a function of ``(seed, epoch, batch number)`` alone
(:class:`EpochBatchSampler` orders each epoch from its own stream and keys every batch with a
:class:`BatchIndex`, from which :class:`~lit_matching.data.tuples.InteractionTuples` seeds the
batch's negatives), so a run can start at any batch. A checkpoint keeps, in the DataModule's
state (:func:`checkpoint_state`, restored by :func:`restore_checkpoint_state`): the id
vocabularies, the position of the next training batch and the global random states (torch,
CUDA, numpy, Python: what dropout draws from). The state's keys are ``user_ids``,
``item_ids``, ``train_position`` (``{"epoch": e, "batch": b}``) and ``rng``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader, RandomSampler, Sampler

from lit_matching.data.batches import ArrayBatchSampler
from lit_matching.data.interactions import IdVocabulary

__all__ = [
    "BatchIndex",
    "EpochBatchSampler",
    "EpochCounter",
    "ResumableLoader",
    "checkpoint_state",
    "fitting",
    "global_rng_states",
    "restore_checkpoint_state",
    "set_global_rng_states",
    "train_position",
]


@dataclass(frozen=True)
class BatchIndex:
    """The dataset positions of one training batch and its key ``(epoch, batch number)``.

    :class:`~lit_matching.data.tuples.InteractionTuples` seeds the batch's negatives from the
    key, so a batch is the same whatever came before it and whichever ``DataLoader`` worker
    builds it.
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

    def begin(self) -> tuple[int, int]:
        """Start the next epoch: ``(epoch, first batch)``, the resumed one if one is set."""
        epoch, skip = (self.started, 0) if self.resume is None else self.resume
        self.started, self.resume = epoch + 1, None
        return epoch, skip


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
        epoch, skip = self.counter.begin()
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


class ResumableLoader(DataLoader):
    """The training ``DataLoader``, marked for Lightning as resumable mid-epoch.

    The position and RNG states travel in the DataModule's state (:func:`checkpoint_state`)
    instead, which Lightning restores before it builds the loader (also when
    ``configure_optimizers`` reads ``trainer.estimated_stepping_batches``); these hooks save
    nothing.
    """

    def state_dict(self) -> dict[str, Any]:
        """Nothing: see :func:`checkpoint_state`."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore."""


def fitting(trainer: pl.Trainer | None) -> bool:
    """Whether ``trainer`` (if any) is running ``fit``."""
    return getattr(getattr(trainer, "state", None), "fn", None) == TrainerFn.FITTING


def train_position(counter: EpochCounter, trainer: pl.Trainer | None) -> dict[str, int]:
    """The epoch and batch number of the next training batch.

    Example:
        >>> train_position(EpochCounter(started=2), None)
        {'epoch': 2, 'batch': 0}
    """
    if counter.resume is not None:
        epoch, batch = counter.resume
        return {"epoch": epoch, "batch": batch}
    if not fitting(trainer) or counter.started == 0:
        return {"epoch": counter.started, "batch": 0}
    # The trainer's count of trained batches: the loader itself is ahead by the batches
    # Lightning prefetches. (``current`` is a ``_ProcessedTracker`` at run time.)
    assert trainer is not None
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    done: int = progress.processed  # type: ignore[attr-defined]
    if done >= trainer.num_training_batches:
        return {"epoch": counter.started, "batch": 0}
    return {"epoch": counter.started - 1, "batch": done}


def global_rng_states() -> dict[str, Any]:
    """The global random states, in types ``torch.load(weights_only=True)`` accepts."""
    numpy_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is the point)
    assert isinstance(numpy_state, tuple)
    kind, key, position, has_gauss, gauss = numpy_state
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, key.tolist(), position, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()  # of the current device
    return states


def set_global_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`global_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    kind, key, position, has_gauss, gauss = states["numpy"]
    numpy_state = (kind, np.asarray(key, dtype=np.uint32), position, has_gauss, gauss)
    np.random.set_state(numpy_state)  # noqa: NPY002
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def checkpoint_state(
    users: IdVocabulary, items: IdVocabulary, counter: EpochCounter, trainer: pl.Trainer | None
) -> dict[str, Any]:
    """The data's part of a checkpoint: vocabularies, next training batch, global RNG states."""
    return {
        "user_ids": users.to_list(),
        "item_ids": items.to_list(),
        "train_position": train_position(counter, trainer),
        "rng": global_rng_states(),
    }


def restore_checkpoint_state(
    state: dict[str, Any],
    users: IdVocabulary,
    items: IdVocabulary,
    counter: EpochCounter,
    trainer: pl.Trainer | None,
) -> None:
    """Check ``state``'s vocabularies; when fitting, resume its position and RNG states.

    Raises:
        ValueError: If the checkpoint's ids differ from ``users`` / ``items``.
    """
    for key, vocab in (("user_ids", users), ("item_ids", items)):
        if key in state and state[key] != vocab.to_list():
            raise ValueError(
                f"checkpoint {key} differ from this data's ({len(state[key])} vs "
                f"{len(vocab)} ids): the model was trained on other data"
            )
    if not fitting(trainer):  # validate / test / predict from a checkpoint: nothing to resume
        return
    if (position := state.get("train_position")) is not None:
        counter.resume = (position["epoch"], position["batch"])
    if (rng := state.get("rng")) is not None:
        set_global_rng_states(rng)
