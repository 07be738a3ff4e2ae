"""Encoding many users or items with a tower, batch by batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = ["encode_in_batches"]


def encode_in_batches(
    encode: Callable[[Mapping[str, Tensor]], Tensor],
    features: Mapping[str, Tensor],
    device: torch.device | str,
    batch_size: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``encode`` applied to row slices of ``features``, without gradients: a float32 array.

    Args:
        encode: e.g. ``module.encode_users``; takes a feature dict, returns ``(B, d)``.
        features: Tensors with one row per entity, e.g. ``{"ids": ..., "history": ...}``.
        device: Where ``encode`` runs; each batch is moved there.
        batch_size: Rows per call.
        progress: Called with the number of rows of each batch once it is encoded (e.g. a
            progress bar's ``update``; see :mod:`lit_matching.utils.progress`).

    Example:
        >>> table = torch.nn.Embedding(5, 2)
        >>> vectors = encode_in_batches(lambda f: table(f["ids"]), {"ids": torch.arange(5)},
        ...                             "cpu", batch_size=2)
        >>> vectors.shape, vectors.dtype
        ((5, 2), dtype('float32'))
    """
    if batch_size < 1:
        raise ValueError(f"batch_size has to be a positive integer, got {batch_size!r}")
    rows = len(next(iter(features.values())))
    chunks = []
    with torch.no_grad():
        for start in range(0, rows, batch_size):
            batch = {k: v[start : start + batch_size].to(device) for k, v in features.items()}
            chunks.append(encode(batch).float().cpu().numpy())
            if progress is not None:
                progress(len(chunks[-1]))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
