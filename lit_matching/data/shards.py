"""Training from prepared shards: what stays in memory, and the batches streamed from disk.

:class:`PreparedShards` opens a folder written by
:func:`~lit_matching.data.prepare.prepare_shards` and offers what
:class:`~lit_matching.data.pipeline.PreparedData` offers the DataModule, except the in-memory
split. In memory stay the vocabularies and, per user, the row pointer of the training items
(8 bytes; validation and test ones load on first use) and the sampler's free mass (16 bytes);
per interaction only the training items, 4 bytes each, memory-mapped (shared by the processes
of a machine) to reject negatives that are positives. Rows and their histories are read from
disk batch by batch.

:class:`ShardBatches` streams the training rows. Epoch ``e`` permutes the row groups from
``(seed, e)``; rank ``r`` of ``W`` takes every ``W``-th of them (the same number per rank:
under DDP the last, shorter row group and up to ``W - 1`` others sit out that epoch, a
different set each epoch); ``window`` consecutive row groups of a rank are read together and
permuted, and batches are cut from that stream in order. Batch ``b`` is a function of
``(seed, rank, world size, epoch, b)`` alone, its negatives drawn from the stream of
``(seed, rank)`` keyed ``(e, b)`` as in memory, so a run resumes at any batch and
``num_workers`` changes nothing.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lit_matching.data.batches import Batch, BatchBuilder, keep_batch
from lit_matching.data.features import FeatureTable
from lit_matching.data.interactions import IdVocabulary
from lit_matching.data.item_sets import EvalSet
from lit_matching.data.prepare import PREPARED_FILE
from lit_matching.data.resume import EpochCounter, ResumableLoader
from lit_matching.data.sampling import NegativeSampler, UniformNegativeSampler
from lit_matching.data.stored_sets import StoredItemSets
from lit_matching.data.tuples import InteractionTuples, RowHistories, held_out_seed, tuple_batch

__all__ = ["PREPARED_ARGUMENTS", "PreparedShards", "ShardBatches", "ShardLoader", "shard_loader"]

#: DataModule arguments that ``prepare_shards`` applied (changing them needs a new prepare).
PREPARED_ARGUMENTS = (
    "file_format",
    "split_files",
    "time_col",
    "rating_col",
    "min_rating",
    "duplicates",
    "min_user_interactions",
    "min_item_interactions",
    "split",
    "split_options",
)


@dataclass(frozen=True, eq=False)
class PreparedShards:
    """A prepared folder, opened: vocabularies, counts, item sets, histories, row groups."""

    folder: Path
    meta: dict[str, Any]
    user_vocab: IdVocabulary
    item_vocab: IdVocabulary
    train_items: StoredItemSets
    item_counts: np.ndarray
    feature_tables: dict[str, FeatureTable | None] = field(default_factory=dict)

    @classmethod
    def open(
        cls, folder: str | Path, changed: Sequence[str] = (), history_length: int = 0
    ) -> PreparedShards:
        """Open ``folder`` (the item sets are memory-mapped, nothing else is read yet).

        Raises:
            ValueError: if DataModule arguments that preparation fixed were ``changed``, or
                ``history_length`` is longer than the prepared histories.
        """
        folder = Path(folder)
        meta = json.loads((folder / PREPARED_FILE).read_text())
        if changed:
            raise ValueError(
                f"{', '.join(changed)}: fixed when {folder} was prepared "
                f"({ {name: meta['options'].get(name) for name in changed} }); prepare the "
                "log again (lit-matching prepare) to change them"
            )
        if history_length > meta["history_length"]:
            raise ValueError(
                f"history_length {history_length} is longer than the {meta['history_length']} "
                f"items per row prepared in {folder}; prepare with --history-length "
                f"{history_length}"
            )
        users, items = (
            IdVocabulary(pd.Index(pd.read_parquet(folder / f"{side}.parquet")["id"]))
            for side in ("users", "items")
        )
        train = StoredItemSets.load(folder, "train", len(items))
        return cls(folder, meta, users, items, train, np.load(folder / "item_counts.npy"))

    @cached_property
    def val_items(self) -> StoredItemSets:
        """Each user's validation items (loaded on first use: training never reads them)."""
        return StoredItemSets.load(self.folder, "val", len(self.item_vocab))

    @cached_property
    def test_items(self) -> StoredItemSets:
        """Each user's test items (loaded on first use)."""
        return StoredItemSets.load(self.folder, "test", len(self.item_vocab))

    @property
    def history_length(self) -> int:
        """The longest history the folder holds per row."""
        return int(self.meta["history_length"])

    @property
    def options(self) -> dict[str, Any]:
        """What ``prepare_shards`` was given (columns, cleaning, split, row groups, seed)."""
        return dict(self.meta["options"])

    @property
    def splits(self) -> Any:
        """Not kept: prepared data has no in-memory split."""
        raise AttributeError(
            f"data prepared in {self.folder} keeps no in-memory split (that is what keeps "
            "memory bounded); use train_items / val_items / test_items or eval_set(stage)"
        )

    @cached_property
    def item_log_q(self) -> np.ndarray:
        """Log-probability of each item being a training batch's positive (``-inf``: none)."""
        with np.errstate(divide="ignore"):
            return np.log(self.item_counts / max(int(self.item_counts.sum()), 1))

    def eval_set(self, stage: str) -> EvalSet:
        """As :meth:`~lit_matching.data.pipeline.PreparedData.eval_set` (sets in memory)."""
        return EvalSet.of_stage(stage, self.train_items, self.val_items, self.test_items)

    @cached_property
    def eval_sampler(self) -> UniformNegativeSampler:
        """Uniform negatives avoiding all of a user's known items (for val / test tuples)."""
        return UniformNegativeSampler(self.train_items.union(self.val_items).union(self.test_items))

    def latest_history(self, stage: str, users: np.ndarray, length: int) -> RowHistories:
        """Each of ``users``' last ``length`` items known at ``stage`` (val, test, serve)."""
        stored = np.load(self.folder / f"history_{stage}.npy", mmap_mode="r")
        return RowHistories(np.asarray(stored[users]), length, pad=len(self.item_vocab))

    def held_out(
        self, stage: str, length: int
    ) -> tuple[np.ndarray, np.ndarray, RowHistories | None]:
        """Users, items and histories of the ``"val"`` or ``"test"`` rows."""
        table = pq.read_table(self.folder / f"{stage}.parquet")
        histories = (
            RowHistories(_histories(table, self.history_length), length, len(self.item_vocab))
            if length
            else None
        )
        users, items = (table[name].to_numpy().astype(np.int64) for name in ("user", "item"))
        return users, items, histories

    def held_out_tuples(
        self, stage: str, build: BatchBuilder, num_negatives: int, history_length: int, seed: int
    ) -> InteractionTuples:
        """Validation or test tuples with fixed negatives, as the in-memory ``stage_tuples``."""
        users, items, histories = self.held_out(stage, history_length)
        return InteractionTuples(
            users,
            items,
            self.eval_sampler,
            num_negatives,
            build,
            seed=held_out_seed(seed, stage),
            resample=False,
            history=histories,
            item_log_q=self.item_log_q,
        )

    def row_groups(self) -> list[tuple[str, int, int]]:
        """Every training row group: ``(file, index in the file, rows)``."""
        return [
            (entry["file"], index, rows)
            for entry in self.meta["train_files"]
            for index, rows in enumerate(entry["row_groups"])
        ]


def _histories(table: Any, width: int) -> np.ndarray:
    values = table["history"].combine_chunks().flatten().to_numpy()
    return values.reshape(-1, width)


class ShardBatches(IterableDataset[Batch]):
    """The training batches of one rank, streamed from the row groups (see the module).

    Args:
        data: The prepared folder.
        batch_size: Positives per batch.
        sampler: Draws the negatives (rejecting each user's training items).
        num_negatives: Negatives per positive.
        build: The mode's batch builder.
        seed: Seed of the order and of the negatives.
        rank: This process's global rank; ``world_size``: the number of ranks.
        history_length: Length of each row's history (0: none).
        window: Row groups read and shuffled together.
    """

    def __init__(
        self,
        data: PreparedShards,
        *,
        batch_size: int,
        sampler: NegativeSampler,
        num_negatives: int,
        build: BatchBuilder,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        history_length: int = 0,
        window: int = 4,
    ):
        self.data, self.batch_size, self.window = data, batch_size, window
        self.sampler, self.num_negatives, self.build = sampler, num_negatives, build
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.history_length = history_length
        self.groups = data.row_groups()
        self.item_log_q = data.item_log_q.astype(np.float32)
        sizes = np.array([rows for _, _, rows in self.groups])
        # Under DDP every rank needs as many batches: only whole row groups, dealt evenly.
        self._candidates = (
            np.arange(len(sizes)) if world_size == 1 else np.flatnonzero(sizes == sizes.max())
        )
        self._per_rank = len(self._candidates) // world_size
        if self._per_rank == 0:
            raise ValueError(
                f"{len(self._candidates)} training row groups cannot be dealt to {world_size} "
                "ranks: prepare the data with a smaller row_group_size"
            )
        self._rows = int(sizes.sum()) if world_size == 1 else self._per_rank * int(sizes.max())
        self.epoch, self.first_batch = 0, 0  # set by ShardLoader before each epoch
        self._windows: OrderedDict[tuple[int, int], dict[str, np.ndarray]] = OrderedDict()
        self._files: dict[str, pq.ParquetFile] = {}
        # The epoch's row groups of this rank and where each window starts, per epoch.
        self._layout_of: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return -(-self._rows // self.batch_size)

    def rank_groups(self, epoch: int) -> np.ndarray:
        """Indices (into the row groups) of this rank's row groups in ``epoch``, in order."""
        return self._layout(epoch)[0]

    def _layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``epoch``'s row groups of this rank and the first row of each window (and the end)."""
        if self._layout_of is None or self._layout_of[0] != epoch:
            stream = np.random.SeedSequence(self.seed, spawn_key=(epoch,))
            order = np.random.default_rng(stream).permutation(self._candidates)
            groups = order[self.rank :: self.world_size][: self._per_rank]
            sizes = np.array([self.groups[g][2] for g in groups])
            window_rows = np.add.reduceat(sizes, np.arange(0, len(sizes), self.window))
            self._layout_of = (epoch, groups, np.concatenate([[0], np.cumsum(window_rows)]))
        return self._layout_of[1], self._layout_of[2]

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for batch in range(self.first_batch + worker, len(self), workers):
            yield self.batch(self.epoch, batch)

    def batch(self, epoch: int, number: int) -> Batch:
        """Batch ``number`` of ``epoch`` (its rows, negatives and histories)."""
        groups, window_starts = self._layout(epoch)
        start = number * self.batch_size
        stop = min(start + self.batch_size, self._rows)
        parts = []
        first = int(np.searchsorted(window_starts, start, side="right")) - 1
        for w in range(first, len(window_starts) - 1):
            if window_starts[w] >= stop:
                break
            rows = self._window(epoch, w, groups)
            lo, hi = (
                max(start - window_starts[w], 0),
                min(stop, window_starts[w + 1]) - window_starts[w],
            )
            parts.append({key: value[lo:hi] for key, value in rows.items()})
        rows = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        return self._tuples(rows, (epoch, number))

    def _tuples(self, rows: dict[str, np.ndarray], key: tuple[int, int]) -> Batch:
        users, items = rows["user"], rows["item"]
        stream = np.random.SeedSequence([self.seed, self.rank], spawn_key=key)
        negatives, log_q = self.sampler.sample(
            users, self.num_negatives, np.random.default_rng(stream)
        )
        histories = None
        if self.history_length:
            pad = len(self.data.item_vocab)
            histories = RowHistories(rows["history"], self.history_length, pad).gather(
                np.arange(len(users))
            )
        return tuple_batch(
            self.build, (users, items, negatives, log_q), histories, self.item_log_q, self.sampler
        )

    def _window(self, epoch: int, index: int, groups: np.ndarray) -> dict[str, np.ndarray]:
        """The rows of window ``index`` of ``epoch``, permuted (the last two are cached)."""
        cached = self._windows.get((epoch, index))
        if cached is not None:
            return cached
        tables = [
            self._read(*self.groups[g][:2])
            for g in groups[index * self.window : (index + 1) * self.window]
        ]
        rows = {key: np.concatenate([t[key] for t in tables]) for key in tables[0]}
        stream = np.random.SeedSequence([self.seed, self.rank, 1], spawn_key=(epoch, index))
        order = np.random.default_rng(stream).permutation(len(rows["user"]))
        rows = {key: value[order] for key, value in rows.items()}
        self._windows[(epoch, index)] = rows
        while len(self._windows) > 2:
            self._windows.popitem(last=False)
        return rows

    def _read(self, file: str, group: int) -> dict[str, np.ndarray]:
        if file not in self._files:
            self._files[file] = pq.ParquetFile(self.data.folder / file)
        columns = ["user", "item"] + (["history"] if self.history_length else [])
        table = self._files[file].read_row_group(group, columns=columns)
        rows = {name: table[name].to_numpy().astype(np.int64) for name in ("user", "item")}
        if self.history_length:
            rows["history"] = _histories(table, self.data.history_length)
        return rows

    def __getstate__(self) -> dict[str, Any]:
        # Workers open their own files and caches.
        return self.__dict__ | {"_files": {}, "_windows": OrderedDict()}


class ShardLoader(ResumableLoader):
    """The training ``DataLoader`` of :class:`ShardBatches`: each iteration is the next epoch.

    The epoch (and the batch to resume from) come from ``counter``, as for the in-memory
    loader, and are set on the dataset before the workers start (so workers are not
    persistent).
    """

    def __init__(self, dataset: ShardBatches, counter: EpochCounter, **kwargs: Any):
        super().__init__(dataset, batch_size=None, collate_fn=keep_batch, **kwargs)  # type: ignore[arg-type]
        self.counter = counter

    def __iter__(self) -> Any:
        dataset = self.dataset
        assert isinstance(dataset, ShardBatches)
        dataset.epoch, dataset.first_batch = self.counter.begin()
        return super().__iter__()


def shard_loader(
    dataset: ShardBatches, counter: EpochCounter, *, num_workers: int, seed: int, pin_memory: bool
) -> ShardLoader:
    """A :class:`ShardLoader` whose workers draw nothing from the global torch RNG."""
    return ShardLoader(
        dataset,
        counter,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )
