"""Pair-wise training: BPR on ``(user, pos_item, neg_item)``."""

from __future__ import annotations

from torch import Tensor
from typing_extensions import override

from lit_matching.losses.objectives import bpr_loss
from lit_matching.modes.base import MatchingModule

__all__ = ["PairwiseMatching"]


class PairwiseMatching(MatchingModule):
    """Pair-wise training: BPR on ``(user, pos_item, neg_item)``.

    With ``N`` negatives per positive, every ``(positive, negative)`` pair counts once.

    Args:
        user_tower: Maps user features (``{"ids": ...}`` and, from the data, e.g.
            ``"history"``; see :mod:`lit_matching.towers.id`) to vectors.
        item_tower: Maps item features (``{"ids": ...}``) to vectors.
        similarity: ``"cosine"``, ``"dot"`` or ``"euclidean"``.
        temperature: Divides the score gap ``s_pos - s_neg``.
        learn_temperature: Learn the temperature; see :class:`MatchingModule`.
        temperature_range: Range of the learned temperature.
        learning_rate: Adam learning rate.
        weight_decay: Adam L2 penalty.
        sparse_embeddings: Sparse gradients and ``SparseAdam`` for the embedding tables; see
            :class:`MatchingModule`.
        lr_schedule: Learning-rate schedule; see :class:`MatchingModule`.
        warmup_steps: Linear warm-up steps of the schedule.

    Example:
        >>> import torch
        >>> from lit_matching.towers.id import IDEmbeddingTower
        >>> model = PairwiseMatching(IDEmbeddingTower(5, 8), IDEmbeddingTower(7, 8))
        >>> batch = {"users": torch.tensor([0, 1]), "pos_items": torch.tensor([3, 4]),
        ...          "neg_items": torch.tensor([[5], [6]])}
        >>> model.compute_loss(batch).shape
        torch.Size([])
    """

    mode = "pairwise"
    batch_keys = ("users", "pos_items", "neg_items")

    @override
    def compute_loss(self, batch: dict[str, Tensor]) -> Tensor:
        pos_items = self.encode_items(batch["pos_items"])
        users = self.select_interest(self.encode_users(self.batch_users(batch)), pos_items)
        pos = self._scores.rowwise(users, pos_items)
        neg = self._scores.rowwise(users.unsqueeze(1), self.encode_items(batch["neg_items"]))
        return bpr_loss(pos, neg, self.temperature)
