"""Recommendations for anyone: a known user, a fresh history, side features, or nobody known.

:func:`answer` serves a batch of :class:`UserRequest` with one tower run and one index search:

* a known user with nothing new gets the exported (stored) vector, as ``Retriever.recommend``;
* a history (raw item ids, newest last) and/or feature values give a vector computed by the
  exported user tower (:class:`~lit_matching.serving.serving_towers.ServingTower`); what a
  known user does not give is taken from what was stored for them, an unknown user has none;
* when no vector can be computed (nothing known of the user, or a tower that is an id
  embedding), the most popular items: the answer's ``source`` says ``"popular"``.

Unknown raw item ids in a history are dropped, and named in the answer, never fatal; so are
items the user tower cannot read (added to the export after training). The history's items are
never recommended, nor the user's seen items (``exclude_seen``), nor ``exclude``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lit_matching.data.item_sets import ItemSets
from lit_matching.retrieval.search import search_top_k
from lit_matching.retrieval.validation import check_k

if TYPE_CHECKING:
    from lit_matching.serving.retriever import Retriever

__all__ = ["Recommendation", "UserRequest", "answer"]

STORED, COMPUTED, POPULAR = "stored", "computed", "popular"


@dataclass(frozen=True)
class UserRequest:
    """What is known of a user to recommend for.

    Args:
        user_id: A raw user id (known or not), or ``None``.
        history: Raw item ids the user interacted with, oldest first; replaces the stored
            history of a known user. ``None``: the stored one (none for an unknown user).
        features: Raw side-feature values by name, replacing the stored ones.
        k: Number of items (default: the retriever's ``default_k``).
        exclude: Raw item ids never to recommend (unknown ones are ignored).
        exclude_seen: Never recommend the items a known user was exported with.
    """

    user_id: Any = None
    history: Sequence[Any] | None = None
    features: Mapping[str, Any] | None = None
    k: int | None = None
    exclude: Sequence[Any] = ()
    exclude_seen: bool = True


@dataclass(frozen=True)
class Recommendation:
    """The answer to a :class:`UserRequest`.

    Attributes:
        user_id: As asked.
        item_ids: Raw item ids, best first.
        scores: Their scores (higher = closer; for ``"popular"``: training interactions).
        source: ``"stored"`` (the exported user vector), ``"computed"`` (by the user tower
            from the request) or ``"popular"`` (the fallback: nothing usable was known).
        dropped_items: Raw ids of the history that were dropped: unknown items, or items the
            user tower cannot read.
    """

    user_id: Any
    item_ids: list[Any]
    scores: list[float]
    source: str
    dropped_items: list[Any] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The answer as a JSON object (``dropped_items`` counted as ``num_dropped``)."""
        return {
            "user_id": self.user_id,
            "items": self.item_ids,
            "scores": self.scores,
            "source": self.source,
            "num_dropped": len(self.dropped_items),
            "dropped_items": self.dropped_items,
        }


@dataclass
class _Plan:
    """One request resolved to positions: the user, the history kept, what to exclude."""

    user: int
    history: np.ndarray | None
    dropped: list[Any]
    excluded: np.ndarray
    source: str
    k: int


def answer(retriever: Retriever, requests: Sequence[UserRequest]) -> list[Recommendation]:
    """Recommendations for each request, in order (see the module docstring).

    Raises:
        ValueError: A feature the user tower does not read, a feature value it cannot
            encode, or a bad ``k`` (naming it).
    """
    plans = [_plan(retriever, request) for request in requests]
    vectors = _user_vectors(retriever, requests, plans)
    results: list[Recommendation] = []
    searched = [row for row, plan in enumerate(plans) if plan.source != POPULAR]
    found = _search(retriever, plans, searched, vectors)
    for row, (request, plan) in enumerate(zip(requests, plans, strict=True)):
        items, scores = found[row] if row in found else _popular(retriever, plan)
        keep = items >= 0
        results.append(
            Recommendation(
                user_id=request.user_id,
                item_ids=retriever.raw_item_ids(items[keep]),
                scores=[float(score) for score in scores[keep]],
                source=plan.source,
                dropped_items=plan.dropped,
            )
        )
    return results


def _plan(retriever: Retriever, request: UserRequest) -> _Plan:
    k = min(check_k(retriever.default_k if request.k is None else request.k), retriever.num_items)
    user = retriever.user_position(request.user_id)
    tower = retriever.user_tower
    if request.features and tower is not None:
        tower.check_features(request.features)
    elif request.features:
        raise ValueError("this export has no user tower to read features with")
    history: np.ndarray | None = None
    dropped: list[Any] = []
    if request.history is not None:
        history, dropped = _history_positions(retriever, request.history)
    excluded = [retriever.item_positions(request.exclude), *([] if history is None else [history])]
    if user >= 0 and request.exclude_seen and retriever.seen is not None:
        excluded.append(retriever.seen.select(np.array([user])).indices)
    if history is not None and tower is not None:  # items the tower cannot read are dropped
        readable = history < tower.spec.history_pad
        dropped += retriever.raw_item_ids(history[~readable])
        history = history[readable]
    return _Plan(
        user,
        history,
        dropped,
        np.concatenate(excluded),
        _source(retriever, request, user, history),
        k,
    )


def _source(
    retriever: Retriever, request: UserRequest, user: int, history: np.ndarray | None
) -> str:
    tower = retriever.user_tower
    reads_history = tower is not None and tower.spec.history_length > 0
    informative = bool(request.features) or (reads_history and history is not None)
    if user >= 0:
        return COMPUTED if informative and tower is not None else STORED
    usable = bool(request.features) or (reads_history and history is not None and len(history) > 0)
    return COMPUTED if tower is not None and tower.spec.encodes_unknown and usable else POPULAR


def _history_positions(
    retriever: Retriever, history: Sequence[Any]
) -> tuple[np.ndarray, list[Any]]:
    positions = retriever.item_positions(history, keep_unknown=True)
    dropped = [raw for raw, position in zip(history, positions, strict=True) if position < 0]
    return positions[positions >= 0], dropped


def _user_vectors(
    retriever: Retriever, requests: Sequence[UserRequest], plans: Sequence[_Plan]
) -> dict[int, np.ndarray]:
    """Each searched request's vector: stored, or computed in one run of the user tower."""
    vectors = {
        row: retriever.user_embeddings[plan.user]
        for row, plan in enumerate(plans)
        if plan.source == STORED
    }
    computed = [row for row, plan in enumerate(plans) if plan.source == COMPUTED]
    if computed:
        assert retriever.user_tower is not None
        found = retriever.user_tower.encode(
            np.array([plans[row].user for row in computed], dtype=np.int64),
            [plans[row].history for row in computed],
            [requests[row].features for row in computed],
        )
        vectors |= dict(zip(computed, found, strict=True))
    return vectors


def _search(
    retriever: Retriever,
    plans: Sequence[_Plan],
    rows: Sequence[int],
    vectors: dict[int, np.ndarray],
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    if not rows:
        return {}
    exclude = ItemSets.from_pairs(
        np.repeat(np.arange(len(rows)), [len(plans[row].excluded) for row in rows]),
        np.concatenate([plans[row].excluded for row in rows]).astype(np.int64),
        len(rows),
        retriever.num_items,
    )
    k = max(plans[row].k for row in rows)
    queries = np.stack([vectors[row] for row in rows])
    items, scores = search_top_k(retriever.index, queries, k, exclude)
    return {
        row: (items[i, : plans[row].k], scores[i, : plans[row].k]) for i, row in enumerate(rows)
    }


def _popular(retriever: Retriever, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """The most popular items not excluded (ties: lower position first)."""
    order = retriever.popular_order
    candidates = order[: plan.k + len(plan.excluded)]
    items = candidates[~np.isin(candidates, plan.excluded)][: plan.k]
    return items, retriever.popularity[items].astype(np.float32)
