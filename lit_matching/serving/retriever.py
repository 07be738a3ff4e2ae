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
import torch

from lit_matching._version import __version__
from lit_matching.data.item_sets import ItemSets
from lit_matching.losses.similarity import FaissMetric, Similarity, get_similarity
from lit_matching.retrieval.encoding import CatalogueEncoder, encode_catalogue
from lit_matching.retrieval.search import EXACT, build_index, search_top_k
from lit_matching.retrieval.validation import check_k
from lit_matching.serving.export_files import FILES, FORMAT_VERSION, check_finite
from lit_matching.serving.export_format import ExportContents, read_export, write_export
from lit_matching.serving.raw_ids import as_list, positions, result_frame, unique_ids

__all__ = ["FORMAT_VERSION", "Retriever", "export_retriever"]

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
        check_finite(users, "user embeddings")
        check_finite(items, "item embeddings")
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
        self._user_index = unique_ids(user_ids, "user")
        self._item_index = unique_ids(item_ids, "item")
        self._seen = seen
        self._spec = index
        self._search_params = dict(search_params or {})
        self.default_k = check_k(default_k, "default_k")
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
        module: CatalogueEncoder,
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
            device, and left in the mode it was in, each submodule's included
            (:func:`~lit_matching.retrieval.encoding.encode_catalogue`).
        """
        num_users, num_items = datamodule.num_users, datamodule.num_items
        # Users as known after all the data (their full history, if the model uses one).
        user_features = (
            datamodule.user_features("serve", np.arange(num_users))
            if hasattr(datamodule, "user_features")
            else {"ids": torch.arange(num_users)}
        )
        users, items = encode_catalogue(module, user_features, num_items, batch_size=batch_size)
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
            "files": list(FILES),
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
        contents = ExportContents(
            self._user_embeddings,
            self._item_embeddings,
            self.user_ids,
            self.item_ids,
            self._seen,
            self._index,
        )
        return write_export(directory, contents, self.meta(), overwrite)

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
            )
        except ValueError as err:
            raise ValueError(f"retriever export {Path(directory)}: {err}") from None


def export_retriever(
    module: CatalogueEncoder, datamodule: Any, directory: str | os.PathLike[str], **kwargs: Any
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
        >>> import tempfile
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
