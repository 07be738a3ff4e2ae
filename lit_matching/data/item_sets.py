"""Per-user item sets in compressed-row form, with vectorised membership tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lit_matching.data.stored_sets import StoredItemSets

__all__ = ["EvalSet", "ItemSets"]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier (2^64 / phi)


def _hash_bits(keys: np.ndarray, bits: int) -> np.ndarray:
    """Multiplicative hash of int64 keys to ``bits`` bits (the product wraps modulo 2^64)."""
    return (keys.astype(np.uint64) * _GOLDEN) >> np.uint64(64 - bits)


def _sorted_unique(keys: np.ndarray, kind: str = "quicksort") -> np.ndarray:
    # Sort and drop adjacent repeats: far faster than np.unique's hash path on int64 keys.
    keys = np.sort(keys, kind=kind)  # type: ignore[call-overload]
    if keys.size:
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    return keys


@dataclass(frozen=True)
class ItemSets:
    """The set of items of each row (usually a user), stored as sorted CSR arrays.

    Row ``r`` holds ``indices[indptr[r]:indptr[r + 1]]``, sorted and without duplicates.

    Example:
        >>> sets = ItemSets.from_pairs(np.array([0, 0, 2]), np.array([5, 1, 1]), 3, 6)
        >>> sets.row(0), sets.counts()
        (array([1, 5]), array([2, 0, 1]))
        >>> sets.contains(np.array([0, 1, 2]), np.array([5, 5, 1]))
        array([ True, False,  True])
    """

    indptr: np.ndarray
    indices: np.ndarray
    num_items: int

    @classmethod
    def from_pairs(
        cls, rows: np.ndarray, items: np.ndarray, num_rows: int, num_items: int
    ) -> ItemSets:
        """Build from aligned ``(row, item)`` arrays; duplicate pairs are merged."""
        keys = np.asarray(rows, dtype=np.int64) * num_items + np.asarray(items, dtype=np.int64)
        return cls._from_keys(_sorted_unique(keys), num_rows, num_items)

    @classmethod
    def _from_keys(cls, keys: np.ndarray, num_rows: int, num_items: int) -> ItemSets:
        """From sorted, distinct ``row * num_items + item`` keys."""
        counts = np.bincount(keys // num_items, minlength=num_rows)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr=indptr, indices=keys % num_items, num_items=num_items)

    @property
    def shape(self) -> tuple[int, int]:
        """``(num_rows, num_items)``."""
        return self.num_rows, self.num_items

    @property
    def num_rows(self) -> int:
        """Number of rows."""
        return len(self.indptr) - 1

    def counts(self) -> np.ndarray:
        """Number of items in each row."""
        return np.diff(self.indptr)

    def row(self, r: int) -> np.ndarray:
        """Items of row ``r``."""
        return self.indices[self.indptr[r] : self.indptr[r + 1]]

    def row_ids(self) -> np.ndarray:
        """The row of every stored item, aligned with :attr:`indices`."""
        return np.repeat(np.arange(self.num_rows), self.counts())

    def row_sums(self, weights: np.ndarray) -> np.ndarray:
        """``sum(weights[item] for item in row r)`` for every row."""
        return np.bincount(self.row_ids(), weights=weights[self.indices], minlength=self.num_rows)

    def keys(self) -> np.ndarray:
        """Sorted ``row * num_items + item`` keys of all stored pairs."""
        return self.row_ids() * self.num_items + self.indices

    def contains(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether ``items[i]`` is in row ``rows[i]``, broadcasting ``rows`` against ``items``.

        Negative items (FAISS's "no result") are never contained.
        """
        keys, bitmap, bits = self._lookup
        query = np.asarray(rows, dtype=np.int64) * self.num_items + np.asarray(items)
        flat = query.reshape(-1)
        found = np.zeros(flat.shape, dtype=bool)
        if keys.size:
            # A one-hash bitmap rules out ~99% of absent pairs with one memory access each;
            # only the rest are checked exactly by binary search, so the answer is exact.
            slot = _hash_bits(flat, bits)
            maybe = np.flatnonzero((bitmap[slot >> np.uint64(3)] >> (slot & np.uint64(7))) & 1)
            candidates = flat[maybe]
            pos = np.minimum(np.searchsorted(keys, candidates), keys.size - 1)
            found[maybe] = keys[pos] == candidates
        return found.reshape(query.shape) & (np.asarray(items) >= 0)

    @property
    def _lookup(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Sorted keys and their bitmap filter, built on first use and cached."""
        cached = self.__dict__.get("_lookup_cache")
        if cached is None:
            keys = self.keys()
            # About 64 bitmap bits per key: a false "maybe" for ~1.5% of absent pairs.
            bits = int(np.clip(np.ceil(np.log2(max(keys.size, 1) * 64)), 10, 34))
            bitmap = np.zeros(2 ** (bits - 3), dtype=np.uint8)
            slot = _hash_bits(keys, bits)
            np.bitwise_or.at(
                bitmap, slot >> np.uint64(3), np.left_shift(1, slot & np.uint64(7)).astype(np.uint8)
            )
            cached = (keys, bitmap, bits)
            # The dataclass is frozen, so bypass __setattr__ for the cache.
            object.__setattr__(self, "_lookup_cache", cached)
        return cached

    def select(self, rows: np.ndarray) -> ItemSets:
        """A new :class:`ItemSets` whose row ``i`` is this one's row ``rows[i]``."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.indptr[rows], self.counts()[rows]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # Position of each output entry inside its source row, then offset by the row start.
        within = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths)
        indices = self.indices[np.repeat(starts, lengths) + within]
        return ItemSets(indptr=indptr, indices=indices, num_items=self.num_items)

    def union(self, other: ItemSets | StoredItemSets) -> ItemSets:
        """Row-wise union with another :class:`ItemSets` of the same shape."""
        if other.num_rows != self.num_rows or other.num_items != self.num_items:
            raise ValueError("ItemSets.union needs sets with the same rows and items")
        # Both key arrays are sorted: a stable sort (timsort) merges the two runs.
        keys = _sorted_unique(np.concatenate([self.keys(), other.keys()]), kind="stable")
        return ItemSets._from_keys(keys, self.num_rows, self.num_items)

    def difference(self, other: ItemSets) -> ItemSets:
        """Row-wise ``self - other`` for sets with the same rows and items."""
        if other.num_rows != self.num_rows or other.num_items != self.num_items:
            raise ValueError("ItemSets.difference needs sets with the same rows and items")
        rows = self.row_ids()
        keep = ~other.contains(rows, self.indices)
        return ItemSets.from_pairs(rows[keep], self.indices[keep], self.num_rows, self.num_items)


@dataclass(frozen=True)
class EvalSet:
    """What retrieval evaluation of one split needs.

    Attributes:
        users: Indices of the evaluated users.
        targets: Held-out relevant items; row ``i`` belongs to ``users[i]``.
        exclude: Items never to recommend (already seen); row ``i`` belongs to ``users[i]``.
    """

    users: np.ndarray
    targets: ItemSets
    exclude: ItemSets

    @classmethod
    def of_stage(
        cls,
        stage: str,
        train: ItemSets | StoredItemSets,
        val: ItemSets | StoredItemSets,
        test: ItemSets | StoredItemSets,
    ) -> EvalSet:
        """Users with targets at ``"val"`` or ``"test"``, their targets and items to exclude.

        Validation excludes each user's training items; test excludes training and validation
        items. Only the evaluated users' rows are selected before the union (in memory).
        """
        if stage not in ("val", "test"):
            raise ValueError(f"stage must be 'val' or 'test', got {stage!r}")
        targets = val if stage == "val" else test
        users = np.flatnonzero(targets.counts() > 0)
        exclude = train.select(users)
        if stage == "test":
            exclude = exclude.union(val.select(users))
        return cls(users=users, targets=targets.select(users), exclude=exclude)
