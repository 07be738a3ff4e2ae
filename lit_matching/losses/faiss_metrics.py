"""The FAISS metric each similarity searches with (no torch: serving reads it too).

See :mod:`lit_matching.losses.similarity` for why each similarity gets its metric.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["FAISS_METRICS", "FaissMetric", "similarity_metric"]

FaissMetric = Literal["l2", "ip"]

#: The metric of each built-in similarity's index.
FAISS_METRICS: dict[str, FaissMetric] = {"cosine": "ip", "dot": "ip", "euclidean": "l2"}


def similarity_metric(similarity: Any) -> tuple[str, FaissMetric]:
    """``(name, faiss metric)`` of a similarity given by name, or as a ``Similarity`` object.

    Example:
        >>> similarity_metric("euclidean")
        ('euclidean', 'l2')
        >>> similarity_metric("manhattan")
        Traceback (most recent call last):
        ...
        ValueError: unknown similarity 'manhattan'; expected one of ['cosine', 'dot', 'euclidean']
    """
    if not isinstance(similarity, str):
        return similarity.name, similarity.faiss_metric
    if similarity not in FAISS_METRICS:
        raise ValueError(
            f"unknown similarity {similarity!r}; expected one of {sorted(FAISS_METRICS)}"
        )
    return similarity, FAISS_METRICS[similarity]
