"""Top-K recommendations for many users at once, written to a Parquet file chunk by chunk.

:func:`recommend_to_parquet` writes what :meth:`Retriever.recommend
<lit_matching.serving.retriever.Retriever.recommend>` would return for every user (or for the
given raw user ids): the columns ``user_id``, ``rank``, ``item_id`` and ``score``, with the
same dtypes and in the same order. Users are searched ``chunk_size`` at a time and each chunk
is written as soon as it is found (one Parquet row group), so memory does not grow with the
number of users. The file appears under its name only when complete (written to a temporary
file in the same directory, then renamed): a crash leaves no half file behind.

:func:`read_user_file` reads a file of raw user ids, one per line, and :func:`check_users`
names the unknown ones with their line numbers.

Only numpy, pandas, pyarrow, tqdm and FAISS (through the search) are used here: no torch.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from lit_matching.retrieval.search import search_top_k
from lit_matching.retrieval.validation import check_k
from lit_matching.serving.raw_ids import as_list, positions, result_frame

if TYPE_CHECKING:
    from lit_matching.serving.retriever import Retriever

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "BatchResult",
    "check_users",
    "read_user_file",
    "recommend_to_parquet",
]

#: Users searched and written together by default (a chunk of 16,384 users with ``k = 20``
#: holds about 330k result rows, some 10 MB).
DEFAULT_CHUNK_SIZE = 16_384

#: Query vectors per FAISS call inside a chunk. A chunk's users are searched in order of
#: their number of seen items (see :func:`search_top_k`), so only the heaviest users' batch
#: pays for a wide search; FAISS computes the scores of large batches with BLAS (measured at
#: d = 64: 2,048 queries are 4x faster per query than 1,024), hence not smaller.
SEARCH_BATCH = 2048

#: The columns of :meth:`Retriever.recommend`.
COLUMNS = ("user_id", "rank", "item_id", "score")

#: ``progress(n)``: ``n`` more users are done.
Progress = Callable[[int], None]


class BatchResult(NamedTuple):
    """What :func:`recommend_to_parquet` wrote."""

    path: Path
    users: int
    rows: int


def read_user_file(path: str | os.PathLike[str]) -> tuple[list[str], list[int]]:
    r"""Raw user ids of a text file, one per line, as strings, and their (1-based) line numbers.

    Surrounding whitespace is stripped and blank lines are skipped.

    Raises:
        FileNotFoundError: Naming the file.
        ValueError: The file is not UTF-8 text (naming it).

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as file:
        ...     _ = file.write("u1\n\n u7 \n")
        >>> read_user_file(file.name)
        (['u1', 'u7'], [1, 3])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such user id file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err})") from None
    ids, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            ids.append(line.strip())
            lines.append(number)
    return ids, lines


def check_users(
    retriever: Retriever,
    users: Sequence[Any],
    lines: Sequence[int] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> None:
    """Raise a ``KeyError`` naming the ids of ``users`` that ``retriever`` does not know.

    Args:
        retriever: The retriever.
        users: Raw user ids.
        lines: Where each id came from (line numbers), named next to the unknown ids.
        source: The file they came from, named in the message.

    Example:
        >>> from lit_matching.serving.retriever import Retriever
        >>> vectors = np.eye(2, dtype=np.float32)
        >>> retriever = Retriever(vectors, vectors, ["ann", "bob"], [1, 2], "dot")
        >>> check_users(retriever, ["ann", "eve", "bob", "joe"], [1, 2, 4, 5], "users.txt")
        Traceback (most recent call last):
        ...
        KeyError: "unknown user id(s) in users.txt: 'eve' (line 2), 'joe' (line 5)"
    """
    users = list(users)
    if lines is not None and len(lines) != len(users):
        raise ValueError(f"{len(lines)} line numbers for {len(users)} user ids")
    found = pd.Index(retriever.user_ids).get_indexer(pd.Index(users, dtype=object))
    unknown = np.flatnonzero(found < 0)
    if not len(unknown):
        return
    shown = ", ".join(
        repr(users[i]) + (f" (line {lines[i]})" if lines is not None else "") for i in unknown[:10]
    )
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    where = f" in {source}" if source is not None else ""
    raise KeyError(f"unknown user id(s){where}: {shown}{more}")


def recommend_to_parquet(
    retriever: Retriever,
    output: str | os.PathLike[str],
    users: Any = None,
    k: int | None = None,
    exclude_seen: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool | Progress | None = None,
) -> BatchResult:
    """Write the top ``k`` items of every user (or of ``users``) to the Parquet file ``output``.

    The file holds the rows of ``retriever.recommend(users, k, exclude_seen)`` (same columns,
    dtypes and order), found and written ``chunk_size`` users at a time, multi-interest users
    included. It is written beside ``output`` under a temporary name and renamed to ``output``
    (replacing it) when complete; on an error it is removed.

    Args:
        retriever: The retriever to serve from.
        output: Path of the Parquet file (its directory must exist).
        users: Raw user ids (a list-like, or one id); ``None``: every user, in index order.
        k: Items per user (default: the retriever's ``default_k``).
        exclude_seen: Never return an item the user has already seen.
        chunk_size: Users searched and written at once (memory grows with it, not with users).
        progress: A tqdm bar of users on stderr: ``True`` shows it, ``False`` does not,
            ``None`` shows it when stderr is a terminal; or a callback ``progress(n)``, called
            with each chunk's number of users once it is written.

    Returns:
        The path written, the number of users and the number of rows.

    Raises:
        KeyError: Naming the unknown user ids (before anything is written).
        FileNotFoundError: The directory of ``output`` does not exist.

    Example:
        >>> import tempfile
        >>> from lit_matching.serving.retriever import Retriever
        >>> vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)
        >>> retriever = Retriever(vectors[:2], vectors, ["ann", "bob"], [10, 20, 30], "dot")
        >>> path = f"{tempfile.mkdtemp()}/recs.parquet"
        >>> recommend_to_parquet(retriever, path, k=2, chunk_size=1)[1:]  # users, rows
        (2, 4)
        >>> pd.read_parquet(path)[["user_id", "item_id"]].values.tolist()
        [['ann', 10], ['ann', 30], ['bob', 20], ['bob', 30]]
    """
    k = min(check_k(retriever.default_k if k is None else k), retriever.num_items)
    chunk_size = check_k(chunk_size, "chunk_size")
    vocabs = pd.Index(retriever.user_ids), pd.Index(retriever.item_ids)
    rows = (
        np.arange(len(vocabs[0])) if users is None else positions(vocabs[0], as_list(users), "user")
    )
    output, schema, written = Path(output), _schema(*vocabs), 0
    frames = _result_frames(retriever, vocabs, rows, k, exclude_seen, chunk_size)
    with _bar(progress, len(rows)) as advance, _atomic(output) as scratch:
        with pq.ParquetWriter(scratch, schema) as writer:
            for users_done, frame in frames:
                writer.write_table(pa.Table.from_pandas(frame, schema, preserve_index=False))
                written += len(frame)
                advance(users_done)
    return BatchResult(output, len(rows), written)


def _result_frames(
    retriever: Retriever,
    vocabs: tuple[pd.Index, pd.Index],
    rows: np.ndarray,
    k: int,
    exclude_seen: bool,
    chunk_size: int,
) -> Iterator[tuple[int, pd.DataFrame]]:
    """``(users, frame)`` of each chunk of ``rows`` (user positions): what ``recommend`` gives."""
    seen = retriever.seen if exclude_seen else None
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start : start + chunk_size]
        exclude = seen.select(chunk) if seen is not None else None
        queries = retriever.user_embeddings[chunk]
        items, scores = search_top_k(retriever.index, queries, k, exclude, SEARCH_BATCH)
        yield len(chunk), result_frame(*vocabs, chunk, items, scores, COLUMNS)


def _schema(user_vocab: pd.Index, item_vocab: pd.Index) -> pa.Schema:
    """The Arrow schema of the result frames, from a one-row frame (the types of the raw ids)."""
    one = min(len(user_vocab), 1)  # no users: no row to take the user id type from
    items = np.zeros((one, 1), dtype=np.int64)
    probe = result_frame(
        user_vocab, item_vocab, items[:, 0], items, np.zeros((one, 1), np.float32), COLUMNS
    )
    return pa.Schema.from_pandas(probe, preserve_index=False)


@contextmanager
def _atomic(output: Path) -> Iterator[Path]:
    """A temporary path beside ``output``, renamed to it if the block succeeds, else removed."""
    if not output.parent.is_dir():
        raise FileNotFoundError(f"{output}: the directory {output.parent} does not exist")
    # Not mkstemp: its file is private (0600); this one gets the umask's permissions.
    scratch = output.with_name(f".{output.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield scratch
        os.replace(scratch, output)
    finally:
        scratch.unlink(missing_ok=True)


@contextmanager
def _bar(progress: bool | Progress | None, total: int) -> Iterator[Progress]:
    """``progress`` as a callback: the given one, a tqdm bar on stderr, or one doing nothing."""
    if callable(progress):
        yield progress
        return
    isatty = getattr(sys.stderr, "isatty", None)
    if not (progress or (progress is None and isatty is not None and isatty())):
        yield lambda n: None
        return
    with tqdm(
        total=total, desc="recommending", unit="user", leave=False, dynamic_ncols=True
    ) as bar:
        yield bar.update
