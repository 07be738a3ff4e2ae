r"""Readers of interaction files in the formats recommender benchmarks ship in.

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
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pytorch_lightning.utilities import rank_zero_info

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
_OPENERS: dict[str, Callable[[Path], io.BufferedIOBase]] = {
    ".gz": lambda path: gzip.open(path, "rb"),
    ".bz2": lambda path: bz2.open(path, "rb"),
    ".xz": lambda path: lzma.open(path, "rb"),
}
_SNIFF_LINES = 100
_MAX_DIGITS = 18  # 10**18 still fits in int64
_POW10 = 10 ** np.arange(_MAX_DIGITS, dtype=np.int64)
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_RECBOLE_TYPES = ("token", "float", "token_seq", "float_seq")
_CANONICAL = ("user_id", "item_id", "rating", "timestamp")


# ---------------------------------------------------------------------------- file helpers
def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interaction file {str(path)!r} does not exist")
    return path


def _base_name(path: Path) -> str:
    """Lower-case file name without a ``.gz`` / ``.bz2`` / ``.xz`` suffix."""
    name = path.name.lower()
    for suffix in _OPENERS:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _open_binary(path: Path) -> io.BufferedIOBase:
    opener = _OPENERS.get(path.suffix.lower())
    return opener(path) if opener is not None else open(path, "rb")


def _read_bytes(path: Path) -> bytes:
    with _open_binary(path) as handle:
        return handle.read()


@dataclass(frozen=True)
class _Source:
    """File contents plus what is needed to turn a frame row back into a line number."""

    name: str
    data: bytes
    header_lines: int = 0
    whitespace_sep: bool = False

    def line_of(self, row: int) -> int:
        """1-based line of data row ``row`` (pandas skips blank lines; only for errors)."""
        seen = -1
        for number, line in enumerate(self.data.split(b"\n")[self.header_lines :]):
            blank = not line.strip() if self.whitespace_sep else not line.rstrip(b"\r")
            seen += not blank
            if seen == row:
                return number + 1 + self.header_lines
        return self.header_lines + 1

    def error(self, row: int, message: str) -> ValueError:
        return ValueError(f"{self.name} line {self.line_of(row)}: {message}")


def _not_utf8(name: str, data: bytes, sep: str | None) -> ValueError:
    """Name the line (and, with a one-character ``sep``, the column) of the first non-UTF-8 byte."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        where = f"{name} line {line}"
        start = data.rfind(b"\n", 0, err.start) + 1
        if sep is not None and len(sep) == 1 and line > 1:
            header = data.split(b"\n", 1)[0].decode(errors="replace").rstrip("\r").split(sep)
            field = data[start : err.start].count(sep.encode())
            if field < len(header):
                where += f", column {header[field]!r}"
        return ValueError(
            f"{where}: not UTF-8 text (byte 0x{data[err.start]:02x}, {err.reason}); "
            "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        )
    return ValueError(f"{name}: not UTF-8 text")


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({col: np.zeros(0, dtype=np.int64) for col in columns})


# ---------------------------------------------------------------------------- validation
def _check_column(frame: pd.DataFrame, col: str, kind: str, source: _Source) -> None:
    """Raise naming the line of the first missing or (for ``kind`` int/number) bad value."""
    values = frame[col]
    missing = values.isna().to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        raise source.error(row, f"missing {col} (line has too few fields)")
    if kind == "id":
        return
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy()
    if kind == "int" and not bad.any():
        bad = (numbers != np.floor(numbers)).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        expected = "an integer" if kind == "int" else "a number"
        raise source.error(row, f"{col} {values.iloc[row]!r} is not {expected}")


def _read_delimited(source: _Source, columns: Sequence[str], sep: str) -> pd.DataFrame:
    """Headerless delimited lines -> frame with exactly ``columns``."""
    try:
        frame = pd.read_csv(
            io.BytesIO(source.data),
            sep=sep,
            header=None,
            skiprows=source.header_lines,
            quoting=csv.QUOTE_NONE,
        )
    except pd.errors.EmptyDataError:
        return _empty(columns)
    except pd.errors.ParserError as err:
        raise ValueError(f"{source.name}: {err}") from None
    if frame.shape[1] != len(columns):
        raise source.error(
            0, f"expected {len(columns)} fields ({' '.join(columns)}), found {frame.shape[1]}"
        )
    frame.columns = pd.Index(columns)
    return frame


def _numeric_log(source: _Source, columns: Sequence[str], sep: str) -> pd.DataFrame:
    """Delimited ``user item rating timestamp`` lines with integer ids and times."""
    frame = _read_delimited(source, columns, sep)
    for col in columns:
        _check_column(frame, col, "number" if col == "rating" else "int", source)
        if col != "rating":
            frame[col] = frame[col].astype(np.int64)
    return frame


# ---------------------------------------------------------------------------- format readers
def _read_movielens_dat(path: Path) -> pd.DataFrame:
    data = _read_bytes(path)
    first = data.split(b"\n", 1)[0]
    if b"::" not in first:
        raise ValueError(
            f"{path} line 1: {first[:80].decode(errors='replace')!r} is not '::'-separated "
            "(movielens-dat); pass format='tsv' or 'csv' for a table with a header"
        )
    # pandas' C parser only takes one-character separators; "::" -> tab keeps it fast.
    source = _Source(str(path), data.replace(b"::", b"\t"))
    return _numeric_log(source, _CANONICAL, "\t")


def _read_movielens_udata(path: Path) -> pd.DataFrame:
    return _numeric_log(_Source(str(path), _read_bytes(path)), _CANONICAL, "\t")


def _read_triples(path: Path) -> pd.DataFrame:
    source = _Source(str(path), _read_bytes(path), whitespace_sep=True)
    frame = _read_delimited(source, ("user_id", "item_id", "value"), r"\s+")
    for col, kind in (("user_id", "id"), ("item_id", "id"), ("value", "number")):
        _check_column(frame, col, kind, source)
    value = pd.to_numeric(frame.pop("value"))
    if not (value == 1).all():
        frame["rating"] = value
    return frame


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
            raise _not_utf8(str(path), _read_bytes(path), sep) from None
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


def read_recbole(
    path: str | Path, required: Sequence[str] = ("user_id", "item_id")
) -> pd.DataFrame:
    r"""Read a RecBole atomic file (``*.inter``): tab-separated, header fields ``name:type``.

    The ``:type`` suffixes are stripped; ``token`` (and ``*_seq``) fields are read as strings,
    so raw ids stay exactly as written, and ``float`` fields as floats. RecBole's standard
    field names ``user_id``, ``item_id``, ``rating`` and ``timestamp`` are the canonical ones.

    Args:
        path: The atomic file (optionally ``.gz`` / ``.bz2`` / ``.xz`` compressed).
        required: Fields the header must have: both ids for an ``.inter`` file, the one id
            of a ``.user`` / ``.item`` side-feature file.

    Returns:
        One row per line, with the file's fields as columns.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the header lacks types or ``user_id`` / ``item_id``, or a ``float``
            field holds something else (naming the line and value).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "ml.inter")
        >>> with open(path, "w") as f:
        ...     _ = f.write("user_id:token\titem_id:token\trating:float\n007\t42\t4\n")
        >>> read_recbole(path).to_dict("list")
        {'user_id': ['007'], 'item_id': ['42'], 'rating': [4.0]}
    """
    path = _existing(path)
    data = _read_bytes(path)
    try:
        raw_fields = data.split(b"\n", 1)[0].decode().rstrip("\r").split("\t")
    except UnicodeDecodeError:
        raise _not_utf8(str(path), data, "\t") from None
    types: dict[str, str] = {}
    for raw in raw_fields:
        name, colon, kind = raw.rpartition(":")
        if not colon or kind not in _RECBOLE_TYPES:
            raise ValueError(
                f"{path} line 1: header field {raw!r} is not 'name:type' with type one of "
                f"{list(_RECBOLE_TYPES)}"
            )
        if name in types:
            raise ValueError(f"{path} line 1: field {name!r} appears twice")
        types[name] = kind
    source = _Source(str(path), data, header_lines=1)
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            sep="\t",
            header=0,
            quoting=csv.QUOTE_NONE,
            dtype={raw: str for raw in raw_fields if not raw.endswith(":float")},
            keep_default_na=False,  # a token such as "NA" is an id, not a missing value
            na_values=[""],
        )
    except UnicodeDecodeError:
        raise _not_utf8(str(path), data, "\t") from None
    frame.columns = pd.Index(list(types))
    missing = [col for col in required if col not in types]
    if missing:
        raise ValueError(f"{path}: RecBole header has no {missing}; its fields are {list(types)}")
    for name, kind in types.items():
        if kind == "float":
            _check_column(frame, name, "number", source)
            frame[name] = frame[name].astype(np.float64)
        elif name in ("user_id", "item_id"):
            _check_column(frame, name, "id", source)
    return frame


def _bad_token(data: bytes, starts: np.ndarray, ends: np.ndarray, token: int) -> str:
    return data[starts[token] : ends[token] + 1].decode(errors="replace")


def _parse_user_lines(data: bytes, name: str) -> pd.DataFrame:
    """Vectorised parse of ``user item item ...`` lines: bytes -> digit arrays -> int64."""
    buf = np.frombuffer(data, dtype=np.uint8)
    space = _WHITESPACE[buf]
    filled = ~space
    starts = np.flatnonzero(filled & np.concatenate(([True], space[:-1])))
    ends = np.flatnonzero(filled & np.concatenate((space[1:], [True])))
    if starts.size == 0:
        return _empty(("user_id", "item_id", "position"))
    line = np.searchsorted(np.flatnonzero(buf == 10), starts)  # 0-based line of each token
    lengths = ends - starts + 1

    # The first token holding a non-digit or too many digits to fit in int64, if any.
    bad_byte = filled & ((buf < 48) | (buf > 57))
    too_long = lengths > _MAX_DIGITS
    culprits = []
    if bad_byte.any():
        culprits.append(int(np.searchsorted(starts, np.argmax(bad_byte), side="right")) - 1)
    if too_long.any():
        culprits.append(int(np.argmax(too_long)))
    if culprits:
        token = min(culprits)
        raise ValueError(
            f"{name} line {line[token] + 1}: {_bad_token(data, starts, ends, token)!r} is not "
            f"a non-negative integer id (of at most {_MAX_DIGITS} digits)"
        )

    # Each digit times 10**(its distance to the token's last byte), summed per token.
    digits = (buf[filled] - 48).astype(np.int64)
    exponent = np.repeat(ends, lengths) - np.flatnonzero(filled)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    values = np.add.reduceat(digits * _POW10[exponent], offsets)

    first = np.flatnonzero(np.concatenate(([True], line[1:] != line[:-1])))
    sizes = np.diff(np.append(first, starts.size))
    _log_empty_users(name, values[first], line[first], sizes)
    group = np.repeat(np.arange(first.size), sizes)
    is_item = np.ones(starts.size, dtype=bool)
    is_item[first] = False
    return pd.DataFrame(
        {
            "user_id": values[first][group][is_item],
            "item_id": values[is_item],
            "position": (np.arange(starts.size) - first[group] - 1)[is_item],
        }
    )


def _log_empty_users(name: str, users: np.ndarray, lines: np.ndarray, sizes: np.ndarray) -> None:
    empty = np.flatnonzero(sizes == 1)
    if empty.size:
        rank_zero_info(
            f"lit_matching: {name}: {empty.size} user line(s) without items left out "
            f"(e.g. user {users[empty[0]]} on line {lines[empty[0]] + 1})"
        )


def read_user_lines(path: str | Path) -> pd.DataFrame:
    r"""Read per-user lines ``user item item ...`` (space-separated; LightGCN / BARS splits).

    Parsing is vectorised over the file's bytes (no Python object per item). Users whose line
    has no items are left out and their number logged. Blank lines and trailing spaces are
    ignored.

    Args:
        path: The text file (optionally ``.gz`` / ``.bz2`` / ``.xz`` compressed).

    Returns:
        Columns ``user_id``, ``item_id`` and ``position`` (int64), where ``position`` is the
        0-based place of the item within its line, usable as a time order.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If a token is not a non-negative integer, naming line and token.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "train.txt")
        >>> with open(path, "w") as f:
        ...     _ = f.write("0 5 3\n1 4\n")
        >>> read_user_lines(path).to_dict("list")
        {'user_id': [0, 0, 1], 'item_id': [5, 3, 4], 'position': [0, 1, 0]}
    """
    path = _existing(path)
    return _parse_user_lines(_read_bytes(path), str(path))


def _sniff_txt(path: Path) -> str:
    """``"triples"`` if the first lines are all ``a b <number>``, else ``"user-lines"``."""
    lines: list[bytes] = []
    with _open_binary(path) as handle:
        for raw in handle:
            if raw.strip():
                lines.append(raw)
            if len(lines) == _SNIFF_LINES:
                break
    if not lines:
        return "user-lines"
    for raw in lines:
        tokens = raw.split()
        if len(tokens) != 3:
            return "user-lines"
        try:
            float(tokens[2])
        except ValueError:
            return "user-lines"
    return "triples"


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
    path = _existing(path)
    name = _base_name(path)
    by_suffix = {".parquet": "parquet", ".tsv": "tsv", ".csv": "csv", ".inter": "recbole"}
    for suffix, format in by_suffix.items():
        if name.endswith(suffix):
            return format
    if name == "u.data":
        return "movielens-udata"
    if name.endswith(".dat"):
        return "movielens-dat"
    if name.endswith(".txt"):
        return _sniff_txt(path)
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
    path = _existing(path)
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
    readers: dict[str, Callable[[Path], pd.DataFrame]] = {
        "movielens-dat": _read_movielens_dat,
        "movielens-udata": _read_movielens_udata,
        "recbole": read_recbole,
        "user-lines": read_user_lines,
        "triples": _read_triples,
    }
    return readers[format](path)


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
    lines = _read_bytes(Path(path)).split(b"\n")
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
        # One format for all parts, from the largest file: a short test file whose lines hold
        # two items each would otherwise sniff as (user, item, rating) triples.
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
