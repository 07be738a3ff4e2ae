"""Serve a trained two-tower model: top-K recommendations by raw id, and a portable export.

A :class:`Retriever` holds every user and item vector (as prepared for the index), the raw-id
vocabularies, the items each user has already seen and a FAISS index over the items. It can be
exported to a directory that plain ``numpy`` / ``json`` / ``faiss`` can read without
``lit_matching``:

=======================  ==========================================================================
file                     content
=======================  ==========================================================================
``user_embeddings.npy``  ``(num_users, dimension)`` float32 user vectors, as prepared for the index;
                         ``(num_users, interests, dimension)`` for a multi-interest user tower
``item_embeddings.npy``  ``(num_items, dimension)`` float32 item vectors, prepared likewise
``user_ids.json``        raw user ids in index order (a JSON list)
``item_ids.json``        raw item ids in index order (a JSON list)
``seen_items.npz``       CSR arrays ``indptr`` / ``indices``: item indices each user has seen
``index.faiss``          the FAISS index over the items (``faiss.read_index``)
``meta.json``            similarity, metric, index spec, sizes, versions, and the ``sha256`` of
                         ``item_embeddings.npy`` and ``index.faiss`` (written last)
=======================  ==========================================================================

Scores are "higher = closer": inner products for ``ip`` indexes (for cosine, the cosine: a zero
vector scores 0, as in training), negated squared distances for ``l2`` indexes (euclidean).

:meth:`Retriever.load` refuses vectors that are not finite, and an ``index.faiss`` or
``item_embeddings.npy`` whose ``sha256`` is not the one written at export. Exports from before
these checksums load without them; their ``Flat`` index is then compared with
``item_embeddings.npy`` vector by vector (an approximate one is only checked for size and
metric). Cosine exports from before cosine searched an inner-product index (``meta.json`` metric
``"l2"``) load with an inner-product index rebuilt from ``item_embeddings.npy``, with a warning.

A multi-interest user (``meta.json`` has ``"interests": K``) is served by searching each of its
``K`` vectors and keeping each item once, with its best score
(:func:`~lit_matching.retrieval.search.merge_interests`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from lit_matching._version import __version__
from lit_matching.data.item_sets import ItemSets
from lit_matching.losses.similarity import FaissMetric, Similarity, get_similarity
from lit_matching.retrieval.encoding import encode_in_batches
from lit_matching.retrieval.search import (
    EXACT,
    build_index,
    search_top_k,
    set_search_params,
    to_gpu,
)

__all__ = ["FORMAT_VERSION", "Retriever", "export_retriever"]

#: Version of the export directory layout written by :meth:`Retriever.export`.
FORMAT_VERSION = 1
#: Number of results when ``k`` is not given.
DEFAULT_K = 10

_META = "meta.json"
_USER_EMB = "user_embeddings.npy"
_ITEM_EMB = "item_embeddings.npy"
_USER_IDS = "user_ids.json"
_ITEM_IDS = "item_ids.json"
_SEEN = "seen_items.npz"
_INDEX = "index.faiss"
_FILES = (_USER_EMB, _ITEM_EMB, _USER_IDS, _ITEM_IDS, _SEEN, _INDEX)
_METRIC_TYPES = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT}
#: Files whose sha256 ``meta.json`` records: the index must hold the vectors of the items.
_CHECKSUMMED = (_ITEM_EMB, _INDEX)


class _Encoder(Protocol):
    """What :meth:`Retriever.from_module` needs of a module (:class:`MatchingModule` has it)."""

    similarity: Similarity
    training: bool

    def encode_users(self, users: Any) -> Tensor: ...
    def encode_items(self, items: Any) -> Tensor: ...
    def eval(self) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


def _json_id(value: Any, what: str) -> str | int | float:
    """A raw id as a plain JSON value (numpy scalars become Python ones)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not np.isfinite(value):
            raise ValueError(f"{what} ids must be finite to export as JSON, got {value!r}")
        return value
    raise ValueError(
        f"{what} ids must be strings or numbers to export as JSON, got {type(value).__name__} "
        f"{value!r}"
    )


def _check_finite(vectors: np.ndarray, what: str) -> None:
    """Raise naming the first row of ``vectors`` that holds a NaN or an infinity.

    FAISS returns no result for such a query and never finds such an item, so they would
    silently empty or thin out the recommendations.
    """
    bad = ~np.isfinite(vectors).all(axis=tuple(range(1, vectors.ndim)))
    if bad.any():
        row = int(np.argmax(bad))
        values = vectors[row].ravel()
        value = values[~np.isfinite(values)][0]
        raise ValueError(
            f"{what}: row {row} is not finite (holds {value}); {int(bad.sum())} of "
            f"{len(vectors)} rows hold NaN or infinity (did training diverge?)"
        )


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _make_dir(parent: Path, prefix: str, suffix: str) -> Path:
    """A new, uniquely named directory in ``parent``, with the permissions the umask gives.

    Unlike :func:`tempfile.mkdtemp` (always mode 0700), ``os.mkdir(path, 0o777)`` lets the
    user's umask decide, so an export is as readable as any other file the user writes.
    """
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            path.mkdir(0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no unused temporary directory name {prefix}*{suffix} in {parent}")


def _id_index(ids: Sequence[Any], what: str) -> pd.Index:
    """Raw ids as a unique :class:`pandas.Index`."""
    index = pd.Index(list(ids))
    if not index.is_unique:
        repeated = index[index.duplicated()].unique().tolist()[:5]
        raise ValueError(f"{what} ids must be unique; repeated: {repeated}")
    return index


def _on_gpu(index: faiss.Index) -> bool:
    """Whether ``index`` (as built by :func:`build_index`) lives on one or more GPUs."""
    name = type(index).__name__
    return name.startswith("Gpu") or name in ("IndexReplicas", "IndexShards")


def _as_list(raw: Any) -> list[Any]:
    """A single raw id or a list-like of them, as a list."""
    if pd.api.types.is_list_like(raw):
        return list(raw)
    return [raw]


def _check_k(k: int | None, default: int) -> int:
    k = default if k is None else k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k has to be a positive integer, got {k!r}")
    return int(k)


class Retriever:
    """Top-K retrieval by raw id over a trained model's user and item vectors.

    Build one from a trained module with :meth:`from_module`, or from arrays as below; save it
    with :meth:`export` and open it again with :meth:`load`.

    Args:
        user_embeddings: ``(num_users, d)`` user vectors, already prepared for the index
            (:meth:`Similarity.prepare`, e.g. L2-normalised for cosine), or
            ``(num_users, K, d)`` for ``K`` interests per user.
        item_embeddings: ``(num_items, d)`` item vectors, prepared likewise.
        user_ids: Raw user ids, one per row of ``user_embeddings``.
        item_ids: Raw item ids, one per row of ``item_embeddings``.
        similarity: ``"cosine"``, ``"dot"`` or ``"euclidean"``; chooses the index metric.
        seen: Items (indices) each user has already seen, row ``u`` for user ``u``; these are
            left out of :meth:`recommend` with ``exclude_seen=True``. ``None``: nothing seen.
        index: FAISS index-factory string (``"Flat"`` is exact; e.g. ``"HNSW32"``,
            ``"IVF1024,Flat"``), see :func:`~lit_matching.retrieval.search.build_index`.
        search_params: Search-time parameters such as ``{"efSearch": 128}``.
        default_k: Number of results when ``k`` is not given.
        use_gpu: Put the index on the GPUs; ``None`` does when faiss sees one.
        faiss_index: A ready index over ``item_embeddings`` (as read by :meth:`load`) instead
            of building one.

    Example:
        >>> vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)
        >>> seen = ItemSets.from_pairs(np.array([0]), np.array([0]), 2, 3)
        >>> retriever = Retriever(vectors[:2], vectors, ["ann", "bob"], [10, 20, 30], "dot", seen)
        >>> retriever.recommend("ann", k=2)
          user_id  rank  item_id  score
        0     ann     1       30    0.7
        1     ann     2       20    0.0
        >>> retriever.recommend(["bob"], k=1, exclude_seen=False).item_id.tolist()
        [20]
        >>> retriever.similar_items(10, k=1)[["item_id", "similar_item_id"]].values.tolist()
        [[10, 30]]
    """

    def __init__(
        self,
        user_embeddings: np.ndarray,
        item_embeddings: np.ndarray,
        user_ids: Sequence[Any],
        item_ids: Sequence[Any],
        similarity: str | Similarity = "cosine",
        seen: ItemSets | None = None,
        index: str = EXACT,
        search_params: Mapping[str, float] | None = None,
        default_k: int = DEFAULT_K,
        use_gpu: bool | None = None,
        faiss_index: faiss.Index | None = None,
    ):
        users = np.ascontiguousarray(user_embeddings, dtype=np.float32)
        items = np.ascontiguousarray(item_embeddings, dtype=np.float32)
        if users.ndim not in (2, 3) or items.ndim != 2 or users.shape[-1] != items.shape[1]:
            raise ValueError(
                f"user embeddings must be (users, d) or (users, interests, d) and item "
                f"embeddings (items, d), with the same d; got shapes {users.shape} and "
                f"{items.shape}"
            )
        if len(items) == 0:
            raise ValueError("there are no items to retrieve")
        _check_finite(users, "user embeddings")
        _check_finite(items, "item embeddings")
        if len(user_ids) != len(users) or len(item_ids) != len(items):
            raise ValueError(
                f"{len(user_ids)} user ids for {len(users)} user vectors and {len(item_ids)} "
                f"item ids for {len(items)} item vectors: there must be one id per vector"
            )
        if seen is not None and (seen.num_rows != len(users) or seen.num_items != len(items)):
            raise ValueError(
                f"seen items cover {seen.num_rows} users x {seen.num_items} items, but there "
                f"are {len(users)} users x {len(items)} items"
            )
        self._similarity = get_similarity(similarity)
        self._user_embeddings, self._item_embeddings = users, items
        self._user_index = _id_index(user_ids, "user")
        self._item_index = _id_index(item_ids, "item")
        self._seen = seen
        self._spec = index
        self._search_params = dict(search_params or {})
        self.default_k = _check_k(default_k, DEFAULT_K)
        metric = self._similarity.faiss_metric
        if faiss_index is None:
            faiss_index = build_index(items, metric, index, self._search_params, use_gpu)
        elif faiss_index.ntotal != len(items) or faiss_index.d != items.shape[1]:
            raise ValueError(
                f"faiss_index holds {faiss_index.ntotal} vectors of size {faiss_index.d}, but "
                f"there are {len(items)} items of size {items.shape[1]}"
            )
        self._index = faiss_index

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_module(
        cls,
        module: _Encoder,
        datamodule: Any,
        index: str = EXACT,
        search_params: Mapping[str, float] | None = None,
        batch_size: int = 4096,
        default_k: int = DEFAULT_K,
        use_gpu: bool | None = None,
    ) -> Retriever:
        """Encode every user and item of ``datamodule`` with a trained ``module``.

        Args:
            module: A trained :class:`~lit_matching.modes.base.MatchingModule` (anything with
                ``encode_users``, ``encode_items`` and ``similarity``).
            datamodule: The :class:`~lit_matching.data.datamodule.MatchingDataModule` it was
                trained on: its vocabularies map raw ids, and its train, validation and test
                items are what each user has seen.
            index: FAISS index-factory string.
            search_params: Search-time parameters of the index.
            batch_size: Users / items encoded per forward pass.
            default_k: Number of results when ``k`` is not given.
            use_gpu: Put the index on the GPUs; ``None`` does when faiss sees one.

        Returns:
            The retriever. The module is encoded in eval mode without gradients, on its own
            device, and left in the mode it was in.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size has to be a positive integer, got {batch_size!r}")
        num_users, num_items = datamodule.num_users, datamodule.num_items
        device = getattr(module, "device", None)
        if device is None:
            device = next(module.parameters(), torch.empty(0)).device
        was_training = module.training
        module.eval()
        try:
            # Users as known after all the data (their full history, if the model uses one).
            user_features = (
                datamodule.user_features("serve", np.arange(num_users))
                if hasattr(datamodule, "user_features")
                else {"ids": torch.arange(num_users)}
            )
            users = encode_in_batches(module.encode_users, user_features, device, batch_size)
            items = encode_in_batches(
                module.encode_items, {"ids": torch.arange(num_items)}, device, batch_size
            )
        finally:
            module.train(was_training)
        seen = datamodule.train_items.union(datamodule.val_items).union(datamodule.test_items)
        return cls(
            users,
            items,
            datamodule.user_vocab.to_list(),
            datamodule.item_vocab.to_list(),
            similarity=module.similarity,
            seen=seen,
            index=index,
            search_params=search_params,
            default_k=default_k,
            use_gpu=use_gpu,
        )

    # ------------------------------------------------------------------ properties
    @property
    def user_ids(self) -> list[Any]:
        """Raw user ids in index order."""
        return self._user_index.tolist()

    @property
    def item_ids(self) -> list[Any]:
        """Raw item ids in index order."""
        return self._item_index.tolist()

    @property
    def similarity(self) -> str:
        """Name of the similarity (``"cosine"``, ``"dot"`` or ``"euclidean"``)."""
        return self._similarity.name

    @property
    def metric(self) -> FaissMetric:
        """FAISS metric of the index, ``"l2"`` or ``"ip"``."""
        return self._similarity.faiss_metric

    @property
    def index_spec(self) -> str:
        """FAISS index-factory string of the index."""
        return self._spec

    @property
    def search_params(self) -> dict[str, float]:
        """Search-time parameters of the index."""
        return dict(self._search_params)

    @property
    def index(self) -> faiss.Index:
        """The FAISS index over the item vectors."""
        return self._index

    @property
    def user_embeddings(self) -> np.ndarray:
        """``(num_users[, interests], dimension)`` float32 user vectors, prepared for the index."""
        return self._user_embeddings

    @property
    def item_embeddings(self) -> np.ndarray:
        """``(num_items, dimension)`` float32 item vectors, as prepared for the index."""
        return self._item_embeddings

    @property
    def seen(self) -> ItemSets | None:
        """Item indices each user has seen (``None`` if not known)."""
        return self._seen

    @property
    def num_users(self) -> int:
        """Number of users."""
        return len(self._user_embeddings)

    @property
    def num_items(self) -> int:
        """Number of items."""
        return len(self._item_embeddings)

    @property
    def interests(self) -> int | None:
        """Vectors per user of a multi-interest model; ``None`` for one plain vector."""
        return int(self._user_embeddings.shape[1]) if self._user_embeddings.ndim == 3 else None

    @property
    def dimension(self) -> int:
        """Size of the vectors."""
        return int(self._item_embeddings.shape[1])

    def __repr__(self) -> str:
        return (
            f"Retriever(similarity={self.similarity!r}, index={self._spec!r}, "
            f"num_users={self.num_users}, num_items={self.num_items}, dimension={self.dimension})"
        )

    # ------------------------------------------------------------------ retrieval
    @staticmethod
    def _positions(vocab: pd.Index, raw: Iterable[Any], what: str) -> np.ndarray:
        raw = list(raw)
        if not raw:
            return np.zeros(0, dtype=np.int64)
        positions = vocab.get_indexer(pd.Index(raw, dtype=object))
        if (positions < 0).any():
            unknown = [value for value, pos in zip(raw, positions, strict=True) if pos < 0]
            shown = ", ".join(repr(value) for value in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise KeyError(f"unknown {what} id(s): {shown}{more}")
        return positions.astype(np.int64)

    def _frame(
        self,
        vocab: pd.Index,
        queries: np.ndarray,
        items: np.ndarray,
        scores: np.ndarray,
        columns: tuple[str, str, str, str],
    ) -> pd.DataFrame:
        """One row per found item (``-1`` fill dropped), queries in the order asked."""
        rows, cols = np.nonzero(items >= 0)
        return pd.DataFrame(
            {
                columns[0]: vocab.to_numpy()[queries[rows]],
                columns[1]: (cols + 1).astype(np.int64),
                columns[2]: self._item_index.to_numpy()[items[rows, cols]],
                columns[3]: scores[rows, cols].astype(np.float32),
            }
        )

    def recommend(
        self, raw_user_ids: Any, k: int | None = None, exclude_seen: bool = True
    ) -> pd.DataFrame:
        """Top ``k`` items for each user, best first.

        Args:
            raw_user_ids: One raw user id or a list of them.
            k: Items per user (default :attr:`default_k`).
            exclude_seen: Never return an item the user has already seen.

        Returns:
            Columns ``user_id``, ``rank`` (1-based), ``item_id`` (raw) and ``score`` (higher =
            closer), ``k`` rows per user in the order asked, fewer when fewer unseen items
            remain.

        Raises:
            KeyError: Naming the unknown user ids.
        """
        k = min(_check_k(k, self.default_k), self.num_items)
        query_ids = _as_list(raw_user_ids)
        users = self._positions(self._user_index, query_ids, "user")
        exclude = self._seen.select(users) if exclude_seen and self._seen is not None else None
        if len(users):
            items, scores = search_top_k(self._index, self._user_embeddings[users], k, exclude)
        else:
            items, scores = np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        columns = ("user_id", "rank", "item_id", "score")
        return self._frame(self._user_index, users, items, scores, columns)

    def similar_items(self, raw_item_ids: Any, k: int | None = None) -> pd.DataFrame:
        """The ``k`` items closest to each given item, never the item itself.

        Args:
            raw_item_ids: One raw item id or a list of them.
            k: Similar items per item (default :attr:`default_k`).

        Returns:
            Columns ``item_id``, ``rank`` (1-based), ``similar_item_id`` and ``score``
            (higher = closer, under the model's similarity).

        Raises:
            KeyError: Naming the unknown item ids.
        """
        k = min(_check_k(k, self.default_k), self.num_items)
        query_ids = _as_list(raw_item_ids)
        queries = self._positions(self._item_index, query_ids, "item")
        itself = ItemSets.from_pairs(np.arange(len(queries)), queries, len(queries), self.num_items)
        if len(queries):
            items, scores = search_top_k(self._index, self._item_embeddings[queries], k, itself)
        else:
            items, scores = np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        columns = ("item_id", "rank", "similar_item_id", "score")
        return self._frame(self._item_index, queries, items, scores, columns)

    # ------------------------------------------------------------------ export / load
    def meta(self) -> dict[str, Any]:
        """What ``meta.json`` of an export holds (:meth:`export` adds ``sha256``)."""
        return {
            "format_version": FORMAT_VERSION,
            "lit_matching_version": __version__,
            "similarity": self.similarity,
            "metric": self.metric,
            "index": self._spec,
            "search_params": self._search_params,
            "dimension": self.dimension,
            "interests": self.interests,
            "num_users": self.num_users,
            "num_items": self.num_items,
            "default_k": self.default_k,
            "dtype": "float32",
            "files": list(_FILES),
        }

    def export(self, directory: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the retriever to ``directory``, readable with numpy, json and faiss alone.

        The files are written into a temporary sibling directory, ``meta.json`` last, which
        is then renamed to ``directory``: a crash leaves no half-written export under that name.

        Args:
            directory: Where to write (must not exist unless ``overwrite``).
            overwrite: Replace an existing export (a directory holding ``meta.json``, or an
                empty one).

        Returns:
            The path of the export.
        """
        target = Path(directory)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
        if target.exists() and (
            not target.is_dir() or (any(target.iterdir()) and not (target / _META).is_file())
        ):
            raise ValueError(f"{target} exists and is not a retriever export: not replacing it")
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = _make_dir(target.parent, f".{target.name}.", ".tmp")
        try:
            self._write(temp)
            if target.exists():
                old = Path(
                    tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
                )
                os.replace(target, old / target.name)
                os.replace(temp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(temp, target)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return target

    def _write(self, path: Path) -> None:
        np.save(path / _USER_EMB, self._user_embeddings, allow_pickle=False)
        np.save(path / _ITEM_EMB, self._item_embeddings, allow_pickle=False)
        for name, vocab, what in (
            (_USER_IDS, self._user_index, "user"),
            (_ITEM_IDS, self._item_index, "item"),
        ):
            ids = [_json_id(value, what) for value in vocab.tolist()]
            (path / name).write_text(json.dumps(ids, allow_nan=False), encoding="utf-8")
        seen = self._seen
        if seen is None:
            empty = np.zeros(0, np.int64)
            seen = ItemSets(np.zeros(self.num_users + 1, np.int64), empty, self.num_items)
        with open(path / _SEEN, "wb") as file:
            np.savez(
                file,
                indptr=np.asarray(seen.indptr, dtype=np.int64),
                indices=np.asarray(seen.indices, dtype=np.int64),
            )
        index = faiss.index_gpu_to_cpu(self._index) if _on_gpu(self._index) else self._index
        faiss.write_index(index, str(path / _INDEX))
        # Checksums of the files as written: load then knows the index is the one built over
        # these item vectors, whatever the index type (an approximate one cannot be compared).
        checksums = {name: _sha256(path / name) for name in _CHECKSUMMED}
        meta = json.dumps(self.meta() | {"sha256": checksums}, indent=2, allow_nan=False)
        (path / _META).write_text(meta + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | os.PathLike[str], use_gpu: bool | None = False) -> Retriever:
        """Open a directory written by :meth:`export` (nothing is unpickled).

        Args:
            directory: The export.
            use_gpu: Move the index to the GPUs (``None``: when faiss sees one).

        Raises:
            FileNotFoundError: A file of the export is missing (named).
            ValueError: A file is unreadable, of another format version, or disagrees with
                ``meta.json`` (the file and the mismatch are named); a vector is not finite
                (the file and row are named); ``item_embeddings.npy`` or ``index.faiss`` is
                not the file written at export (its sha256 differs, or a ``Flat`` index
                holds other vectors).
        """
        path = Path(directory)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a directory (no retriever export there)")
        meta = _read_meta(path)
        missing = [name for name in _FILES if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"retriever export {path} is incomplete: missing {', '.join(missing)}"
            )
        dim, num_users, num_items = meta["dimension"], meta["num_users"], meta["num_items"]
        interests = meta.get("interests")
        user_shape = (num_users, dim) if interests is None else (num_users, interests, dim)
        users = _read_embeddings(path / _USER_EMB, user_shape, "num_users")
        items = _read_embeddings(path / _ITEM_EMB, (num_items, dim), "num_items")
        user_ids = _read_ids(path / _USER_IDS, num_users, "num_users")
        item_ids = _read_ids(path / _ITEM_IDS, num_items, "num_items")
        seen = _read_seen(path / _SEEN, num_users, num_items)
        similarity = get_similarity(meta["similarity"])
        if meta["metric"] != similarity.faiss_metric:  # a cosine export with an L2 index
            warnings.warn(
                f"retriever export {path} holds an L2 index for cosine (meta.json metric 'l2', "
                f"lit_matching {meta.get('lit_matching_version', '?')}), which ranks zero "
                f"vectors unlike training; using an inner-product {meta['index']!r} index "
                f"rebuilt from {_ITEM_EMB} instead (export again to skip this)",
                UserWarning,
                stacklevel=2,
            )
            index = build_index(
                items, similarity.faiss_metric, meta["index"], meta["search_params"], use_gpu
            )
        else:
            index = _read_index(path / _INDEX, meta)
            _check_index_holds(path, meta, index, items)
            index = to_gpu(index, use_gpu, meta["index"])
        try:
            return cls(
                users,
                items,
                user_ids,
                item_ids,
                similarity=meta["similarity"],
                seen=seen,
                index=meta["index"],
                search_params=meta["search_params"],
                default_k=meta["default_k"],
                faiss_index=index,
            )
        except ValueError as err:
            raise ValueError(f"retriever export {path}: {err}") from None


def _read_meta(path: Path) -> dict[str, Any]:
    file = path / _META
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} not found: {path} is not a complete retriever export (meta.json is "
            f"written last, so the export was never finished)"
        )
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{file} has format_version {version!r}; this lit_matching ({__version__}) reads "
            f"format_version {FORMAT_VERSION} only"
        )
    expected: dict[str, type | tuple[type, ...]] = {
        "similarity": str,
        "metric": str,
        "index": str,
        "search_params": (dict, type(None)),
        "dimension": int,
        "num_users": int,
        "num_items": int,
        "default_k": int,
    }
    for key, kind in expected.items():
        if key not in meta:
            raise ValueError(f"{file} has no {key!r} entry")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise ValueError(f"{file}: {key!r} has the wrong type: {meta[key]!r}")
    interests = meta.get("interests")
    if interests is not None and (
        not isinstance(interests, int) or isinstance(interests, bool) or interests < 1
    ):
        raise ValueError(f"{file}: 'interests' must be a positive integer or null: {interests!r}")
    for key in ("dimension", "num_users", "num_items"):
        if meta[key] < (1 if key != "num_users" else 0):
            raise ValueError(f"{file}: {key!r} must be positive, got {meta[key]}")
    try:
        similarity = get_similarity(meta["similarity"])
    except ValueError as err:
        raise ValueError(f"{file}: {err}") from None
    # Cosine exports written before cosine searched an inner-product index say "l2"; load
    # rebuilds their index.
    legacy = similarity.name == "cosine" and meta["metric"] == "l2"
    if meta["metric"] != similarity.faiss_metric and not legacy:
        raise ValueError(
            f"{file}: metric {meta['metric']!r} does not match similarity "
            f"{similarity.name!r} (which needs {similarity.faiss_metric!r})"
        )
    checksums = meta.get("sha256")
    if checksums is not None and not (
        isinstance(checksums, dict)
        and all(isinstance(checksums.get(name), str) for name in _CHECKSUMMED)
    ):
        raise ValueError(
            f"{file}: 'sha256' must map {', '.join(_CHECKSUMMED)} to hex digests: {checksums!r}"
        )
    return meta


def _read_embeddings(file: Path, shape: tuple[int, ...], count_key: str) -> np.ndarray:
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{file} is not a readable .npy array (truncated?): {err}") from None
    if not isinstance(array, np.ndarray) or array.dtype != np.float32:
        raise ValueError(f"{file} must hold float32 vectors, got {getattr(array, 'dtype', None)}")
    if array.shape != shape:
        extra = " and interests" if len(shape) == 3 else ""
        raise ValueError(
            f"{file} has shape {array.shape}, but meta.json's {count_key}, dimension{extra} "
            f"say {shape}"
        )
    _check_finite(array, str(file))
    return array


def _read_ids(file: Path, count: int, count_key: str) -> list[Any]:
    try:
        ids = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON (truncated?): {err}") from None
    if not isinstance(ids, list):
        raise ValueError(f"{file} must hold a JSON list of ids, got {type(ids).__name__}")
    if len(ids) != count:
        raise ValueError(f"{file} has {len(ids)} ids, but meta.json says {count_key}={count}")
    for position, value in enumerate(ids):
        # What an export writes (see _json_id); anything else (a list, null, NaN) was edited in.
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(
                f"{file}: entry {position} is {type(value).__name__} {value!r}, not a string "
                "or number id"
            )
        if isinstance(value, float) and not np.isfinite(value):
            raise ValueError(f"{file}: entry {position} is {value!r}, not a finite number id")
    return ids


def _read_seen(file: Path, num_users: int, num_items: int) -> ItemSets:
    try:
        with np.load(file, allow_pickle=False) as arrays:
            missing = {"indptr", "indices"} - set(arrays.files)
            if missing:
                raise ValueError(f"{file} lacks array(s) {sorted(missing)}")
            indptr, indices = arrays["indptr"], arrays["indices"]
    except (OSError, EOFError) as err:
        raise ValueError(f"{file} is not a readable .npz archive (truncated?): {err}") from None
    except ValueError as err:
        raise ValueError(f"{file} is not a readable .npz archive: {err}") from None
    if (
        indptr.ndim != 1
        or indices.ndim != 1
        or not (
            np.issubdtype(indptr.dtype, np.integer) and np.issubdtype(indices.dtype, np.integer)
        )
    ):
        raise ValueError(f"{file}: indptr and indices must be 1-D integer arrays")
    if len(indptr) != num_users + 1:
        raise ValueError(
            f"{file}: indptr has {len(indptr)} entries, but meta.json says num_users="
            f"{num_users}: expected {num_users + 1}"
        )
    if (
        indptr[0] != 0
        or indptr[-1] != len(indices)
        or (len(indptr) > 1 and (np.diff(indptr) < 0).any())
    ):
        raise ValueError(f"{file}: indptr must rise from 0 to len(indices) = {len(indices)}")
    if len(indices) and (indices.min() < 0 or indices.max() >= num_items):
        raise ValueError(
            f"{file}: item indices must lie in [0, {num_items}) (meta.json num_items), got "
            f"[{indices.min()}, {indices.max()}]"
        )
    rows = np.repeat(np.arange(num_users), np.diff(indptr))
    # Rebuilt so that each row is sorted and distinct, as ItemSets requires.
    return ItemSets.from_pairs(rows, indices, num_users, num_items)


def _read_index(file: Path, meta: dict[str, Any]) -> faiss.Index:
    try:
        index = faiss.read_index(str(file))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"{file} is not a readable FAISS index (truncated?): {first}") from None
    if index.ntotal != meta["num_items"] or index.d != meta["dimension"]:
        raise ValueError(
            f"{file} holds {index.ntotal} vectors of size {index.d}, but meta.json says "
            f"num_items={meta['num_items']} and dimension={meta['dimension']}"
        )
    if index.metric_type != _METRIC_TYPES[meta["metric"]]:
        raise ValueError(
            f"{file} has FAISS metric type {index.metric_type}, but meta.json says metric="
            f"{meta['metric']!r}"
        )
    try:
        set_search_params(index, meta["search_params"], meta["index"])
    except ValueError as err:
        raise ValueError(f"{file}: {err} (from meta.json search_params)") from None
    return index


def _check_index_holds(
    path: Path, meta: dict[str, Any], index: faiss.Index, items: np.ndarray
) -> None:
    """Raise unless ``index.faiss`` is the index exported with ``item_embeddings.npy``.

    With the ``sha256`` of both files in ``meta.json`` (written at export) the files must have
    them. A ``Flat`` index stores the vectors themselves, so it is also compared with
    ``items`` exactly; exports from before the checksums get only that check, and for an
    approximate index of such an export (whose codes cannot be compared exactly) none.
    """
    checksums: dict[str, str] = meta.get("sha256") or {}
    for name in _CHECKSUMMED if checksums else ():
        found = _sha256(path / name)
        if found != checksums[name]:
            raise ValueError(
                f"{path / name} is not the file exported with this retriever: its sha256 is "
                f"{found}, meta.json says {checksums[name]} (replaced or modified after export)"
            )
    if not isinstance(index, faiss.IndexFlat):
        return
    block = 65536  # rows compared at a time: bounded extra memory for large catalogues
    for start in range(0, len(items), block):
        stored = index.reconstruct_n(start, min(block, len(items) - start))
        differs = (stored != items[start : start + block]).any(axis=1)
        if differs.any():
            row = start + int(np.argmax(differs))
            raise ValueError(
                f"{path / _INDEX} does not hold the vectors of {path / _ITEM_EMB}: row {row} "
                f"differs (was the index replaced or rebuilt from other vectors?)"
            )


def export_retriever(
    module: _Encoder, datamodule: Any, directory: str | os.PathLike[str], **kwargs: Any
) -> Path:
    """Encode ``datamodule``'s users and items with ``module`` and export them to ``directory``.

    Args:
        module: The trained module (see :meth:`Retriever.from_module`).
        datamodule: The data it was trained on.
        directory: Where to write the export.
        **kwargs: ``overwrite`` goes to :meth:`Retriever.export`, everything else (``index``,
            ``search_params``, ``batch_size``, ...) to :meth:`Retriever.from_module`.

    Returns:
        The path of the export (open it with :meth:`Retriever.load`).

    Example:
        >>> from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule
        >>> log = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": [5, 6, 7, 5, 7, 8],
        ...                     "timestamp": [1, 2, 3, 1, 2, 3]})
        >>> data = MatchingDataModule(interactions=log)
        >>> model = ListwiseMatching(IDEmbeddingTower(data.num_users, 4),
        ...                          IDEmbeddingTower(data.num_items, 4))
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = export_retriever(model, data, Path(folder) / "retriever")
        ...     print(sorted(file.name for file in path.iterdir()))
        ...     print(Retriever.load(path).recommend(1, k=1).columns.tolist())
        ... # doctest: +NORMALIZE_WHITESPACE
        ['index.faiss', 'item_embeddings.npy', 'item_ids.json', 'meta.json', 'seen_items.npz',
         'user_embeddings.npy', 'user_ids.json']
        ['user_id', 'rank', 'item_id', 'score']
    """
    overwrite = kwargs.pop("overwrite", False)
    return Retriever.from_module(module, datamodule, **kwargs).export(directory, overwrite)
