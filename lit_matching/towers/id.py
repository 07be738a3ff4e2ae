"""The id-embedding tower, and what every tower shares: the input contract and ``mlp``.

The contract: ``tower(features) -> Tensor`` maps a dict of feature tensors to one vector per
row. Every side has ``"ids"`` (contiguous user or item indices, any shape); the user side also
has ``"history"`` ``(B, L)`` (past items, left-padded with ``num_items``) and
``"history_length"`` ``(B,)`` when :class:`MatchingDataModule` is built with
``history_length > 0``. Towers know nothing about Lightning, losses or similarity, so any
``nn.Module`` with that contract can be a user or item tower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

__all__ = ["Features", "IDEmbeddingTower", "as_features", "mlp"]

Features = Mapping[str, Tensor]


def as_features(features: Features | Tensor) -> Features:
    """``features`` as a feature dict; a bare tensor is taken as ``{"ids": tensor}``.

    Example:
        >>> import torch
        >>> sorted(as_features(torch.tensor([1, 2])))
        ['ids']
    """
    return {"ids": features} if isinstance(features, Tensor) else features


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int, dropout: float) -> nn.Sequential:
    """Dropout + Linear per layer, ReLU between layers; the last layer has ``out_dim`` units.

    Example:
        >>> mlp(8, (16,), 4, dropout=0.0)
        Sequential(
          (0): Dropout(p=0.0, inplace=False)
          (1): Linear(in_features=8, out_features=16, bias=True)
          (2): ReLU()
          (3): Dropout(p=0.0, inplace=False)
          (4): Linear(in_features=16, out_features=4, bias=True)
        )
    """
    layers: list[nn.Module] = []
    for width in (*hidden_dims, out_dim):
        if layers:
            layers.append(nn.ReLU())
        layers += [nn.Dropout(dropout), nn.Linear(in_dim, width)]
        in_dim = width
    return nn.Sequential(*layers)


class IDEmbeddingTower(nn.Module):
    """One learned vector per id: the matrix-factorisation tower.

    Args:
        num_embeddings: Number of ids (users or items); indices run from 0 to this - 1. Left
            unset in a ``lit-matching`` config, it is filled from the data.
        embedding_dim: Size of each vector.
        init_std: Standard deviation of the normal initialisation.

    Example:
        >>> import torch
        >>> tower = IDEmbeddingTower(num_embeddings=10, embedding_dim=4)
        >>> tower({"ids": torch.tensor([0, 3, 9])}).shape
        torch.Size([3, 4])
    """

    def __init__(
        self, num_embeddings: int | None = None, embedding_dim: int = 64, init_std: float = 0.1
    ):
        super().__init__()
        if num_embeddings is None or num_embeddings < 1:
            raise ValueError(
                f"num_embeddings has to be a positive integer, got {num_embeddings!r} (the "
                "lit-matching CLI fills it from the data: num_users for a user tower, num_items "
                "for an item tower)"
            )
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim has to be a positive integer, got {embedding_dim}")
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        nn.init.normal_(self.embedding.weight, std=init_std)

    @property
    def embedding_dim(self) -> int:
        """Size of the output vectors."""
        return self.embedding.embedding_dim

    def forward(self, features: Features | Tensor) -> Tensor:
        """Embeddings of ``features["ids"]``: ``(...) -> (..., embedding_dim)``."""
        return self.embedding(as_features(features)["ids"])
