"""One bucket of users of :func:`~lit_matching.data.prepare.prepare_shards`: clean, split, write.

A bucket holds every interaction of a contiguous range of user indices, so everything that is
per user (duplicates, the split, histories, each user's item sets) is computed from the
bucket alone, in memory bounded by the bucket's size, and the per-user files are appended in
user order.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lit_matching.data.cleaning import drop_duplicates
from lit_matching.data.splits import SPLITS, Split
from lit_matching.data.stored_sets import NpyAppender
from lit_matching.data.tuples import HistoryLookup

__all__ = [
    "BucketWriters",
    "join_pieces",
    "process_bucket",
    "read_pieces",
    "row_table",
    "write_piece",
]

_PARTS = ("train", "val", "test")
#: Parts a user's latest history draws from at each stage (as the in-memory path).
_LATEST_FROM = {"val": ("train",), "test": ("train", "val"), "serve": _PARTS}
_GATHER_ROWS = 1 << 18  # histories gathered at a time (int64 temporaries)


@contextmanager
def _quiet_bucket_logs() -> Iterator[None]:
    """Silence the cleaning's and split's summaries (they would repeat once per bucket)."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass
class BucketWriters:
    """The files every bucket appends to, and the per-user and per-item counts so far."""

    folder: Path
    num_users: int
    num_items: int
    history_length: int
    partitions: Path  # a folder per partition, a piece per bucket
    num_partitions: int
    schema: pa.Schema  # of the row tables
    item_sets: dict[str, NpyAppender]
    histories: dict[str, NpyAppender] = field(default_factory=dict)
    user_counts: dict[str, np.ndarray] = field(default_factory=dict)
    item_counts: np.ndarray | None = None
    dropped_duplicates: int = 0

    def close(self) -> None:
        """Close every writer (the ``.npy`` headers are written here)."""
        for appender in [*self.item_sets.values(), *self.histories.values()]:
            appender.close()


def write_piece(folder: Path, number: int, table: pa.Table) -> None:
    """Write ``table`` as piece ``number`` of ``folder`` (one file, closed at once)."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / f"{number:05d}.parquet")


def join_pieces(folder: Path, path: Path, schema: pa.Schema) -> None:
    """The pieces of ``folder``, in order, as the one file ``path`` (a piece at a time)."""
    with pq.ParquetWriter(path, schema) as writer:
        for piece in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
            writer.write_table(pq.read_table(piece))


def read_pieces(folder: Path) -> pa.Table | None:
    """The pieces of ``folder`` in piece order, as one table (``None``: no piece)."""
    paths = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    return pa.concat_tables([pq.read_table(path) for path in paths]) if paths else None


def row_table(
    users: np.ndarray, items: np.ndarray, histories: np.ndarray | None, history_length: int
) -> pa.Table:
    """Training or held-out rows as an Arrow table (``history``: fixed-size int32 lists)."""
    columns = {
        "user": pa.array(users.astype(np.int32)),
        "item": pa.array(items.astype(np.int32)),
    }
    if history_length:
        assert histories is not None
        flat = pa.array(histories.astype(np.int32).reshape(-1))
        columns["history"] = pa.FixedSizeListArray.from_arrays(flat, history_length)
    return pa.table(columns)


def _gather(lookup: HistoryLookup, rows: int) -> np.ndarray:
    """All rows' histories as int32, a slice of rows at a time."""
    out = np.empty((rows, lookup.length), dtype=np.int32)
    for start in range(0, rows, _GATHER_ROWS):
        index = np.arange(start, min(start + _GATHER_ROWS, rows))
        out[index] = lookup.gather(index)[0]
    return out


def _source(split: Split, parts: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = pd.concat([getattr(split, part) for part in parts], ignore_index=True)
    return frame.user.to_numpy(), frame.item.to_numpy(), frame.order.to_numpy()


def _split_bucket(
    frame: pd.DataFrame, split: str, options: Mapping[str, Any], bucket: int
) -> Split:
    function = SPLITS[split]
    options = dict(options)
    if "seed" in inspect.signature(function).parameters:
        # Each bucket draws from its own stream of the split's seed.
        stream = np.random.SeedSequence([int(options.get("seed", 0)), bucket])
        options["seed"] = int(stream.generate_state(1)[0])
    return function(frame, **options)


def process_bucket(
    frame: pd.DataFrame,
    users: tuple[int, int],
    writers: BucketWriters,
    *,
    split: str,
    split_options: Mapping[str, Any],
    duplicates: str,
    order_offset: int,
    bucket: int,
    rng: np.random.Generator,
) -> int:
    """Clean, split and write one bucket (``frame``: ``user``, ``item``, ``time``, ``row``).

    Returns the bucket's number of interactions after cleaning (the next ``order_offset``).
    """
    with _quiet_bucket_logs():
        kept = drop_duplicates(frame, "user", "item", "time", keep=duplicates)  # type: ignore[arg-type]
        writers.dropped_duplicates += len(frame) - len(kept)
        # As index_interactions: (user, time) order, ties in input (row) order.
        kept = kept.sort_values(["user", "time", "row"], kind="stable", ignore_index=True)
        kept = kept.drop(columns="row").assign(order=order_offset + np.arange(len(kept)))
        parts = _split_bucket(kept, split, split_options, bucket)
    _write_item_sets(parts, users, writers)
    _write_rows(parts, users, writers, rng, bucket)
    return len(kept)


def _write_item_sets(parts: Split, users: tuple[int, int], writers: BucketWriters) -> None:
    first, stop = users
    for name in _PARTS:
        part = getattr(parts, name)
        user, item = part.user.to_numpy(), part.item.to_numpy()
        order = np.lexsort((item, user))
        writers.item_sets[name].append(item[order])
        counts = writers.user_counts.setdefault(name, np.zeros(writers.num_users, np.int32))
        counts[first:stop] = np.bincount(user - first, minlength=stop - first)
    train_items = parts.train.item.to_numpy()
    if writers.item_counts is None:
        writers.item_counts = np.zeros(writers.num_items, np.int64)
    writers.item_counts += np.bincount(train_items, minlength=writers.num_items)


def _write_rows(
    parts: Split,
    users: tuple[int, int],
    writers: BucketWriters,
    rng: np.random.Generator,
    bucket: int,
) -> None:
    length, pad = writers.history_length, writers.num_items
    histories: dict[str, np.ndarray | None] = dict.fromkeys(_PARTS)
    if length:
        sources = {"train": ("train",), "val": ("train",), "test": ("train", "val")}
        for name, source in sources.items():
            part = getattr(parts, name)
            rows = (part.user.to_numpy(), part.order.to_numpy())
            lookup = HistoryLookup.build(_source(parts, source), rows, length, pad)
            histories[name] = _gather(lookup, len(part))
        everyone = np.arange(*users)
        for stage, source in _LATEST_FROM.items():
            latest = HistoryLookup.latest(_source(parts, source), everyone, length, pad)
            writers.histories[stage].append(_gather(latest, len(everyone)))
    for name in ("val", "test"):
        part = getattr(parts, name)
        table = row_table(part.user.to_numpy(), part.item.to_numpy(), histories[name], length)
        write_piece(writers.folder / "held_out" / name, bucket, table)
    train = parts.train
    table = row_table(train.user.to_numpy(), train.item.to_numpy(), histories["train"], length)
    # Each row goes to a random partition; prepare_shards shuffles each partition in memory.
    target = rng.integers(writers.num_partitions, size=len(train))
    for index in range(writers.num_partitions):
        chosen = np.flatnonzero(target == index)
        if chosen.size:
            write_piece(writers.partitions / f"{index:05d}", bucket, table.take(chosen))
