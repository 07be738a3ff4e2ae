"""New and changed items: encode them with the exported item tower, without retraining.

:func:`with_items` returns a retriever whose catalogue holds the given items, added or (same
raw id) replaced, each encoded from its side features by the exported item tower (a
:class:`~lit_matching.towers.feature.FeatureTower`); the vectors, index, id map, stored
features and popularity change together. An item tower that is an id embedding cannot encode
an item it never saw: that is an error saying so.

Items added here are not in the user tower's own item table, so they cannot be part of a
history the tower reads: a history naming one drops it (and counts it), as an unknown item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pandas as pd

from lit_matching.data.feature_values import is_missing
from lit_matching.data.interactions import id_kind
from lit_matching.data.item_sets import ItemSets
from lit_matching.retrieval.search import build_index
from lit_matching.serving.raw_ids import unique_ids

if TYPE_CHECKING:
    from lit_matching.serving.retriever import Retriever

__all__ = ["with_items"]


def with_items(
    retriever: Retriever,
    items: pd.DataFrame | Sequence[Mapping[str, Any]],
    id_col: str = "item_id",
) -> Retriever:
    """``retriever`` with ``items`` added, or replaced where their raw id is known.

    Args:
        retriever: The retriever (left unchanged).
        items: One row per item: its raw id in ``id_col`` and side-feature values by feature
            name. A missing value (absent, ``None``, NaN) keeps a replaced item's stored value
            and is "unknown" for a new item.
        id_col: The column of raw item ids.

    Returns:
        A new :class:`~lit_matching.serving.retriever.Retriever`.

    Raises:
        ValueError: The item tower is an id embedding (or absent); no ``id_col``; an id
            repeated or not a string or number; a feature the tower does not read, or a
            value it cannot encode (each named).
    """
    tower = retriever.item_tower
    if tower is None or not tower.spec.encodes_unknown:
        raise ValueError(
            "this export's item tower reads only item ids (an id embedding), so it cannot "
            "encode a new or changed item; train with item side features (a FeatureTower "
            "item tower) to add items without retraining"
        )
    frame = pd.DataFrame(list(items) if not isinstance(items, pd.DataFrame) else items)
    raw_ids = _raw_ids(frame, id_col)
    features = [
        {
            str(name): value
            for name, value in row.items()
            if name != id_col and not is_missing(value)
        }
        for row in frame.to_dict("records")
    ]
    tower.check_features({name: None for name in frame.columns if name != id_col})
    known = retriever.item_positions(raw_ids, keep_unknown=True)
    new = np.flatnonzero(known < 0)
    rows = known.copy()
    rows[new] = retriever.num_items + np.arange(len(new))
    inputs = tower.inputs(np.where(known >= 0, known, -1), None, features)
    vectors = tower.runner(inputs)
    embeddings = np.concatenate(
        [retriever.item_embeddings, np.zeros((len(new), retriever.dimension), np.float32)]
    )
    embeddings[rows] = vectors
    return _retriever_like(
        retriever,
        embeddings,
        [*retriever.item_ids, *(raw_ids[i] for i in new)],
        tower.with_rows(rows, inputs),
        np.concatenate([retriever.popularity, np.zeros(len(new))]),
    )


def _raw_ids(frame: pd.DataFrame, id_col: str) -> list[Any]:
    if id_col not in frame.columns:
        raise ValueError(f"the items have no {id_col!r} column (columns: {list(frame.columns)})")
    raw_ids = [value.item() if isinstance(value, np.generic) else value for value in frame[id_col]]
    for row, value in enumerate(raw_ids):
        if id_kind(value) is None:
            raise ValueError(f"item {row}: {id_col} {value!r} is not a string or finite number")
    unique_ids(raw_ids, "item")  # raises naming the repeated ones
    return raw_ids


def _retriever_like(
    retriever: Retriever,
    items: np.ndarray,
    item_ids: list[Any],
    item_tower: Any,
    popularity: np.ndarray,
) -> Retriever:
    """A retriever as ``retriever``, with another catalogue (users and their tower unchanged)."""
    seen = retriever.seen
    if seen is not None:  # the same sets, over a longer catalogue
        seen = ItemSets(seen.indptr, seen.indices, len(items))
    return type(retriever)(
        retriever.user_embeddings,
        items,
        retriever.user_ids,
        item_ids,
        similarity=retriever.similarity,
        seen=seen,
        index=retriever.index_spec,
        search_params=retriever.search_params,
        default_k=retriever.default_k,
        faiss_index=_index_over(retriever, items),
        user_tower=retriever.user_tower,
        item_tower=item_tower,
        popularity=popularity,
    )


def _index_over(retriever: Retriever, items: np.ndarray) -> faiss.Index:
    """An index like the retriever's over ``items``: a trained one keeps its training."""
    index = retriever.index
    if not isinstance(index, faiss.IndexFlat) and index.is_trained:
        rebuilt = faiss.clone_index(index)  # e.g. IVF: keep the coarse quantiser, re-add
        rebuilt.reset()
        rebuilt.add(items)
        return rebuilt
    return build_index(items, retriever.metric, retriever.index_spec, retriever.search_params)
