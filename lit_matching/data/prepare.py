"""``prepare_shards``: an interaction log larger than memory, turned into training shards.

The streaming path of :class:`~lit_matching.data.datamodule.MatchingDataModule`. Four passes,
each in memory bounded by a chunk or a bucket, not by the log:

1. **vocabularies**: the log is scanned in chunks (:class:`~lit_matching.data.log_scan.LogScan`)
   for its distinct user and item ids (kept ratings only), sorted as the in-memory path sorts
   them;
2. **buckets**: each chunk's ids are mapped to indices and its rows appended to the bucket of
   their user (contiguous ranges of user indices, about ``rows_per_bucket`` rows each);
3. **split**: each bucket is cleaned, split and turned into rows with their histories and
   into each user's item sets (:mod:`lit_matching.data.prepare_buckets`); training rows go
   to random partitions;
4. **shuffle**: each partition is shuffled in memory and written as Parquet row groups of
   exactly ``row_group_size`` rows (the last one may be shorter): the unit
   :class:`~lit_matching.data.shards.ShardBatches` deals to ranks and shuffles.

The folder holds ``lit_matching_prepared.json`` (what was done, counts, the row groups), the
vocabularies (``users.parquet``, ``items.parquet``), ``item_counts.npy``, each part's item sets
(``train.items.npy`` / ``train.indptr.npy``, ...: see
:class:`~lit_matching.data.stored_sets.StoredItemSets`), with ``history_length > 0`` each
user's latest history per stage (``history_val.npy``, ``history_test.npy``,
``history_serve.npy``), the held-out rows (``val.parquet``, ``test.parquet``) and the
training rows (``train/part-*.parquet``). k-core filtering needs repeated passes over the
whole log and is not offered here: filter before, or use the in-memory path.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pytorch_lightning.utilities import rank_zero_info

from lit_matching.data.log_scan import LogScan
from lit_matching.data.prepare_buckets import (
    BucketWriters,
    join_pieces,
    process_bucket,
    read_pieces,
    row_table,
    write_piece,
)
from lit_matching.data.splits import SPLITS
from lit_matching.data.stored_sets import NpyAppender
from lit_matching.utils.progress import progress_enabled, progress_steps

__all__ = ["PREPARED_FILE", "PrepareOptions", "is_prepared", "prepare_shards"]

#: The file that marks a prepared folder and describes it.
PREPARED_FILE = "lit_matching_prepared.json"
_FORMAT = {"name": "lit_matching prepared shards", "version": 1}
_STEPS = ["vocabularies", "buckets", "split", "shuffle"]


def is_prepared(path: Any) -> bool:
    """Whether ``path`` is a folder written by :func:`prepare_shards`."""
    return isinstance(path, (str, Path)) and (Path(path) / PREPARED_FILE).is_file()


@dataclass(frozen=True)
class PrepareOptions:
    """What :func:`prepare_shards` does; the names are the DataModule's arguments."""

    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = "auto"
    rating_col: str = "rating"
    min_rating: float | None = None
    duplicates: Literal["last", "first"] = "last"
    split: str = "leave_last_out"
    split_options: Mapping[str, Any] = field(default_factory=dict)
    history_length: int = 0
    row_group_size: int = 16384
    rows_per_bucket: int = 1_000_000
    chunk_rows: int = 1 << 20
    file_format: str = "auto"
    seed: int = 0

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {self.split!r}")
        if self.duplicates not in ("last", "first"):
            raise ValueError(f"duplicates must be 'last' or 'first', got {self.duplicates!r}")
        for name in ("row_group_size", "rows_per_bucket", "chunk_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.history_length < 0:
            raise ValueError(f"history_length must be >= 0, got {self.history_length}")


def prepare_shards(
    source: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> Path:
    """Prepare the log in ``source`` for streaming training into ``output_dir``.

    Args:
        source: A ``.csv``, ``.tsv`` or ``.parquet`` file, a folder of them, or a list.
        output_dir: The folder to write (written beside it, then renamed into place).
        overwrite: Replace an existing ``output_dir``.
        progress: A bar over the passes (``None``: when stderr is a terminal).
        **options: :class:`PrepareOptions` (``history_length``, ``split``, ``min_rating``,
            column names, ``row_group_size``, ``rows_per_bucket``, ``chunk_rows`` (rows read
            at a time), ``seed``, ...).

    Returns:
        ``output_dir``, which :class:`~lit_matching.data.datamodule.MatchingDataModule`
        takes as ``interactions``.

    Example:
        >>> import tempfile, pandas as pd
        >>> folder = Path(tempfile.mkdtemp())
        >>> pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": [5, 6, 7, 5, 7, 8],
        ...               "timestamp": range(6)}).to_parquet(folder / "log.parquet")
        >>> out = prepare_shards(folder / "log.parquet", folder / "prepared", progress=False)
        >>> meta = json.loads((out / PREPARED_FILE).read_text())
        >>> meta["num_users"], meta["num_items"], meta["rows"]
        (2, 4, {'train': 2, 'val': 2, 'test': 2})
    """
    settings = PrepareOptions(**options)
    settings.check()
    output = Path(output_dir)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists: give overwrite=True (--overwrite) to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        with progress_steps(_STEPS, "lit_matching prepare", progress_enabled(progress)) as step:
            meta = _prepare(source, work, settings, step)
        (work / PREPARED_FILE).write_text(json.dumps(meta, indent=1, default=str))
        if output.exists():
            shutil.rmtree(output)
        work.rename(output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output


def _scan(source: Any, settings: PrepareOptions) -> LogScan:
    rating_col = settings.rating_col if settings.min_rating is not None else None
    return LogScan.open(
        source,
        settings.user_col,
        settings.item_col,
        settings.time_col,
        rating_col,
        settings.file_format,
        chunk_rows=settings.chunk_rows,
    )


def _prepare(source: Any, work: Path, settings: PrepareOptions, step: Any) -> dict[str, Any]:
    scan = _scan(source, settings)
    step("vocabularies")
    users, items, rows = _vocabularies(scan, settings.min_rating)
    pd.DataFrame({"id": users}).to_parquet(work / "users.parquet")
    pd.DataFrame({"id": items}).to_parquet(work / "items.parquet")
    step("buckets")
    num_users, num_items = len(users), len(items)
    buckets = max(1, -(-rows // settings.rows_per_bucket))
    bounds = np.linspace(0, num_users, buckets + 1).round().astype(np.int64)
    _partition(scan, settings.min_rating, users, items, bounds, work / "buckets")
    del users, items  # and their hash tables: ids are indices from here on
    step("split")
    writers = _writers(work, num_users, num_items, settings.history_length, buckets)
    try:
        _split_buckets(work / "buckets", bounds, writers, settings)
    finally:
        writers.close()
    shutil.rmtree(work / "buckets")
    for name in ("val", "test"):
        join_pieces(work / "held_out" / name, work / f"{name}.parquet", writers.schema)
    shutil.rmtree(work / "held_out", ignore_errors=True)
    for name, per_user in writers.user_counts.items():
        np.save(
            work / f"{name}.indptr.npy", np.concatenate([[0], np.cumsum(per_user, dtype=np.int64)])
        )
    assert writers.item_counts is not None
    np.save(work / "item_counts.npy", writers.item_counts)
    step("shuffle")
    files = _shuffle(work, writers, settings)
    counts = {name: int(c.sum()) for name, c in writers.user_counts.items()}
    rank_zero_info(
        f"lit_matching prepare: {num_users} users, {num_items} items; {counts['train']} "
        f"train / {counts['val']} val / {counts['test']} test interactions "
        f"({settings.split} split); {writers.dropped_duplicates} repeated (user, item) "
        f"interactions dropped; {len(files)} training files"
    )
    options = asdict(settings) | {"time_col": scan.time_col}
    return {
        "format": _FORMAT,
        "num_users": num_users,
        "num_items": num_items,
        "rows": counts,
        "history_length": settings.history_length,
        "train_files": files,
        "options": options,
    }


def _kept(chunk: Any, min_rating: float | None) -> np.ndarray | slice:
    if min_rating is None:
        return slice(None)
    return np.asarray(chunk.ratings >= min_rating)


def _vocabularies(scan: LogScan, min_rating: float | None) -> tuple[pd.Index, pd.Index, int]:
    """The sorted distinct user and item ids of kept rows, and the number of kept rows."""
    found: dict[str, list[np.ndarray]] = {"users": [], "items": []}
    rows = 0
    for chunk in scan.chunks():
        kept = _kept(chunk, min_rating)
        rows += len(chunk.users[kept])
        for name in found:
            found[name].append(pd.unique(getattr(chunk, name)[kept]))
            if len(found[name]) > 4:  # merge often: memory of about the distinct ids only
                found[name] = [pd.unique(np.concatenate(found[name]))]
    if rows == 0:
        raise ValueError("the interaction log has no rows (after min_rating)")
    user_ids, item_ids = (
        pd.Index(pd.unique(np.concatenate(found[name]))).sort_values() for name in found
    )
    return user_ids, item_ids, rows


def _partition(
    scan: LogScan,
    min_rating: float | None,
    users: pd.Index,
    items: pd.Index,
    bounds: np.ndarray,
    folder: Path,
) -> None:
    """Write each chunk's kept rows, ids mapped, as one piece per bucket (rows in log order).

    One file per piece, closed at once: an open Parquet writer per bucket would hold a few MB
    each, memory that grows with the number of buckets, so with the log.
    """
    for number, chunk in enumerate(scan.chunks()):
        kept = _kept(chunk, min_rating)
        rows = np.arange(chunk.offset, chunk.offset + len(chunk))[kept]
        user = users.get_indexer(pd.Index(chunk.users[kept]))
        time = rows if chunk.times is None else chunk.times[kept]
        table = pa.table(
            {
                "user": user.astype(np.int32),
                "item": items.get_indexer(pd.Index(chunk.items[kept])).astype(np.int32),
                "time": time,
                "row": rows,
            }
        )
        bucket = np.searchsorted(bounds, user, side="right") - 1
        for index in np.unique(bucket):
            write_piece(
                folder / f"{index:05d}", number, table.take(np.flatnonzero(bucket == index))
            )


def _writers(
    work: Path, num_users: int, num_items: int, history_length: int, partitions: int
) -> BucketWriters:
    schema = row_table(
        np.zeros(0), np.zeros(0), np.zeros((0, history_length)), history_length
    ).schema
    shape = (history_length,)
    return BucketWriters(
        folder=work,
        num_users=num_users,
        num_items=num_items,
        history_length=history_length,
        partitions=work / "partitions",
        num_partitions=partitions,
        schema=schema,
        item_sets={
            name: NpyAppender(work / f"{name}.items.npy", np.int32)
            for name in ("train", "val", "test")
        },
        histories={
            stage: NpyAppender(work / f"history_{stage}.npy", np.int32, shape)
            for stage in ("val", "test", "serve")
        }
        if history_length
        else {},
    )


def _split_buckets(
    folder: Path, bounds: np.ndarray, writers: BucketWriters, settings: PrepareOptions
) -> None:
    offset = 0
    rng = np.random.default_rng([settings.seed, 1])
    for index in range(len(bounds) - 1):
        pieces = read_pieces(folder / f"{index:05d}")
        if pieces is None:
            frame = pd.DataFrame({"user": [], "item": [], "time": [], "row": []}, dtype=np.int64)
        else:
            frame = pieces.to_pandas()
        shutil.rmtree(folder / f"{index:05d}", ignore_errors=True)
        offset += process_bucket(
            frame,
            (int(bounds[index]), int(bounds[index + 1])),
            writers,
            split=settings.split,
            split_options=settings.split_options,
            duplicates=settings.duplicates,
            order_offset=offset,
            bucket=index,
            rng=rng,
        )


def _shuffle(work: Path, writers: BucketWriters, settings: PrepareOptions) -> list[dict[str, Any]]:
    """Each partition shuffled, written as row groups of exactly ``row_group_size`` rows.

    A partition's rows beyond its last whole row group carry over into the next one; what
    is left at the end is the one shorter row group, in a file of its own.
    """
    size = settings.row_group_size
    (work / "train").mkdir()
    files: list[dict[str, Any]] = []
    carry = None
    for index in range(writers.num_partitions):
        table = read_pieces(work / "partitions" / f"{index:05d}")
        if table is None:
            continue
        order = np.random.default_rng([settings.seed, 2, index]).permutation(len(table))
        table = table.take(order)
        if carry is not None:
            table = pa.concat_tables([carry, table])
        whole = len(table) - len(table) % size
        carry = table.slice(whole)
        if whole:
            _write_train_file(work, files, table.slice(0, whole), size)
    if carry is not None and len(carry):
        _write_train_file(work, files, carry, size)
    shutil.rmtree(work / "partitions", ignore_errors=True)
    return files


def _write_train_file(work: Path, files: list[dict[str, Any]], table: pa.Table, size: int) -> None:
    """Write the next training file and list it with its row groups' sizes."""
    name = f"train/part-{len(files):05d}.parquet"
    pq.write_table(table, work / name, row_group_size=size)
    metadata = pq.ParquetFile(work / name).metadata
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    files.append({"file": name, "row_groups": groups})
