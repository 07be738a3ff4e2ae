"""A retriever from a trained model: encode the catalogue, export the towers.

This is the training side of serving (it needs torch and the trained module); the
:class:`~lit_matching.serving.retriever.Retriever` it builds serves without them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lit_matching.retrieval.encoding import CatalogueEncoder, encode_catalogue
from lit_matching.retrieval.search import EXACT
from lit_matching.serving.retriever import DEFAULT_K, Retriever
from lit_matching.serving.tower_bundle import serving_towers

__all__ = ["export_retriever", "retriever_from_module"]


def retriever_from_module(
    module: CatalogueEncoder,
    datamodule: Any,
    index: str = EXACT,
    search_params: Mapping[str, float] | None = None,
    batch_size: int = 4096,
    default_k: int = DEFAULT_K,
    use_gpu: bool | None = None,
    towers: bool = True,
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
        towers: Also export the user tower (and an item tower that reads side features) to
            ONNX, with what serving needs to feed them (see
            :func:`~lit_matching.serving.tower_bundle.serving_towers`), and keep the items'
            training popularity: then the retriever serves fresh histories, unknown users and
            new items. ``False`` keeps only the vectors (faster; known users only).

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
    served = serving_towers(module, datamodule, user_features) if towers else (None, None)
    return Retriever(
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
        user_tower=served[0],
        item_tower=served[1],
        popularity=np.asarray(datamodule.item_counts, dtype=np.float64) if towers else None,
    )


def export_retriever(
    module: CatalogueEncoder, datamodule: Any, directory: str | os.PathLike[str], **kwargs: Any
) -> Path:
    """Encode ``datamodule``'s users and items with ``module`` and export them to ``directory``.

    Args:
        module: The trained module (see :func:`retriever_from_module`).
        datamodule: The data it was trained on.
        directory: Where to write the export.
        **kwargs: ``overwrite`` goes to :meth:`Retriever.export`, everything else (``index``,
            ``search_params``, ``batch_size``, ...) to :func:`retriever_from_module`.

    Returns:
        The path of the export (open it with :meth:`Retriever.load`).

    Example:
        >>> from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule
        >>> import pandas as pd
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
        ['index.faiss', 'item_embeddings.npy', 'item_ids.json', 'item_popularity.npy',
         'meta.json', 'seen_items.npz', 'user_embeddings.npy', 'user_ids.json',
         'user_tower.npz', 'user_tower.onnx']
        ['user_id', 'rank', 'item_id', 'score']
    """
    overwrite = kwargs.pop("overwrite", False)
    return retriever_from_module(module, datamodule, **kwargs).export(directory, overwrite)
