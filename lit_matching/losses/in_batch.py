"""In-batch softmax: every row contrasts its positive with the whole batch's candidates.

A batch of ``B`` rows, each a query (user) vector and its positive item, plus ``M`` candidate
vectors shared by all rows: typically every positive of the batch, then every sampled negative
(:mod:`~lit_matching.losses.gather` makes that the global batch under DDP). Row ``b``'s own
positive is candidate column ``offset + b``; every other candidate is a negative of the row.

The loss is built from one-job pieces that work in place on the ``(B, M)`` logits, after TFRS's
``RemoveAccidentalHits`` and ``SamplingProbabilityCorrection``:

* :func:`correct_sampling_bias_` subtracts each candidate's ``log E[count]`` (log-Q correction,
  :mod:`~lit_matching.losses.logq`) from every column but the rows' own positives;
* :func:`remove_accidental_hits_` sets ``-inf`` where a candidate is the row's positive item
  (another row's positive or a sampled negative equal to it), the own column excepted;
* :func:`in_batch_logits` composes them with the scaled similarity matrix;
* :func:`in_batch_softmax_loss` is the cross-entropy of those logits with the own column as
  the target;
* :func:`in_batch_cosine_contrastive_loss` is SimpleX's margin loss
  (:func:`~lit_matching.losses.objectives.cosine_contrastive_loss`) over the same candidates,
  on the scores themselves (no temperature, no log-Q correction).

Requirements: ``queries`` ``(B, d)`` and ``candidates`` ``(M, d)`` scored by ``similarity``
(already prepared, e.g. L2-normalised for cosine: pass the similarity's
:meth:`~lit_matching.losses.similarity.Similarity.on_prepared`), ``candidate_ids`` ``(M,)`` and
``positive_ids`` ``(B,)`` item ids, and ``candidate_ids[offset + b] == positive_ids[b]``.

Relations: :func:`~lit_matching.losses.objectives.softmax_loss` over explicitly built
``(B, 1 + M)`` logits (positive in column 0, the own column masked) is the same loss, at the
price of copies of the ``(B, M)`` matrix; the tests hold that slow reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_matching.losses.objectives import check_temperature, cosine_contrastive_loss
from lit_matching.losses.similarity import Similarity, get_similarity

__all__ = [
    "correct_sampling_bias_",
    "in_batch_cosine_contrastive_loss",
    "in_batch_logits",
    "in_batch_softmax_loss",
    "remove_accidental_hits_",
]


def correct_sampling_bias_(logits: Tensor, log_expected_counts: Tensor, offset: int = 0) -> Tensor:
    """Subtract ``log_expected_counts`` from every column of ``logits`` but the own positives.

    In place. Row ``b``'s own positive (column ``offset + b``) is scored exactly, not as a
    sampled negative, so it keeps its logit.

    Args:
        logits: ``(B, M)`` logits (already divided by the temperature).
        log_expected_counts: ``(M,)`` ``log E[count]`` of each candidate among a row's
            negatives (:func:`~lit_matching.losses.logq.log_expected_count`).
        offset: Column of row 0's own positive.

    Returns:
        ``logits``, corrected.

    Example:
        >>> logits = torch.zeros(2, 3)
        >>> correct_sampling_bias_(logits, torch.tensor([1.0, 2.0, 3.0]), offset=1)
        tensor([[-1.,  0., -3.],
                [-1., -2.,  0.]])
    """
    logits.sub_(log_expected_counts)
    own = torch.arange(offset, offset + len(logits), device=logits.device)
    logits.diagonal(offset).add_(log_expected_counts[own])
    return logits


def remove_accidental_hits_(
    logits: Tensor, candidate_ids: Tensor, positive_ids: Tensor, offset: int = 0
) -> Tensor:
    """Set ``-inf`` where a candidate is the row's positive item, except the own column.

    In place. Such a candidate (the same item as another row's positive, or a sampled negative
    equal to the positive) is no negative of the row: left in, the loss would push the
    positive away from itself.

    Args:
        logits: ``(B, M)`` logits.
        candidate_ids: ``(M,)`` item id of each column.
        positive_ids: ``(B,)`` item id of each row's positive.
        offset: Column of row 0's own positive (left as is).

    Returns:
        ``logits``, masked.

    Example:
        >>> remove_accidental_hits_(torch.zeros(2, 3), torch.tensor([4, 4, 5]),
        ...                         torch.tensor([4, 4]))
        tensor([[0., -inf, 0.],
                [-inf, 0., 0.]])
    """
    hits = candidate_ids.unsqueeze(0) == positive_ids.unsqueeze(1)
    hits.diagonal(offset).fill_(False)
    return logits.masked_fill_(hits, float("-inf"))


def in_batch_logits(
    queries: Tensor,
    candidates: Tensor,
    candidate_ids: Tensor,
    positive_ids: Tensor,
    offset: int = 0,
    temperature: float | Tensor = 1.0,
    log_expected_counts: Tensor | None = None,
    similarity: Similarity | str = "dot",
) -> Tensor:
    """``(B, M)`` logits of every row against every candidate, ready for the cross-entropy.

    ``similarity(q_b, c_j) / temperature``, minus ``log_expected_counts[j]`` (when given) off
    the own column, and ``-inf`` at accidental hits. The masking comes after the division: a
    learned temperature's gradient would be NaN through ``-inf / t``. Every step after the
    matrix product is done in place.

    Args:
        queries: ``(B, d)`` query (user) vectors.
        candidates: ``(M, d)`` candidate (item) vectors.
        candidate_ids: ``(M,)`` item id of each candidate.
        positive_ids: ``(B,)`` item id of each row's positive.
        offset: Column of row 0's own positive (row ``b``'s is ``offset + b``).
        temperature: Divides the scores; a positive float or a scalar tensor.
        log_expected_counts: ``(M,)`` log-Q correction of each candidate, or ``None``.
        similarity: Scores the vectors as they are (``"dot"``, ``"euclidean"``, or a
            :class:`~lit_matching.losses.similarity.Similarity`).

    Returns:
        The ``(B, M)`` logits.

    Example:
        >>> queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> in_batch_logits(queries, queries, torch.tensor([3, 3]), torch.tensor([3, 3]),
        ...                 temperature=0.5)
        tensor([[2., -inf],
                [-inf, 2.]])
    """
    check_temperature(temperature)
    logits = get_similarity(similarity).scaled_matrix(queries, candidates, temperature)
    if log_expected_counts is not None:
        correct_sampling_bias_(logits, log_expected_counts, offset)
    return remove_accidental_hits_(logits, candidate_ids, positive_ids, offset)


def in_batch_softmax_loss(
    queries: Tensor,
    candidates: Tensor,
    candidate_ids: Tensor,
    positive_ids: Tensor,
    offset: int = 0,
    temperature: float | Tensor = 1.0,
    log_expected_counts: Tensor | None = None,
    similarity: Similarity | str = "dot",
) -> Tensor:
    """In-batch softmax cross-entropy, each row's own column as the target.

    ``loss_b = -log softmax(in_batch_logits(...)[b])[offset + b]``, averaged over the rows:
    the sampled-softmax / InfoNCE loss of two-tower retrieval (Yi et al., RecSys 2019) with
    the batch as the sample. The arguments are those of :func:`in_batch_logits`.

    Returns:
        The mean over rows, a scalar.

    Example:
        Two rows, each scoring its own positive 1 and the other row's 0 (dot product): the
        loss is ``log(1 + e^-1) = 0.313``; at temperature 0.5 ``log(1 + e^-2) = 0.127``.

        >>> eye = torch.eye(2)
        >>> ids = torch.tensor([3, 4])
        >>> round(in_batch_softmax_loss(eye, eye, ids, ids).item(), 3)
        0.313
        >>> round(in_batch_softmax_loss(eye, eye, ids, ids, temperature=0.5).item(), 3)
        0.127
    """
    logits = in_batch_logits(
        queries,
        candidates,
        candidate_ids,
        positive_ids,
        offset,
        temperature,
        log_expected_counts,
        similarity,
    )
    own = torch.arange(offset, offset + len(logits), device=logits.device)
    return F.cross_entropy(logits, own)


def in_batch_cosine_contrastive_loss(
    queries: Tensor,
    candidates: Tensor,
    candidate_ids: Tensor,
    positive_ids: Tensor,
    offset: int = 0,
    margin: float = 0.9,
    negative_weight: float = 150.0,
    similarity: Similarity | str = "dot",
) -> Tensor:
    """SimpleX's cosine contrastive loss with the batch's candidates as each row's negatives.

    Row ``b``'s positive is column ``offset + b``; its negatives are every other column except
    accidental hits (candidates equal to its positive item), which are left out of the mean
    over negatives. The other arguments are those of :func:`in_batch_logits`; pass unit
    vectors scored by ``"dot"`` (or ``"cosine"``) for the cosines the margin is meant for.

    Returns:
        The mean over rows, a scalar.

    Example:
        Two orthogonal rows, each its own positive (cosine 1, no cost) and the other's
        negative at cosine 0: with margin -0.5 each negative costs 0.5, weighted by 2: 1.0.

        >>> eye = torch.eye(2)
        >>> ids = torch.tensor([3, 4])
        >>> in_batch_cosine_contrastive_loss(eye, eye, ids, ids, margin=-0.5, negative_weight=2.0)
        tensor(1.)
    """
    scores = in_batch_logits(
        queries, candidates, candidate_ids, positive_ids, offset, 1.0, None, similarity
    )
    own = scores.diagonal(offset).clone()
    scores.diagonal(offset).fill_(float("-inf"))  # in place: the positive is no negative
    return cosine_contrastive_loss(own, scores, margin, negative_weight)
