"""Serve a trained two-tower model: top-K recommendations by raw id, and a portable export.

A :class:`Retriever` holds every user and item vector (as prepared for the index), the raw-id
vocabularies, the items each user has already seen and a FAISS index over the items. It can be
exported to a directory that plain ``numpy`` / ``json`` / ``faiss`` can read without
``lit_matching`` (:meth:`Retriever.export`; the files are described, written, read and checked
in :mod:`lit_matching.serving.export_format`) and opened again with :meth:`Retriever.load`.

Scores are "higher = closer": inner products for ``ip`` indexes (for cosine, the cosine: a zero
vector scores 0, as in training), negated squared distances for ``l2`` indexes (euclidean).

A multi-interest user (``meta.json`` has ``"interests": K``) is served by searching each of its
``K`` vectors and keeping each item once, with its best score
(:func:`~lit_matching.retrieval.search.merge_interests`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from lit_matching._version import __version__
from lit_matching.data.item_sets import ItemSets
from lit_matching.losses.faiss_metrics import FaissMetric, similarity_metric
from lit_matching.retrieval.search import EXACT, build_index, search_top_k
from lit_matching.retrieval.validation import check_k
from lit_matching.serving.export_files import FORMAT_VERSION, check_finite
from lit_matching.serving.export_format import (
    ExportContents,
    read_export,
    update_export,
    write_export,
)
from lit_matching.serving.item_update import with_items
from lit_matching.serving.raw_ids import as_list, lookup, positions, result_frame, unique_ids
from lit_matching.serving.requests import Recommendation, UserRequest, answer
from lit_matching.serving.serving_towers import ServingTower

__all__ = ["FORMAT_VERSION", "Recommendation", "Retriever", "UserRequest"]

#: Number of results when ``k`` is not given.
DEFAULT_K = 10


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
        user_tower: The exported user tower, to compute vectors from fresh histories and
            features (:meth:`recommend_for`); ``None``: known users only.
        item_tower: The exported item tower, when it reads side features (new items).
        popularity: Interactions per item in training, the fallback for a user with nothing
            known (``None``: all equal, i.e. catalogue order).

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
        similarity: Any = "cosine",
        seen: ItemSets | None = None,
        index: str = EXACT,
        search_params: Mapping[str, float] | None = None,
        default_k: int = DEFAULT_K,
        use_gpu: bool | None = None,
        faiss_index: faiss.Index | None = None,
        user_tower: ServingTower | None = None,
        item_tower: ServingTower | None = None,
        popularity: np.ndarray | None = None,
    ):
        users, items = _checked_vectors(user_embeddings, item_embeddings, user_ids, item_ids)
        if seen is not None and (seen.num_rows != len(users) or seen.num_items != len(items)):
            raise ValueError(
                f"seen items cover {seen.num_rows} users x {seen.num_items} items, but there "
                f"are {len(users)} users x {len(items)} items"
            )
        self._similarity_name, self._metric = similarity_metric(similarity)
        self._user_embeddings, self._item_embeddings = users, items
        self._user_index = unique_ids(user_ids, "user")
        self._item_index = unique_ids(item_ids, "item")
        self._seen = seen
        self._spec = index
        self._search_params = dict(search_params or {})
        self.default_k = check_k(default_k, "default_k")
        metric = self._metric
        if faiss_index is None:
            faiss_index = build_index(items, metric, index, self._search_params, use_gpu)
        elif faiss_index.ntotal != len(items) or faiss_index.d != items.shape[1]:
            raise ValueError(
                f"faiss_index holds {faiss_index.ntotal} vectors of size {faiss_index.d}, but "
                f"there are {len(items)} items of size {items.shape[1]}"
            )
        self._index = faiss_index
        self.user_tower, self.item_tower = user_tower, item_tower
        self.popularity = np.zeros(len(items)) if popularity is None else popularity
        if self.popularity.shape != (len(items),):
            raise ValueError(f"popularity has shape {self.popularity.shape}, not ({len(items)},)")
        #: Item positions by falling popularity (ties: lower position first).
        self.popular_order = np.argsort(-self.popularity, kind="stable")

    @classmethod
    def from_module(cls, module: Any, datamodule: Any, **kwargs: Any) -> Retriever:
        """Encode every user and item of ``datamodule`` with a trained ``module``.

        See :func:`~lit_matching.serving.from_training.retriever_from_module` (the arguments
        are passed on to it).
        """
        # Imported here: serving a loaded export needs no torch, training code does.
        from lit_matching.serving.from_training import retriever_from_module

        return retriever_from_module(module, datamodule, **kwargs)

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
        return self._similarity_name

    @property
    def metric(self) -> FaissMetric:
        """FAISS metric of the index, ``"l2"`` or ``"ip"``."""
        return self._metric

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
        k = min(check_k(self.default_k if k is None else k), self.num_items)
        users = positions(self._user_index, as_list(raw_user_ids), "user")
        exclude = self._seen.select(users) if exclude_seen and self._seen is not None else None
        items, scores = search_top_k(self._index, self._user_embeddings[users], k, exclude)
        columns = ("user_id", "rank", "item_id", "score")
        return result_frame(self._user_index, self._item_index, users, items, scores, columns)

    def recommend_for(
        self,
        user_id: Any = None,
        history: Sequence[Any] | None = None,
        features: Mapping[str, Any] | None = None,
        k: int | None = None,
        exclude: Sequence[Any] = (),
        exclude_seen: bool = True,
    ) -> Recommendation:
        """Top ``k`` items for anyone: a known user, a fresh history, features, or nobody.

        A known user with nothing new gets the exported vector (as :meth:`recommend`); a
        ``history`` (raw item ids, oldest first) or ``features`` give a vector computed by the
        exported user tower; with nothing usable (an unknown user and no history or features,
        or a user tower that is an id embedding) the answer is the most popular items, with
        ``source="popular"``. See :mod:`lit_matching.serving.requests`.

        The arguments are those of :class:`~lit_matching.serving.requests.UserRequest`; the
        answer is a :class:`~lit_matching.serving.requests.Recommendation`. Unknown item ids of
        the history are dropped and listed in its ``dropped_items``.

        Raises:
            ValueError: A feature the user tower does not read, or a value it cannot encode.
        """
        request = UserRequest(user_id, history, features, k, exclude, exclude_seen)
        return answer(self, [request])[0]

    def recommend_requests(self, requests: Sequence[UserRequest]) -> list[Recommendation]:
        """:meth:`recommend_for` for many requests at once: one tower run, one search."""
        return answer(self, requests)

    def user_position(self, raw_user_id: Any) -> int:
        """The position of a raw user id, ``-1`` if unknown (or ``None``)."""
        return -1 if raw_user_id is None else int(lookup(self._user_index, [raw_user_id])[0])

    def raw_item_ids(self, positions: np.ndarray) -> list[Any]:
        """Raw ids of the items at ``positions`` (not :attr:`item_ids`: a list of all of them)."""
        return self._item_index[np.asarray(positions, dtype=np.int64)].tolist()

    def item_positions(self, raw_item_ids: Sequence[Any], keep_unknown: bool = False) -> np.ndarray:
        """Positions of raw item ids: unknown ones dropped, or ``-1`` with ``keep_unknown``."""
        found = lookup(self._item_index, list(raw_item_ids)).astype(np.int64)
        return found if keep_unknown else found[found >= 0]

    def with_items(
        self, items: pd.DataFrame | Sequence[Mapping[str, Any]], id_col: str = "item_id"
    ) -> Retriever:
        """A retriever with ``items`` added, or replaced (same raw id), from their side features.

        Encoded by the exported item tower (:func:`~lit_matching.serving.item_update.with_items`,
        which says what is refused); this retriever is unchanged. :meth:`update_export` saves it.
        """
        return with_items(self, items, id_col)

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
        k = min(check_k(self.default_k if k is None else k), self.num_items)
        queries = positions(self._item_index, as_list(raw_item_ids), "item")
        itself = ItemSets.from_pairs(np.arange(len(queries)), queries, len(queries), self.num_items)
        items, scores = search_top_k(self._index, self._item_embeddings[queries], k, itself)
        columns = ("item_id", "rank", "similar_item_id", "score")
        return result_frame(self._item_index, self._item_index, queries, items, scores, columns)

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
        }

    def export(self, directory: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the retriever to ``directory``, readable with numpy, json and faiss alone.

        The files are written into a temporary sibling directory, ``meta.json`` last, which
        is then renamed to ``directory``: a crash leaves no half-written export under that name
        (see :func:`~lit_matching.serving.export_format.write_export`).

        Args:
            directory: Where to write (must not exist unless ``overwrite``).
            overwrite: Replace an existing export (a directory holding ``meta.json``, or an
                empty one).

        Returns:
            The path of the export.
        """
        return write_export(directory, self._contents(), self.meta(), overwrite)

    def _contents(self) -> ExportContents:
        return ExportContents(
            self._user_embeddings,
            self._item_embeddings,
            self.user_ids,
            self.item_ids,
            self._seen,
            self._index,
            self.user_tower,
            self.item_tower,
            self.popularity,
        )

    def update_export(self, directory: str | os.PathLike[str]) -> Path:
        """Replace the export in ``directory`` with this retriever, in place and atomically.

        The new files are written beside the old ones, then ``meta.json`` naming them replaces
        the old one in one rename, then the old files go: a reader (or a crash) at any moment
        sees the old export or the new one (see
        :func:`~lit_matching.serving.export_format.update_export`).
        """
        return update_export(directory, self._contents(), self.meta())

    @classmethod
    def load(cls, directory: str | os.PathLike[str], use_gpu: bool | None = False) -> Retriever:
        """Open a directory written by :meth:`export` (nothing is unpickled).

        Args:
            directory: The export.
            use_gpu: Move the index to the GPUs (``None``: when faiss sees one).

        Raises:
            FileNotFoundError: A file of the export is missing (named).
            ValueError: A file is unreadable, of another format version, disagrees with
                ``meta.json``, holds vectors that are not finite, or is not the file written
                at export (see :func:`~lit_matching.serving.export_format.read_export`).
        """
        contents, meta = read_export(directory, use_gpu)
        try:
            return cls(
                contents.user_embeddings,
                contents.item_embeddings,
                contents.user_ids,
                contents.item_ids,
                similarity=meta["similarity"],
                seen=contents.seen,
                index=meta["index"],
                search_params=meta["search_params"],
                default_k=meta["default_k"],
                faiss_index=contents.index,
                user_tower=contents.user_tower,
                item_tower=contents.item_tower,
                popularity=contents.popularity,
            )
        except ValueError as err:
            raise ValueError(f"retriever export {Path(directory)}: {err}") from None


def _checked_vectors(
    user_embeddings: np.ndarray,
    item_embeddings: np.ndarray,
    user_ids: Sequence[Any],
    item_ids: Sequence[Any],
) -> tuple[np.ndarray, np.ndarray]:
    """The vectors as C-contiguous float32, checked: shapes, finite, one id per vector."""
    users = np.ascontiguousarray(user_embeddings, dtype=np.float32)
    items = np.ascontiguousarray(item_embeddings, dtype=np.float32)
    if users.ndim not in (2, 3) or items.ndim != 2 or users.shape[-1] != items.shape[1]:
        raise ValueError(
            f"user embeddings must be (users, d) or (users, interests, d) and item "
            f"embeddings (items, d), with the same d; got shapes {users.shape} and {items.shape}"
        )
    if len(items) == 0:
        raise ValueError("there are no items to retrieve")
    check_finite(users, "user embeddings")
    check_finite(items, "item embeddings")
    if len(user_ids) != len(users) or len(item_ids) != len(items):
        raise ValueError(
            f"{len(user_ids)} user ids for {len(users)} user vectors and {len(item_ids)} "
            f"item ids for {len(items)} item vectors: there must be one id per vector"
        )
    return users, items
