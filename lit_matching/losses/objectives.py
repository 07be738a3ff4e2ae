"""Losses of the three training modes, as pure functions of scores.

Each function takes similarity scores (higher = closer) and a ``temperature`` that divides
them before the loss, so ``scale = 1 / temperature``. Scores from a cosine similarity lie in
``[-1, 1]``; a temperature well below 1 (e.g. 0.05-0.2) is what lets them express confident
probabilities.

* point-wise: :func:`bce_loss`, binary cross-entropy of ``(user, item, label)`` scores;
* pair-wise: :func:`bpr_loss`, Bayesian personalised ranking of positive over negative;
* list-wise: :func:`softmax_loss`, sampled-softmax cross-entropy with the positive in column 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bce_loss", "bpr_loss", "check_temperature", "softmax_loss"]


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
