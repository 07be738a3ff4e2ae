"""Opening interaction files, plain or compressed, and naming their lines in errors.

The helpers the readers share (:mod:`lit_matching.data.readers` for tables,
:mod:`lit_matching.data.text_formats` for the text formats): a file is read whole as bytes
(``.gz`` / ``.bz2`` / ``.xz`` decompressed by suffix), and a :class:`Source` keeps those bytes
to turn a parsed row back into the line an error names.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "COMPRESSED",
    "Source",
    "base_name",
    "empty_frame",
    "existing_file",
    "not_utf8",
    "open_binary",
    "read_bytes",
]

#: Opener of each compressed suffix.
COMPRESSED: dict[str, Callable[[Path], io.BufferedIOBase]] = {
    ".gz": lambda path: gzip.open(path, "rb"),
    ".bz2": lambda path: bz2.open(path, "rb"),
    ".xz": lambda path: lzma.open(path, "rb"),
}


def existing_file(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path`; ``FileNotFoundError`` if it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interaction file {str(path)!r} does not exist")
    return path


def base_name(path: Path) -> str:
    """Lower-case file name without a ``.gz`` / ``.bz2`` / ``.xz`` suffix.

    Example:
        >>> base_name(Path("data/Ratings.CSV.gz"))
        'ratings.csv'
    """
    name = path.name.lower()
    for suffix in COMPRESSED:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def open_binary(path: Path) -> io.BufferedIOBase:
    """``path`` opened for reading bytes, decompressed by its suffix."""
    opener = COMPRESSED.get(path.suffix.lower())
    return opener(path) if opener is not None else open(path, "rb")


def read_bytes(path: Path) -> bytes:
    """The whole (decompressed) content of ``path``."""
    with open_binary(path) as handle:
        return handle.read()


@dataclass(frozen=True)
class Source:
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
        """A ``ValueError`` naming the file and the line of data row ``row``."""
        return ValueError(f"{self.name} line {self.line_of(row)}: {message}")


def not_utf8(name: str, data: bytes, sep: str | None) -> ValueError:
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


def empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    """A frame without rows with int64 ``columns``."""
    return pd.DataFrame({col: np.zeros(0, dtype=np.int64) for col in columns})
