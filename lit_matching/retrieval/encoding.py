"""Encoding users and items with a trained model: batch by batch, in eval mode, no gradients.

:func:`encode_catalogue` is the one place the catalogue is encoded: by the evaluator
(:class:`~lit_matching.retrieval.evaluation.RetrievalEvaluator`), by serving
(:meth:`~lit_matching.serving.retriever.Retriever.from_module`) and by the recommendation table
(:func:`~lit_matching.callbacks.recommendation_table.recommendation_table`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from lit_matching.losses.similarity import Similarity
from lit_matching.utils.progress import ProgressBars, progress_bar

__all__ = ["CatalogueEncoder", "encode_catalogue", "encode_in_batches", "eval_mode"]


class CatalogueEncoder(Protocol):
    """What encoding needs of a model (:class:`~lit_matching.modes.base.MatchingModule` has it).

    ``encode_users`` / ``encode_items`` take a feature dict (``{"ids": ...}``, plus e.g.
    ``"history"`` for users) and return ``(B, d)`` vectors (``(B, K, d)`` for ``K`` interests).
    """

    similarity: Similarity
    training: bool

    def encode_users(self, users: Any) -> Tensor:
        """Vectors of a batch of users."""

    def encode_items(self, items: Any) -> Tensor:
        """Vectors of a batch of items."""

    def train(self, mode: bool = True) -> Any:
        """Set training (``True``) or eval (``False``) mode, as :meth:`torch.nn.Module.train`."""

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The parameters (where they are is where encoding runs by default)."""


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


@contextmanager
def eval_mode(module: Any) -> Iterator[None]:
    """``module`` in eval mode (no dropout) inside the block; afterwards each submodule's own mode.

    Restoring every submodule's mode, not ``module.train(was_training)``, keeps a part the
    user had put in eval mode (e.g. a frozen tower) in eval mode.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
        >>> _ = model[1].eval()  # frozen by its owner
        >>> with eval_mode(model):
        ...     print(model.training, model[0].training)
        False False
        >>> model.training, model[0].training, model[1].training
        (True, True, False)
    """
    was_training = module.training
    modes = (
        [(part, part.training) for part in module.modules()]
        if isinstance(module, nn.Module)
        else []
    )
    module.train(False)
    try:
        yield
    finally:
        module.train(was_training)
        for part, mode in modes:
            part.training = mode


def module_device(module: Any) -> torch.device:
    """Where ``module`` runs: its ``device`` attribute, else that of its first parameter."""
    device = getattr(module, "device", None)
    if device is None:
        device = next(module.parameters(), torch.empty(0)).device
    return device


def encode_catalogue(
    module: CatalogueEncoder,
    user_features: Mapping[str, Tensor],
    num_items: int,
    device: torch.device | str | None = None,
    batch_size: int = 4096,
    progress: ProgressBars | None = None,
    progress_label: str = "retrieval",
) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of some users and of every item, encoded in eval mode without gradients.

    Args:
        module: The trained model (see :class:`CatalogueEncoder`); left in the mode it was
            in, each submodule's included (see :func:`eval_mode`).
        user_features: One row per user to encode, e.g. ``{"ids": ..., "history": ...}``.
        num_items: Items ``0 .. num_items - 1`` are encoded from their ids.
        device: Where to encode; ``None``: the module's device (see :func:`module_device`).
        batch_size: Users / items per forward pass.
        progress: Bars for the encoding (see :mod:`lit_matching.utils.progress`), labelled
            ``"{progress_label}: encoding users"`` and ``"... items"``.
        progress_label: What the bars are labelled with, e.g. ``"val"``.

    Returns:
        ``(users, items)``: float32 ``(len(users), d)`` (``(len(users), K, d)`` for ``K``
        interests) and ``(num_items, d)`` arrays, as ``encode_users`` / ``encode_items``
        return them (a :class:`~lit_matching.modes.base.MatchingModule`'s are prepared for
        the index, e.g. normalised for cosine).

    Example:
        >>> from lit_matching import IDEmbeddingTower, ListwiseMatching
        >>> model = ListwiseMatching(IDEmbeddingTower(3, 4), IDEmbeddingTower(5, 4))
        >>> users, items = encode_catalogue(model, {"ids": torch.arange(3)}, num_items=5)
        >>> users.shape, items.shape, model.training
        ((3, 4), (5, 4), True)
    """
    if device is None:
        device = module_device(module)
    rows = len(next(iter(user_features.values())))
    with eval_mode(module):
        with progress_bar(progress, rows, f"{progress_label}: encoding users", "user") as done:
            users = encode_in_batches(module.encode_users, user_features, device, batch_size, done)
        with progress_bar(progress, num_items, f"{progress_label}: encoding items", "item") as done:
            items = encode_in_batches(
                module.encode_items, {"ids": torch.arange(num_items)}, device, batch_size, done
            )
    return users, items
