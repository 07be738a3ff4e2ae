r"""Readers of the text formats without a header of column names (and RecBole's typed one).

* ``"movielens-dat"``: ``user::item::rating::timestamp`` lines (MovieLens 1M / 10M);
* ``"movielens-udata"``: tab-separated ``user item rating timestamp`` lines (``u.data``);
* ``"recbole"``: RecBole atomic files (``*.inter``) with a typed ``name:type`` header;
* ``"user-lines"``: ``user item item ...`` lines (LightGCN / BARS splits);
* ``"triples"``: ``user item value`` lines (value kept as ``rating`` unless it is always 1).

:func:`~lit_matching.data.readers.read_interactions` dispatches to these through
:data:`TEXT_READERS`; errors name the file, the line and the offending value.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pytorch_lightning.utilities import rank_zero_info

from lit_matching.data.files import (
    Source,
    empty_frame,
    existing_file,
    not_utf8,
    open_binary,
    read_bytes,
)

__all__ = [
    "TEXT_READERS",
    "read_recbole",
    "read_user_lines",
    "sniff_txt",
]

_SNIFF_LINES = 100
_MAX_DIGITS = 18  # 10**18 still fits in int64
_POW10 = 10 ** np.arange(_MAX_DIGITS, dtype=np.int64)
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_RECBOLE_TYPES = ("token", "float", "token_seq", "float_seq")
_CANONICAL = ("user_id", "item_id", "rating", "timestamp")


# ---------------------------------------------------------------------------- validation
def _check_column(frame: pd.DataFrame, col: str, kind: str, source: Source) -> None:
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


def _read_delimited(source: Source, columns: Sequence[str], sep: str) -> pd.DataFrame:
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
        return empty_frame(columns)
    except pd.errors.ParserError as err:
        raise ValueError(f"{source.name}: {err}") from None
    if frame.shape[1] != len(columns):
        raise source.error(
            0, f"expected {len(columns)} fields ({' '.join(columns)}), found {frame.shape[1]}"
        )
    frame.columns = pd.Index(columns)
    return frame


def _numeric_log(source: Source, columns: Sequence[str], sep: str) -> pd.DataFrame:
    """Delimited ``user item rating timestamp`` lines with integer ids and times."""
    frame = _read_delimited(source, columns, sep)
    for col in columns:
        _check_column(frame, col, "number" if col == "rating" else "int", source)
        if col != "rating":
            frame[col] = frame[col].astype(np.int64)
    return frame


# ---------------------------------------------------------------------------- format readers
def _read_movielens_dat(path: Path) -> pd.DataFrame:
    data = read_bytes(path)
    first = data.split(b"\n", 1)[0]
    if b"::" not in first:
        raise ValueError(
            f"{path} line 1: {first[:80].decode(errors='replace')!r} is not '::'-separated "
            "(movielens-dat); pass format='tsv' or 'csv' for a table with a header"
        )
    # pandas' C parser only takes one-character separators; "::" -> tab keeps it fast.
    source = Source(str(path), data.replace(b"::", b"\t"))
    return _numeric_log(source, _CANONICAL, "\t")


def _read_movielens_udata(path: Path) -> pd.DataFrame:
    return _numeric_log(Source(str(path), read_bytes(path)), _CANONICAL, "\t")


def _read_triples(path: Path) -> pd.DataFrame:
    source = Source(str(path), read_bytes(path), whitespace_sep=True)
    frame = _read_delimited(source, ("user_id", "item_id", "value"), r"\s+")
    for col, kind in (("user_id", "id"), ("item_id", "id"), ("value", "number")):
        _check_column(frame, col, kind, source)
    value = pd.to_numeric(frame.pop("value"))
    if not (value == 1).all():
        frame["rating"] = value
    return frame


def _recbole_header(path: Path, data: bytes) -> tuple[list[str], dict[str, str]]:
    """The header fields of a RecBole file as written, and each field's type by its name."""
    try:
        raw_fields = data.split(b"\n", 1)[0].decode().rstrip("\r").split("\t")
    except UnicodeDecodeError:
        raise not_utf8(str(path), data, "\t") from None
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
    return raw_fields, types


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
    path = existing_file(path)
    data = read_bytes(path)
    raw_fields, types = _recbole_header(path, data)
    source = Source(str(path), data, header_lines=1)
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
        raise not_utf8(str(path), data, "\t") from None
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
        return empty_frame(("user_id", "item_id", "position"))
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
        A gzip-compressed file of two users' lines:

        >>> import gzip, tempfile
        >>> path = Path(tempfile.mkdtemp()) / "train.txt.gz"
        >>> _ = path.write_bytes(gzip.compress(b"0 5 3\n1 4\n"))
        >>> read_user_lines(path).to_dict("list")
        {'user_id': [0, 0, 1], 'item_id': [5, 3, 4], 'position': [0, 1, 0]}
    """
    path = existing_file(path)
    return _parse_user_lines(read_bytes(path), str(path))


def sniff_txt(path: Path) -> str:
    """``"triples"`` if the first lines are all ``a b <number>``, else ``"user-lines"``."""
    lines: list[bytes] = []
    with open_binary(path) as handle:
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


#: Reader of each format of this module, by its ``format=`` name.
TEXT_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "movielens-dat": _read_movielens_dat,
    "movielens-udata": _read_movielens_udata,
    "recbole": read_recbole,
    "user-lines": read_user_lines,
    "triples": _read_triples,
}
