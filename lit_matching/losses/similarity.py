"""Similarity functions between user and item embeddings.

Every similarity is a score where higher means closer, with two forms:

* ``matrix(queries, candidates)``: all pairs, ``(B, d) x (N, d) -> (B, N)``;
* ``rowwise(queries, candidates)``: aligned rows, broadcasting over leading dimensions,
  ``(..., d) x (..., d) -> (...)``.

Each similarity also knows how to make vectors ready for a FAISS index whose metric ranks exactly
as the score does (:meth:`Similarity.prepare` and :attr:`Similarity.faiss_metric`):

============  ============================  =======================
similarity    score                         FAISS index
============  ============================  =======================
``cosine``    ``<q/|q|, c/|c|>``            ``IndexFlatIP`` on L2-normalised vectors
``dot``       ``<q, c>``                    ``IndexFlatIP`` on raw vectors
``euclidean`` ``-|q - c|^2``                ``IndexFlatL2`` on raw vectors
============  ============================  =======================

Cosine searches an inner-product index, not an L2 one (on unit vectors ``|q - c|^2 = 2 - 2 cos``
ranks alike): a zero vector, which ``F.normalize`` leaves at zero, then scores 0 as in training,
where an L2 index would rank it like a cosine of 0.5.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor

from lit_matching.losses.faiss_metrics import FAISS_METRICS, FaissMetric

__all__ = ["Cosine", "Dot", "Euclidean", "Similarity", "SimilarityName", "get_similarity"]

SimilarityName = Literal["cosine", "dot", "euclidean"]


class Similarity:
    """Base class: a score between query and candidate vectors, higher = closer.

    A custom score sets :attr:`name` and :attr:`faiss_metric` (the FAISS metric that ranks
    exactly as it does, after :meth:`prepare`) and implements :meth:`matrix` and
    :meth:`rowwise`; an instance can be passed wherever a similarity name is accepted.

    Example:
        >>> import torch
        >>> class Doubled(Similarity):  # twice the dot product: ranks as inner product
        ...     name, faiss_metric = "doubled", "ip"
        ...     def matrix(self, queries, candidates):
        ...         return 2 * queries @ candidates.T
        ...     def rowwise(self, queries, candidates):
        ...         return 2 * (queries * candidates).sum(-1)
        >>> similarity = get_similarity(Doubled())
        >>> similarity.matrix(torch.eye(2), torch.tensor([[1.0, 2.0]])).tolist()
        [[2.0], [4.0]]
        >>> similarity.rowwise(torch.eye(2), torch.tensor([[1.0, 2.0]])).tolist()
        [2.0, 4.0]
    """

    name: ClassVar[str]
    faiss_metric: ClassVar[FaissMetric]

    def prepare(self, x: Tensor) -> Tensor:
        """Return ``x`` as stored in (or searched against) the FAISS index."""
        return x

    def matrix(self, queries: Tensor, candidates: Tensor) -> Tensor:
        """Scores of every query against every candidate: ``(B, d), (N, d) -> (B, N)``."""
        raise NotImplementedError

    def rowwise(self, queries: Tensor, candidates: Tensor) -> Tensor:
        """Scores of aligned rows, broadcasting leading dimensions: ``(..., d) -> (...)``."""
        raise NotImplementedError

    def scaled_matrix(
        self, queries: Tensor, candidates: Tensor, temperature: float | Tensor
    ) -> Tensor:
        """``matrix(queries, candidates) / temperature``, computed as cheaply as the form allows."""
        return self.matrix(queries, candidates) / temperature

    def on_prepared(self) -> Similarity:
        """The same similarity for vectors already passed through :meth:`prepare`.

        Scoring prepared vectors this way skips a second preparation (for cosine: a second
        L2 normalisation, which changes nothing but costs forward and backward passes).
        """
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Dot(Similarity):
    """Inner product ``<q, c>``; FAISS inner-product index on raw vectors.

    Example:
        >>> import torch
        >>> q = torch.tensor([[1.0, 2.0]]); c = torch.tensor([[3.0, 1.0], [0.0, 1.0]])
        >>> Dot().matrix(q, c)
        tensor([[5., 2.]])
    """

    name = "dot"
    faiss_metric: ClassVar[FaissMetric] = FAISS_METRICS["dot"]

    def matrix(self, queries: Tensor, candidates: Tensor) -> Tensor:  # noqa: D102
        return queries @ candidates.transpose(-1, -2)

    def rowwise(self, queries: Tensor, candidates: Tensor) -> Tensor:  # noqa: D102
        return (queries * candidates).sum(-1)

    def scaled_matrix(  # noqa: D102
        self, queries: Tensor, candidates: Tensor, temperature: float | Tensor
    ) -> Tensor:
        # Bilinear: dividing the (B, d) queries spares a pass over the (B, N) scores.
        queries, candidates = self.prepare(queries) / temperature, self.prepare(candidates)
        return queries @ candidates.transpose(-1, -2)


class Cosine(Dot):
    """Cosine similarity; FAISS inner-product index on L2-normalised vectors.

    Example:
        >>> import torch
        >>> q = torch.tensor([[3.0, 4.0]]); c = torch.tensor([[6.0, 8.0], [4.0, -3.0]])
        >>> Cosine().matrix(q, c)
        tensor([[1., 0.]])
    """

    name = "cosine"
    # Inner product of normalised vectors: exactly the cosine, and 0 for a zero vector.
    faiss_metric: ClassVar[FaissMetric] = FAISS_METRICS["cosine"]

    def prepare(self, x: Tensor) -> Tensor:  # noqa: D102
        return F.normalize(x, dim=-1)

    def on_prepared(self) -> Similarity:  # noqa: D102
        return Dot()  # the inner product of unit vectors is their cosine

    def matrix(self, queries: Tensor, candidates: Tensor) -> Tensor:  # noqa: D102
        return super().matrix(self.prepare(queries), self.prepare(candidates))

    def rowwise(self, queries: Tensor, candidates: Tensor) -> Tensor:  # noqa: D102
        return super().rowwise(self.prepare(queries), self.prepare(candidates))


class Euclidean(Similarity):
    """Negative squared euclidean distance ``-|q - c|^2``; FAISS L2 index on raw vectors.

    Example:
        >>> import torch
        >>> q = torch.tensor([[0.0, 0.0]]); c = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
        >>> Euclidean().matrix(q, c)
        tensor([[-25.,  -1.]])
    """

    name = "euclidean"
    faiss_metric: ClassVar[FaissMetric] = FAISS_METRICS["euclidean"]

    def matrix(self, queries: Tensor, candidates: Tensor) -> Tensor:  # noqa: D102
        # |q|^2 - 2<q, c> + |c|^2 is one matmul instead of a (B, N, d) difference tensor.
        q_sq = queries.pow(2).sum(-1, keepdim=True)
        c_sq = candidates.pow(2).sum(-1).unsqueeze(-2)
        return -(q_sq - 2 * queries @ candidates.transpose(-1, -2) + c_sq)

    def rowwise(self, queries: Tensor, candidates: Tensor) -> Tensor:  # noqa: D102
        return -(queries - candidates).pow(2).sum(-1)


_SIMILARITIES: dict[str, type[Similarity]] = {cls.name: cls for cls in (Cosine, Dot, Euclidean)}


def get_similarity(name: str | Similarity) -> Similarity:
    """Return the similarity called ``name`` (``"cosine"``, ``"dot"`` or ``"euclidean"``).

    Example:
        >>> get_similarity("cosine").faiss_metric
        'ip'
        >>> get_similarity("euclidean").faiss_metric
        'l2'
    """
    if isinstance(name, Similarity):
        return name
    try:
        return _SIMILARITIES[name]()
    except KeyError:
        raise ValueError(
            f"unknown similarity {name!r}; expected one of {sorted(_SIMILARITIES)}"
        ) from None
