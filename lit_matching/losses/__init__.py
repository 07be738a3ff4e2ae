"""The maths of training, as plain tensor functions and small modules (no Lightning).

:mod:`~lit_matching.losses.objectives` (the point-, pair- and list-wise losses),
:mod:`~lit_matching.losses.similarity` (cosine, dot, euclidean),
:mod:`~lit_matching.losses.logq` (sampling-bias correction) and
:mod:`~lit_matching.losses.gather` (the cross-rank gather of in-batch negatives).
"""

from lit_matching.losses.objectives import bce_loss, bpr_loss, softmax_loss

__all__ = ["bce_loss", "bpr_loss", "softmax_loss"]
