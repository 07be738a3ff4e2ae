"""The maths of training, as plain tensor functions and small modules (no Lightning).

:mod:`~lit_matching.losses.objectives` (the point-, pair- and list-wise losses),
:mod:`~lit_matching.losses.in_batch` (the in-batch softmax and its pieces: accidental-hit
masking, sampling-bias correction), :mod:`~lit_matching.losses.similarity` (cosine, dot,
euclidean), :mod:`~lit_matching.losses.logq` (sampling-bias estimates) and
:mod:`~lit_matching.losses.gather` (the cross-rank gather of in-batch negatives);
:mod:`~lit_matching.losses.faiss_metrics` (the FAISS metric of each similarity, without torch,
for serving).

Import the functions from their modules (``from lit_matching.losses.objectives import
bpr_loss``, or the package root's ``lit_matching.bpr_loss``): this package imports nothing, so
serving can read :mod:`~lit_matching.losses.faiss_metrics` without loading torch.
"""
