"""The maths of training, as plain tensor functions and small modules (no Lightning).

:mod:`~lit_matching.losses.objectives` (the point-, pair- and list-wise losses),
:mod:`~lit_matching.losses.in_batch` (the in-batch softmax and its pieces: accidental-hit
masking, sampling-bias correction), :mod:`~lit_matching.losses.similarity` (cosine, dot,
euclidean), :mod:`~lit_matching.losses.logq` (sampling-bias estimates) and
:mod:`~lit_matching.losses.gather` (the cross-rank gather of in-batch negatives).
"""

from lit_matching.losses.in_batch import in_batch_softmax_loss
from lit_matching.losses.objectives import bce_loss, bpr_loss, softmax_loss

__all__ = ["bce_loss", "bpr_loss", "in_batch_softmax_loss", "softmax_loss"]
