"""Per-user item sets stored on disk: 4 bytes per item, memory-mapped, searched in place.

:class:`StoredItemSets` is what streaming training keeps of each user's training items, to
reject negatives that are positives. Unlike :class:`~lit_matching.data.item_sets.ItemSets`
(int64 items plus a hashed lookup table built in memory, about 24 bytes per pair), it holds
the sorted ``int32`` items of each row in a memory-mapped ``.npy`` file and answers membership
by a vectorised binary search over each row's slice: nothing per pair is built in memory, and
the processes of one machine (DDP ranks, ``DataLoader`` workers) share the file's pages
through the page cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lit_matching.data.item_sets import ItemSets

__all__ = ["NpyAppender", "StoredItemSets"]

_ROWS_PER_CHUNK = 1 << 16  # rows summed at a time by row_sums (bounded temporaries)


@dataclass(frozen=True)
class StoredItemSets:
    """The items of each row, sorted: row ``r`` is ``indices[indptr[r]:indptr[r + 1]]``.

    The interface of :class:`~lit_matching.data.item_sets.ItemSets` that negative sampling
    and evaluation read (``contains``, ``row``, ``counts``, ``row_sums``, ``select``).

    Example:
        >>> sets = StoredItemSets.from_item_sets(
        ...     ItemSets.from_pairs(np.array([0, 0, 2]), np.array([5, 1, 1]), 3, 6))
        >>> sets.contains(np.array([0, 1, 2, 0]), np.array([5, 5, 1, 2])).tolist()
        [True, False, True, False]
        >>> sets.row(0).tolist(), sets.row_sums(np.arange(6.0)).tolist()
        ([1, 5], [6.0, 0.0, 1.0])
    """

    indptr: np.ndarray  # int64, num_rows + 1
    indices: np.ndarray  # int32 (usually a read-only memory map)
    num_items: int

    @classmethod
    def load(cls, folder: str | Path, name: str, num_items: int) -> StoredItemSets:
        """The sets :func:`write_item_sets` wrote as ``name`` in ``folder`` (memory-mapped)."""
        folder = Path(folder)
        return cls(
            indptr=np.load(folder / f"{name}.indptr.npy"),
            indices=np.load(folder / f"{name}.items.npy", mmap_mode="r"),
            num_items=num_items,
        )

    @classmethod
    def from_item_sets(cls, sets: ItemSets) -> StoredItemSets:
        """The same sets, held in memory (for tests and small data)."""
        return cls(sets.indptr.astype(np.int64), sets.indices.astype(np.int32), sets.num_items)

    @property
    def num_rows(self) -> int:
        """Number of rows."""
        return len(self.indptr) - 1

    @property
    def shape(self) -> tuple[int, int]:
        """``(num_rows, num_items)``."""
        return self.num_rows, self.num_items

    def counts(self) -> np.ndarray:
        """Number of items in each row."""
        return np.diff(self.indptr)

    def row(self, r: int) -> np.ndarray:
        """Items of row ``r`` (int64)."""
        return np.asarray(self.indices[self.indptr[r] : self.indptr[r + 1]], dtype=np.int64)

    def contains(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether ``items[i]`` is in row ``rows[i]``, broadcasting ``rows`` against ``items``.

        Negative items (FAISS's "no result") are never contained.
        """
        rows, items = np.broadcast_arrays(np.asarray(rows, np.int64), np.asarray(items, np.int64))
        flat_rows, flat_items = rows.reshape(-1), items.reshape(-1)
        lo, hi = self.indptr[flat_rows], self.indptr[flat_rows + 1]
        # Lower bound of each item in its row's slice: every step halves all the ranges at
        # once, so a batch costs log2(longest row) vectorised steps, whatever its size.
        active = np.flatnonzero(lo < hi)
        while active.size:
            mid = (lo[active] + hi[active]) // 2
            below = self.indices[mid] < flat_items[active]
            lo[active[below]] = mid[below] + 1
            hi[active[~below]] = mid[~below]
            active = active[lo[active] < hi[active]]
        found = lo < self.indptr[flat_rows + 1]
        found[found] = self.indices[lo[found]] == flat_items[found]
        return found.reshape(rows.shape) & (items >= 0)

    def row_sums(self, weights: np.ndarray) -> np.ndarray:
        """``sum(weights[item] for item in row r)`` for every row, a chunk of rows at a time."""
        sums = np.zeros(self.num_rows)
        for start in range(0, self.num_rows, _ROWS_PER_CHUNK):
            stop = min(start + _ROWS_PER_CHUNK, self.num_rows)
            lo, hi = self.indptr[start], self.indptr[stop]
            rows = np.repeat(np.arange(stop - start), np.diff(self.indptr[start : stop + 1]))
            values = weights[np.asarray(self.indices[lo:hi], dtype=np.int64)]
            sums[start:stop] = np.bincount(rows, weights=values, minlength=stop - start)
        return sums

    def select(self, rows: np.ndarray) -> ItemSets:
        """An in-memory :class:`~lit_matching.data.item_sets.ItemSets` of ``rows``, in order."""
        picked = self._view().select(rows)
        return ItemSets(picked.indptr, picked.indices.astype(np.int64), self.num_items)

    def keys(self) -> np.ndarray:
        """Sorted ``row * num_items + item`` keys of all stored pairs (int64, in memory)."""
        return self._view().keys()

    def union(self, other: ItemSets | StoredItemSets) -> ItemSets:
        """Row-wise union, in memory (e.g. every item a user has seen, for an export)."""
        return self.to_item_sets().union(other)

    def _view(self) -> ItemSets:
        # The same arrays read as ItemSets (items stay int32 and memory-mapped): its row
        # arithmetic serves both classes; only membership and row sums differ here.
        return ItemSets(self.indptr, self.indices, self.num_items)

    def to_item_sets(self) -> ItemSets:
        """All rows as an in-memory :class:`~lit_matching.data.item_sets.ItemSets`."""
        return self.select(np.arange(self.num_rows))


class NpyAppender:
    """Writes a ``.npy`` file block by block, its length known only at the end.

    Rows go straight to the file (no memory map, so nothing of the file stays in the
    process's resident memory); :meth:`close` writes the header, whose fixed 128 bytes
    leave room for any shape.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.npy"
        >>> with NpyAppender(path, np.int32, row_shape=(2,)) as out:
        ...     out.append(np.array([[1, 2]]))
        ...     out.append(np.array([[3, 4], [5, 6]]))
        >>> np.load(path).tolist()
        [[1, 2], [3, 4], [5, 6]]
    """

    HEADER_BYTES = 128

    def __init__(self, path: str | Path, dtype: type | np.dtype, row_shape: tuple[int, ...] = ()):
        self.path, self.dtype, self.row_shape = Path(path), np.dtype(dtype), row_shape
        self.rows = 0
        self._file = open(self.path, "wb")
        self._file.write(b"\0" * self.HEADER_BYTES)

    def append(self, block: np.ndarray) -> None:
        """Append rows (``block.shape[1:]`` must be ``row_shape``)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(
                f"{self.path.name}: rows of shape {self.row_shape} expected, got {block.shape[1:]}"
            )
        self._file.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        """Write the header (the npy format, version 1.0) and close the file."""
        if self._file.closed:
            return
        header = {
            "descr": self.dtype.str,
            "fortran_order": False,
            "shape": (self.rows, *self.row_shape),
        }
        text = repr(header).encode("latin1")
        magic = b"\x93NUMPY\x01\x00"
        pad = self.HEADER_BYTES - len(magic) - 2 - len(text) - 1
        self._file.seek(0)
        self._file.write(
            magic + (len(text) + pad + 1).to_bytes(2, "little") + text + b" " * pad + b"\n"
        )
        self._file.close()

    def __enter__(self) -> NpyAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
