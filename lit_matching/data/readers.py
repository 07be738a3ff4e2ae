r"""Reading interaction files in the formats recommender benchmarks ship in, and split folders.

Every reader returns a :class:`pandas.DataFrame` with the canonical columns ``user_id`` and
``item_id`` and, when the source has them, ``rating`` and ``timestamp``. Ids are kept as read:
integers for numeric formats, strings for RecBole ``token`` fields. Errors name the file and,
where there is one, the line and the offending value.

Formats (``format=`` of :func:`read_interactions`):

* ``"csv"``, ``"tsv"``, ``"parquet"``: tables with a header (``*_col`` arguments rename);
* ``"movielens-dat"``: ``user::item::rating::timestamp`` lines (MovieLens 1M / 10M);
* ``"movielens-udata"``: tab-separated ``user item rating timestamp`` lines (``u.data``);
* ``"recbole"``: RecBole atomic files (``*.inter``) with a typed ``name:type`` header;
* ``"user-lines"``: ``user item item ...`` lines (LightGCN / BARS splits);
* ``"triples"``: ``user item value`` lines (value kept as ``rating`` unless it is always 1).

This module reads the tables and dispatches the other formats to
:mod:`lit_matching.data.text_formats` (re-exporting its
:func:`~lit_matching.data.text_formats.read_recbole` and
:func:`~lit_matching.data.text_formats.read_user_lines`); :func:`read_split_files` reads a
folder of pre-split parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lit_matching.data.files import base_name, existing_file, not_utf8, read_bytes
from lit_matching.data.text_formats import TEXT_READERS, read_recbole, read_user_lines, sniff_txt

__all__ = [
    "FORMATS",
    "detect_format",
    "read_interactions",
    "read_recbole",
    "read_split_files",
    "read_user_lines",
    "split_file_paths",
    "table_line",
]

#: Values of ``format`` accepted by :func:`read_interactions`.
FORMATS = (
    "auto",
    "csv",
    "tsv",
    "parquet",
    "movielens-dat",
    "movielens-udata",
    "recbole",
    "user-lines",
    "triples",
)
_TABULAR = ("csv", "tsv", "parquet")


def _read_tabular(
    path: Path, format: str, sep: str | None, renames: dict[str, str | None]
) -> pd.DataFrame:
    if format == "parquet":
        frame = pd.read_parquet(path)
    else:
        sep = sep or ("\t" if format == "tsv" else ",")
        try:
            frame = pd.read_csv(path, sep=sep)
        except pd.errors.EmptyDataError:
            raise ValueError(
                f"{path} line 1: the file is empty (no header line naming the columns)"
            ) from None
        except UnicodeDecodeError:
            raise not_utf8(str(path), read_bytes(path), sep) from None
        except pd.errors.ParserError as err:
            raise ValueError(f"{path}: {err}") from None
    mapping = {src: dst for dst, src in renames.items() if src is not None and src != dst}
    for src, dst in mapping.items():
        if src not in frame.columns:
            raise ValueError(
                f"{path}: no column {src!r} to use as {dst!r}; columns are {list(frame.columns)}"
            )
        if dst in frame.columns and dst not in mapping:
            raise ValueError(f"{path}: renaming {src!r} to {dst!r} would duplicate a column")
    # Other columns come back as they are: a table may keep its own names (e.g. ``userId``),
    # which the caller then names, as MatchingDataModule(user_col="userId") does.
    return frame.rename(columns=mapping)


def detect_format(path: str | Path) -> str:
    r"""The format :func:`read_interactions` infers for ``path`` with ``format="auto"``.

    By name: ``.parquet``, ``.tsv``, ``.csv`` (also ``.csv.gz``), ``u.data``
    (movielens-udata), ``*.dat`` (movielens-dat), ``*.inter`` (recbole). A ``.txt`` file is
    sniffed: if each of its first 100 non-blank lines has 3 tokens, the third a number, it is
    ``"triples"``, otherwise ``"user-lines"`` (so user lines that all hold exactly two items
    need an explicit ``format="user-lines"``).

    Args:
        path: An existing interaction file.

    Returns:
        One of :data:`FORMATS` other than ``"auto"``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the name matches no format.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "train.txt")
        >>> with open(path, "w") as f:
        ...     _ = f.write("0 7 1\n0 9 1\n")
        >>> detect_format(path)
        'triples'
    """
    path = existing_file(path)
    name = base_name(path)
    by_suffix = {".parquet": "parquet", ".tsv": "tsv", ".csv": "csv", ".inter": "recbole"}
    for suffix, format in by_suffix.items():
        if name.endswith(suffix):
            return format
    if name == "u.data":
        return "movielens-udata"
    if name.endswith(".dat"):
        return "movielens-dat"
    if name.endswith(".txt"):
        return sniff_txt(path)
    raise ValueError(
        f"cannot infer the format of {str(path)!r} from its name; pass format= one of "
        f"{list(FORMATS[1:])} (auto knows .csv, .tsv, .parquet, .dat, u.data, .inter, .txt)"
    )


def read_interactions(
    path: str | Path,
    format: str = "auto",
    sep: str | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    time_col: str | None = None,
) -> pd.DataFrame:
    r"""Read an interaction file into a frame with ``user_id``, ``item_id`` columns.

    ``rating`` and ``timestamp`` columns are present when the source has them. Tables
    (csv, tsv, parquet) keep their own column names except those renamed by ``*_col``.

    Args:
        path: The file.
        format: One of :data:`FORMATS`; ``"auto"`` infers it (see :func:`detect_format`).
        sep: Field separator of ``"csv"`` / ``"tsv"`` files (default ``","`` / tab).
        user_col: Source column renamed to ``user_id`` (csv, tsv, parquet only).
        item_col: Source column renamed to ``item_id`` (csv, tsv, parquet only).
        rating_col: Source column renamed to ``rating`` (csv, tsv, parquet only).
        time_col: Source column renamed to ``timestamp`` (csv, tsv, parquet only).

    Returns:
        The interactions, one row each, ids as read.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: For an unknown format, a name ``"auto"`` cannot place, options the
            format does not take, or malformed content (naming file, line and value).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "ratings.dat")
        >>> with open(path, "w") as f:
        ...     _ = f.write("1::1193::5::978300760\n1::661::3::978302109\n")
        >>> read_interactions(path).to_dict("list")  # doctest: +NORMALIZE_WHITESPACE
        {'user_id': [1, 1], 'item_id': [1193, 661], 'rating': [5, 3],
         'timestamp': [978300760, 978302109]}
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; supported formats are {list(FORMATS)}")
    path = existing_file(path)
    if format == "auto":
        format = detect_format(path)
    renames = {"user_id": user_col, "item_id": item_col, "rating": rating_col}
    renames["timestamp"] = time_col
    if format in _TABULAR:
        return _read_tabular(path, format, sep, renames)
    given = [arg for arg, value in (("sep", sep), *renames.items()) if value is not None]
    if given:
        raise ValueError(
            f"{path}: format {format!r} has fixed columns, so {given} cannot apply "
            f"(they are for {list(_TABULAR)})"
        )
    return TEXT_READERS[format](path)


def table_line(path: str | Path, row: int, sep: str = ",") -> int:
    r"""The 1-based line of data row ``row`` of a csv / tsv file with one header line.

    For error messages: it counts lines as pandas does, skipping blank ones (whitespace
    without a separator), but not line breaks inside quoted fields.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
        >>> with open(path, "w") as f:
        ...     _ = f.write("user_id,item_id\n1,2\n\n3,4\n")
        >>> table_line(path, 1)
        4
    """
    separator = sep.encode()
    seen = -1
    lines = read_bytes(Path(path)).split(b"\n")
    for number, line in enumerate(lines[1:], start=2):
        seen += bool(line.strip()) or separator in line
        if seen == row:
            return number
    return len(lines)


def split_file_paths(
    directory: str | Path,
    names: Sequence[str | Sequence[str] | None] = ("train.txt", "valid.txt", "test.txt"),
    format: str = "auto",
) -> tuple[str, dict[str, list[Path]]]:
    """The files of each part of a pre-split folder, and the format to read all of them in.

    Arguments and rules as in :func:`read_split_files`, which reads these files.

    Returns:
        ``(format, {"train": [...], "valid": [...], "test": [...]})``; ``format`` stays
        ``"auto"`` when the first train file is missing, and ``"valid"`` is absent when its
        (first) file is.
    """
    if len(names) != 3:
        raise ValueError(f"names must be (train, valid, test) file names, got {names!r}")
    directory = Path(directory)
    files = [[name] if isinstance(name, str) else name for name in names]
    for part, given in zip(("train", "valid", "test"), files, strict=True):
        if given is None and part != "valid":
            raise ValueError(f"the {part} file name cannot be None")
        if given is not None and (not given or not all(isinstance(n, str) for n in given)):
            raise ValueError(f"the {part} part needs file names, got {given!r}")
    first = directory / files[0][0]  # type: ignore[index]
    if format == "auto" and first.is_file():
        # One format for all parts, from the first train file (usually the largest): a short
        # test file whose lines hold two items each would otherwise sniff as triples.
        format = detect_format(first)
    paths: dict[str, list[Path]] = {}
    for part, given in zip(("train", "valid", "test"), files, strict=True):
        if given is None or (part == "valid" and not (directory / given[0]).is_file()):
            continue
        paths[part] = [directory / name for name in given]
    return format, paths


def read_split_files(
    directory: str | Path,
    names: Sequence[str | Sequence[str] | None] = ("train.txt", "valid.txt", "test.txt"),
    format: str = "auto",
) -> dict[str, pd.DataFrame]:
    r"""Read a pre-split benchmark: train, optional validation and test files of one folder.

    Args:
        directory: Folder holding the files.
        names: File names of the ``train``, ``valid`` and ``test`` parts, in that order; the
            validation file may be missing (or ``None``). A list of names makes one part of
            those files, in order: ``(["train.txt", "valid.txt"], None, "test.txt")`` trains
            on train + valid (the final fit of the LightGCN protocol).
        format: Format of all files, as in :func:`read_interactions`; ``"auto"``
            infers it from the (first) train file and reads every part so.

    Returns:
        ``{"train": ..., "valid": ..., "test": ...}``; ``"valid"`` is absent when its file is.
        For user-lines files ``position`` restarts at 0 in every file.

    Raises:
        FileNotFoundError: If the train or test file is missing (naming its path).
        ValueError: If ``names`` does not have three entries, or as :func:`read_interactions`.

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> for name, text in (("train.txt", "0 1 2 4\n"), ("test.txt", "0 3 5\n")):
        ...     with open(os.path.join(folder, name), "w") as f:
        ...         _ = f.write(text)
        >>> parts = read_split_files(folder)
        >>> sorted(parts), parts["test"].item_id.tolist()  # user-lines, like the train file
        (['test', 'train'], [3, 5])
        >>> read_split_files(folder, (["train.txt", "test.txt"], None, "test.txt"))[
        ...     "train"].item_id.tolist()
        [1, 2, 4, 3, 5]
    """
    format, paths = split_file_paths(directory, names, format)
    parts: dict[str, pd.DataFrame] = {}
    for part, files in paths.items():
        frames = [read_interactions(path, format=format) for path in files]
        parts[part] = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return parts
