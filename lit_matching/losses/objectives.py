"""Losses of the three training modes, as pure functions of scores.

Each function takes similarity scores (higher = closer) and a ``temperature`` that divides
them before the loss, so ``scale = 1 / temperature``. Scores from a cosine similarity lie in
``[-1, 1]``; a temperature well below 1 (e.g. 0.05-0.2) is what lets them express confident
probabilities.

* point-wise: :func:`bce_loss`, binary cross-entropy of ``(user, item, label)`` scores;
* pair-wise: :func:`bpr_loss`, Bayesian personalised ranking of positive over negative;
* list-wise: :func:`softmax_loss`, sampled-softmax cross-entropy with the positive in column 0,
  and :func:`cosine_contrastive_loss`, SimpleX's margin loss on cosine scores (no temperature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bce_loss",
    "bpr_loss",
    "check_temperature",
    "cosine_contrastive_loss",
    "softmax_loss",
]


def check_temperature(temperature: float | Tensor) -> None:
    """Raise ``ValueError`` for a float temperature that is not positive (tensors pass)."""
    if not isinstance(temperature, Tensor) and not temperature > 0:
        raise ValueError(f"temperature has to be positive, got {temperature}")


def bce_loss(scores: Tensor, labels: Tensor, temperature: float | Tensor = 1.0) -> Tensor:
    """Point-wise binary cross-entropy on ``scores / temperature`` taken as logits.

    Uses :func:`torch.nn.functional.binary_cross_entropy_with_logits`, which is stable for
    large logits (unlike ``log(sigmoid(x))``).

    Args:
        scores: Similarity of each ``(user, item)`` pair, any shape.
        labels: 1 for an observed interaction, 0 for a sampled negative; same shape.
        temperature: Divides the scores before the sigmoid.

    Returns:
        The mean loss, a scalar.

    Example:
        >>> bce_loss(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]))
        tensor(0.2201)
    """
    check_temperature(temperature)
    return F.binary_cross_entropy_with_logits(scores / temperature, labels.to(scores.dtype))


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor, temperature: float | Tensor = 1.0) -> Tensor:
    """Pair-wise BPR loss ``mean(-log sigmoid((s_pos - s_neg) / temperature))``.

    Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback" (UAI 2009).
    Computed with :func:`torch.nn.functional.logsigmoid`, which stays finite for any gap.

    Args:
        pos_scores: Scores of the positive items, shape ``(B,)`` or ``(B, 1)``.
        neg_scores: Scores of the negatives, shape ``(B,)`` or ``(B, N)``; every negative of
            a row is paired with that row's positive.
        temperature: Divides the score gap.

    Returns:
        The mean over all (positive, negative) pairs, a scalar.

    Example:
        >>> bpr_loss(torch.tensor([1.0]), torch.tensor([[0.0, 1.0]]))
        tensor(0.5032)
    """
    check_temperature(temperature)
    if neg_scores.dim() > pos_scores.dim():
        pos_scores = pos_scores.unsqueeze(-1)
    return -F.logsigmoid((pos_scores - neg_scores) / temperature).mean()


def softmax_loss(logits: Tensor, temperature: float | Tensor = 1.0) -> Tensor:
    """List-wise softmax cross-entropy with the positive in column 0.

    ``loss_b = -log(exp(l_b0 / t) / sum_j exp(l_bj / t))``: the sampled-softmax /
    InfoNCE loss of two-tower retrieval (Yi et al., RecSys 2019). Columns set to ``-inf``
    (e.g. masked accidental hits) drop out of the denominator. Computed through
    :func:`torch.nn.functional.cross_entropy` (log-sum-exp), so it stays finite for logits of
    order ``1 / temperature`` even at ``temperature=0.01``.

    Args:
        logits: ``(B, 1 + N)`` scores; column 0 is each row's positive, the rest negatives.
        temperature: Divides the logits; ``scale = 1 / temperature``.

    Returns:
        The mean over rows, a scalar.

    Example:
        The worked case: one positive at 1 and three negatives at -1 gives
        ``log(1 + 3 e^-2) = 0.341``; at temperature 0.2 the gap becomes 10 and the loss
        ``log(1 + 3 e^-10) = 1.36e-4``.

        >>> logits = torch.tensor([[1.0, -1.0, -1.0, -1.0]])
        >>> round(softmax_loss(logits).item(), 3)
        0.341
        >>> f"{softmax_loss(logits, temperature=0.2).item():.2e}"
        '1.36e-04'
    """
    check_temperature(temperature)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    # Masked columns stay -inf without being divided: the gradient of -inf / t with respect to
    # a learned t would be NaN even where the softmax gives the column no weight.
    masked = torch.isneginf(logits)
    scaled = (logits.masked_fill(masked, 0.0) / temperature).masked_fill(masked, float("-inf"))
    return F.cross_entropy(scaled, target)


def cosine_contrastive_loss(
    pos_scores: Tensor, neg_scores: Tensor, margin: float = 0.9, negative_weight: float = 150.0
) -> Tensor:
    """SimpleX's cosine contrastive loss: pull the positive to 1, push negatives below a margin.

    ``loss_b = (1 - s_b,pos) + negative_weight * mean_j max(0, s_b,j - margin)``, averaged
    over the rows (Mao et al., "SimpleX: A Simple and Strong Baseline for Collaborative
    Filtering", CIKM 2021). Meant for cosine scores in ``[-1, 1]``: only negatives scoring above
    ``margin`` are pushed, so a high margin ignores the many easy ones, and ``negative_weight``
    balances their term against the positive's. No temperature and no softmax: every negative
    counts on its own. Negatives scored ``-inf`` (masked, e.g. accidental hits) drop out of the
    mean, which runs over each row's remaining negatives (a row with none has no negative
    term).

    Args:
        pos_scores: ``(B,)`` score of each row's positive.
        neg_scores: ``(B, N)`` scores of the row's negatives; ``-inf`` for masked ones.
        margin: Negatives scoring at most this much cost nothing.
        negative_weight: Weight of the mean negative term against the positive term.

    Returns:
        The mean over rows, a scalar.

    Example:
        A positive at 0.5 costs 0.5; of the negatives (0.95, 0.2, masked) only 0.95 passes the
        margin 0.9, by 0.05, averaged over the 2 unmasked ones and weighted by 10: 0.25.

        >>> neg = torch.tensor([[0.95, 0.2, float("-inf")]])
        >>> round(cosine_contrastive_loss(torch.tensor([0.5]), neg, 0.9, 10.0).item(), 4)
        0.75
    """
    if negative_weight < 0:
        raise ValueError(f"negative_weight has to be non-negative, got {negative_weight}")
    if neg_scores.dim() != 2 or pos_scores.shape != neg_scores.shape[:1]:
        raise ValueError(
            f"expected pos_scores (B,) and neg_scores (B, N), got {tuple(pos_scores.shape)} "
            f"and {tuple(neg_scores.shape)}"
        )
    valid = ~torch.isneginf(neg_scores)
    # where(), not relu(-inf): a masked column has neither a value nor a gradient.
    excess = torch.where(valid, F.relu(neg_scores - margin), neg_scores.new_zeros(()))
    per_row = excess.sum(dim=1) / valid.sum(dim=1).clamp(min=1)
    return (1.0 - pos_scores).mean() + negative_weight * per_row.mean()
