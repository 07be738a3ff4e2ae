"""Reading an interaction log chunk by chunk (CSV, TSV or Parquet files) through ``pyarrow``.

What :func:`~lit_matching.data.prepare.prepare_shards` reads: never the whole log at once.
Each chunk is checked as it comes (missing ids or times, id types), naming the column, the row
(counted from 0 over the whole log) and the value.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

__all__ = ["LogChunk", "LogScan"]

_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}


@dataclass(frozen=True)
class LogChunk:
    """Rows ``offset .. offset + len`` of the log: ids, times (or ``None``) and ratings."""

    offset: int
    users: np.ndarray
    items: np.ndarray
    times: np.ndarray | None
    ratings: np.ndarray | None

    def __len__(self) -> int:
        return len(self.users)


def _format_of(paths: Sequence[Path], file_format: str) -> str:
    if file_format != "auto":
        return file_format
    kinds = {_FORMATS.get(path.suffix.lower()) for path in paths}
    if len(kinds) != 1 or None in kinds:
        names = ", ".join(sorted({path.suffix or path.name for path in paths}))
        raise ValueError(
            f"prepare reads .csv, .tsv or .parquet files of one kind, got {names}; "
            "give file_format ('csv', 'tsv' or 'parquet') for other names"
        )
    kind = kinds.pop()
    assert kind is not None
    return kind


def _files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    paths: list[Path] = []
    for item in map(Path, sources):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in _FORMATS)
            if not found:
                raise FileNotFoundError(f"{item}: no .csv, .tsv or .parquet file in this folder")
            paths += found
        elif item.exists():
            paths.append(item)
        else:
            raise FileNotFoundError(f"interaction log {str(item)!r} does not exist")
    return paths


def _batches(path: Path, kind: str, columns: list[str], rows: int) -> Iterator[pa.RecordBatch]:
    """``path``'s rows in order, at most about ``rows`` at a time, read one batch at a time.

    Parquet goes through ``ParquetFile.iter_batches`` without threads or pre-buffering, CSV
    through the streaming CSV reader: both hold one batch, where ``pyarrow.dataset``'s threaded
    scan reads ahead of a slow consumer and can queue much of a large file in memory.
    """
    if kind == "parquet":
        reader = pq.ParquetFile(path, pre_buffer=False)
        yield from reader.iter_batches(batch_size=rows, columns=columns, use_threads=False)
        return
    csv = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=max(rows, 1) * 32, use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter="\t" if kind == "tsv" else ","),
        convert_options=pacsv.ConvertOptions(include_columns=columns),
    )
    yield from csv


def _column_names(path: Path, kind: str) -> list[str]:
    if kind == "parquet":
        return list(pq.ParquetFile(path).schema_arrow.names)
    delimiter = "\t" if kind == "tsv" else ","
    with pacsv.open_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter)) as reader:
        return list(reader.schema.names)


@dataclass(frozen=True)
class LogScan:
    """The columns of an interaction log to scan, checked against each file's columns.

    Example:
        >>> import tempfile, pandas as pd
        >>> path = Path(tempfile.mkdtemp()) / "log.parquet"
        >>> pd.DataFrame({"user_id": [1, 2, 1], "item_id": ["a", "b", "c"]}).to_parquet(path)
        >>> scan = LogScan.open(path, "user_id", "item_id", None, None, chunk_rows=2)
        >>> [(chunk.offset, chunk.items.tolist()) for chunk in scan.chunks()]
        [(0, ['a', 'b']), (2, ['c'])]
    """

    paths: tuple[Path, ...]
    kind: str
    user_col: str
    item_col: str
    time_col: str | None
    rating_col: str | None
    chunk_rows: int = 1 << 20

    @classmethod
    def open(
        cls,
        source: str | Path | Sequence[str | Path],
        user_col: str,
        item_col: str,
        time_col: str | None,
        rating_col: str | None,
        file_format: str = "auto",
        chunk_rows: int = 1 << 20,
    ) -> LogScan:
        """The log in ``source`` (a file, a folder of files or a list of files).

        ``time_col="auto"`` is ``"timestamp"`` when the first file has that column, else
        ``None`` (row order).

        Raises:
            ValueError: naming a file without a needed column, and the columns it has.
        """
        paths = _files(source)
        kind = _format_of(paths, file_format)
        if time_col == "auto":  # "timestamp" where the log has it, else row order
            time_col = "timestamp" if "timestamp" in _column_names(paths[0], kind) else None
        for path in paths:
            names = _column_names(path, kind)
            roles = (("user", user_col), ("item", item_col), ("time", time_col))
            for role, column in (*roles, ("rating (min_rating)", rating_col)):
                if column is not None and column not in names:
                    raise ValueError(f"{path.name}: no {role} column {column!r}; it has {names}")
        return cls(tuple(paths), kind, user_col, item_col, time_col, rating_col, chunk_rows)

    @property
    def columns(self) -> list[str]:
        """The columns read, in the order user, item, time, rating."""
        named = (self.user_col, self.item_col, self.time_col, self.rating_col)
        return [column for column in named if column is not None]

    def chunks(self) -> Iterator[LogChunk]:
        """The log's rows in file order, about ``chunk_rows`` at a time, each checked.

        Raises:
            ValueError: naming the file, column, row and value of a bad id or time, or ids of
                one column that are numbers in one file and strings in another.
        """
        offset = 0
        kinds: dict[str, str] = {}
        for path in self.paths:
            try:
                for batch in _batches(path, self.kind, self.columns, self.chunk_rows):
                    if batch.num_rows == 0:
                        continue
                    chunk = self._chunk(batch, offset)
                    for name, values in (
                        (self.user_col, chunk.users),
                        (self.item_col, chunk.items),
                    ):
                        kind = "strings" if values.dtype == object else "numbers"
                        if kinds.setdefault(name, kind) != kind:
                            raise ValueError(
                                f"column {name!r} holds {kind} here but {kinds[name]} in "
                                "earlier rows: ids must be all strings or all numbers"
                            )
                    yield chunk
                    offset += batch.num_rows
            except (ValueError, pa.ArrowInvalid) as error:
                raise ValueError(f"{path}: {error}") from None

    def _chunk(self, batch: pa.RecordBatch, offset: int) -> LogChunk:
        return LogChunk(
            offset=offset,
            users=self._ids(batch, self.user_col, offset),
            items=self._ids(batch, self.item_col, offset),
            times=None if self.time_col is None else self._times(batch, offset),
            ratings=None
            if self.rating_col is None
            else batch.column(self.rating_col).to_numpy(zero_copy_only=False),
        )

    def _first_null(self, column: pa.Array, name: str, offset: int, what: str) -> None:
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"column {name!r} has a missing {what} at row {offset + row}")

    def _ids(self, batch: pa.RecordBatch, name: str, offset: int) -> np.ndarray:
        column = batch.column(name)
        self._first_null(column, name, offset, "id")
        kind = column.type
        if pa.types.is_dictionary(kind):
            column, kind = column.cast(kind.value_type), kind.value_type
        if pa.types.is_floating(kind):
            bad = np.flatnonzero(~np.isfinite(column.to_numpy(zero_copy_only=False)))
            if bad.size:
                value = column[int(bad[0])].as_py()
                raise ValueError(
                    f"column {name!r} holds id {value!r} at row {offset + int(bad[0])}: ids "
                    "must be strings or finite numbers"
                )
        elif not (pa.types.is_integer(kind) or pa.types.is_string(kind)):
            if not pa.types.is_large_string(kind):
                raise ValueError(
                    f"column {name!r} holds ids of type {kind} (first at row {offset}): ids "
                    "must be strings or finite numbers"
                )
        return column.to_numpy(zero_copy_only=False)

    def _times(self, batch: pa.RecordBatch, offset: int) -> np.ndarray:
        assert self.time_col is not None
        column = batch.column(self.time_col)
        self._first_null(column, self.time_col, offset, "time")
        kind = column.type
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            column = pc.cast(column, pa.timestamp("ns")) if pa.types.is_date(kind) else column
        elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise ValueError(
                f"column {self.time_col!r} holds times of type {kind}: numbers, dates or "
                "timestamps are needed"
            )
        values = column.to_numpy(zero_copy_only=False)
        if values.dtype.kind == "f" and np.isnan(values).any():
            row = int(np.flatnonzero(np.isnan(values))[0])
            raise ValueError(f"column {self.time_col!r} has a missing time at row {offset + row}")
        return values
