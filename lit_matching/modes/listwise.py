"""List-wise training over a positive and negatives: softmax, or SimpleX's margin loss."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from typing_extensions import override

from lit_matching.losses.gather import RankGather
from lit_matching.losses.in_batch import (
    in_batch_cosine_contrastive_loss,
    in_batch_logits,
    in_batch_softmax_loss,
)
from lit_matching.losses.logq import StreamingFrequency, log_expected_count
from lit_matching.losses.objectives import cosine_contrastive_loss, softmax_loss
from lit_matching.losses.similarity import SimilarityName
from lit_matching.modes.base import MatchingModule
from lit_matching.modes.schedule import ScheduleName

__all__ = ["ListwiseLoss", "ListwiseMatching"]

ListwiseLoss = Literal["softmax", "cosine_contrastive"]


class ListwiseMatching(MatchingModule):
    """List-wise training: softmax cross-entropy over the positive and its negatives.

    Each row contrasts ``s(u, pos)`` (column 0) with negatives. By default these are the row's
    own ``N`` sampled negatives (:func:`~lit_matching.losses.objectives.softmax_loss`). With
    ``in_batch_negatives`` every row instead contrasts with the whole batch's items: all
    positives and all sampled negatives of the batch, gathered from every DDP rank (gradients
    flow back to the rank that encoded them; see :mod:`lit_matching.losses.gather`), so the
    batch is the global one. Any candidate equal to the row's own positive (an accidental hit)
    is masked out (:func:`~lit_matching.losses.in_batch.in_batch_softmax_loss`). L2
    normalisation (``similarity="cosine"``) with a small temperature is the recommended
    setting.

    In-batch negatives follow item popularity and a popularity sampler follows
    ``count^alpha``; without a sampling-bias (log-Q) correction they push popular items down.
    The correction (:mod:`lit_matching.losses.logq`, applied in training) subtracts
    ``log E[count]`` of each negative among the row's negatives, under the mixture of the
    batch's sources, from its logit. ``docs/benchmarks.md`` ("Negatives and log-Q correction")
    compares the choices on the embedded MovieLens data.

    **Cosine contrastive loss** (``loss="cosine_contrastive"``, SimpleX, Mao et al. CIKM 2021):
    instead of the softmax, each row costs ``(1 - cos(u, pos)) + negative_weight *
    mean_j max(0, cos(u, neg_j) - margin)``
    (:func:`~lit_matching.losses.objectives.cosine_contrastive_loss`) over the same negatives
    as above (sampled, or with ``in_batch_negatives`` the global batch's candidates, gathered
    across ranks), accidental hits left out of the mean, sampled negatives included. It needs
    ``similarity="cosine"`` and ignores the temperature (a learned one is refused). The paper's
    Gowalla setting is ``margin`` 0.9 and ``negative_weight`` 150 with 1000 negatives. Log-Q
    correction does not apply: it corrects the softmax's normaliser, estimated from a biased
    sample, and a margin loss has none (each negative is a separate hinge; how often an item
    is drawn only weights how often it is pushed). ``log_q_correction=True`` is refused, and
    the default ``None`` means off for this loss.

    Args:
        user_tower: Maps user features (``{"ids": ...}`` and, from the data, e.g.
            ``"history"``; see :mod:`lit_matching.towers.id`) to vectors.
        item_tower: Maps item features (``{"ids": ...}``) to vectors.
        similarity: ``"cosine"``, ``"dot"`` or ``"euclidean"``.
        temperature: Divides the logits; ``scale = 1 / temperature``.
        learn_temperature: Learn the temperature; see :class:`MatchingModule`.
        temperature_range: Range of the learned temperature.
        in_batch_negatives: Contrast every row with all items of the (global) batch.
        log_q_correction: Correct the negatives' logits by their sampling probability.
            ``None`` (default): whenever the negatives are not uniform, i.e. with in-batch
            negatives, or when the trainer's datamodule draws them with a sampler other than
            ``"uniform"`` (its ``negative_sampler``, e.g. ``"popularity"``), whatever the number
            of negatives. Without such a datamodule (a loader of your own), sampled negatives
            are corrected when their log-probabilities (``neg_log_q``) differ within a row.
            Needs the batch's ``neg_log_q`` and, with in-batch negatives, ``pos_log_q``,
            ``pos_sampler_log_q`` and ``neg_batch_log_q`` (all from
            :class:`~lit_matching.data.datamodule.MatchingDataModule`).
        frequency_buckets: Estimate the in-batch probabilities online
            (:class:`~lit_matching.losses.logq.StreamingFrequency` with this many hash buckets)
            instead of taking the data's training frequencies (``pos_log_q``).
        learning_rate: Adam learning rate.
        weight_decay: Adam L2 penalty.
        sparse_embeddings: Sparse gradients and ``SparseAdam`` for the embedding tables; see
            :class:`MatchingModule`.
        lr_schedule: Learning-rate schedule; see :class:`MatchingModule`.
        warmup_steps: Linear warm-up steps of the schedule.
        loss: ``"softmax"`` (default) or ``"cosine_contrastive"`` (see above).
        margin: Cosine above which a negative costs (``"cosine_contrastive"`` only).
        negative_weight: Weight of the negatives' mean hinge (``"cosine_contrastive"`` only).

    Example:
        >>> from lit_matching.towers.id import IDEmbeddingTower
        >>> model = ListwiseMatching(IDEmbeddingTower(5, 8), IDEmbeddingTower(7, 8),
        ...                          in_batch_negatives=True, log_q_correction=False)
        >>> batch = {"users": torch.tensor([0, 1]), "pos_items": torch.tensor([3, 3]),
        ...          "neg_items": torch.tensor([[5, 6], [6, 0]])}
        >>> model.logits(batch).shape  # 1 positive + 2 batch positives + 4 batch negatives
        torch.Size([2, 7])
    """

    mode = "listwise"
    batch_keys = ("users", "pos_items", "neg_items")

    def __init__(
        self,
        user_tower: nn.Module,
        item_tower: nn.Module,
        similarity: SimilarityName = "cosine",
        temperature: float = 0.05,
        learn_temperature: bool = False,
        temperature_range: tuple[float, float] = (0.01, 1.0),
        in_batch_negatives: bool = False,
        log_q_correction: bool | None = None,
        frequency_buckets: int | None = None,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        sparse_embeddings: bool = False,
        lr_schedule: ScheduleName = "constant",
        warmup_steps: int = 0,
        loss: ListwiseLoss = "softmax",
        margin: float = 0.9,
        negative_weight: float = 150.0,
    ):
        super().__init__(
            user_tower,
            item_tower,
            similarity,
            temperature,
            learn_temperature,
            temperature_range,
            learning_rate,
            weight_decay,
            sparse_embeddings,
            lr_schedule,
            warmup_steps,
        )
        self._check_loss(loss, negative_weight, log_q_correction, frequency_buckets)
        self.loss = loss
        self.margin = margin
        self.negative_weight = negative_weight
        if frequency_buckets is not None and not in_batch_negatives:
            raise ValueError(
                "frequency_buckets estimates in-batch frequencies: it needs in_batch_negatives=True"
            )
        self.in_batch_negatives = in_batch_negatives
        self.log_q_correction = log_q_correction
        self.frequency = (
            None if frequency_buckets is None else StreamingFrequency(frequency_buckets)
        )
        self._negative_sampler: str | None = None

    def _check_loss(
        self,
        loss: str,
        negative_weight: float,
        log_q_correction: bool | None,
        frequency_buckets: int | None,
    ) -> None:
        if loss == "softmax":
            return
        if loss != "cosine_contrastive":
            raise ValueError(f"unknown loss {loss!r}; expected 'softmax' or 'cosine_contrastive'")
        if self.similarity.name != "cosine":
            raise ValueError(
                f"loss='cosine_contrastive' puts its margin on cosines: it needs "
                f"similarity='cosine', got {self.similarity.name!r}"
            )
        if self.log_temperature is not None:
            raise ValueError("loss='cosine_contrastive' has no temperature to learn")
        if negative_weight < 0:
            raise ValueError(f"negative_weight has to be non-negative, got {negative_weight}")
        if log_q_correction or frequency_buckets is not None:
            raise ValueError(
                "log-Q correction (log_q_correction=True or frequency_buckets) corrects the "
                "softmax's normaliser; loss='cosine_contrastive' has none: leave them unset"
            )

    @override
    def setup(self, stage: str) -> None:
        """Note the datamodule's ``negative_sampler``, which the default log-Q rule follows."""
        datamodule = getattr(self._trainer, "datamodule", None)
        sampler = getattr(datamodule, "negative_sampler", None)
        self._negative_sampler = sampler if isinstance(sampler, str) else None

    def _corrects(self, batch: dict[str, Tensor]) -> bool:
        if self.loss == "cosine_contrastive":
            return False
        if self.log_q_correction is not None:
            return self.log_q_correction
        if self.in_batch_negatives:
            return True
        if self._negative_sampler is not None:
            # Known from the data: one negative per row has no within-row spread to go by.
            return self._negative_sampler != "uniform"
        log_q = batch.get("neg_log_q")
        return log_q is not None and bool((log_q != log_q[:, :1]).any())

    def _need(self, batch: dict[str, Tensor], keys: tuple[str, ...]) -> None:
        missing = [key for key in keys if key not in batch]
        if missing:
            raise ValueError(
                f"log-Q correction needs batch keys {missing} (MatchingDataModule provides "
                "them); or pass log_q_correction=False"
            )

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Scores ``(B, 1 + M)``: the positive in column 0, then the negatives.

        ``M`` is ``N`` (the row's sampled negatives) or, with ``in_batch_negatives``,
        ``B_global * (1 + N)`` (every positive, then every sampled negative of the global
        batch). Accidental hits (the row's own positive among the candidates included) are
        ``-inf``; with log-Q correction (in training only: it is a device of the sampled
        softmax, and validation may hold items of no training frequency) each negative is
        lowered by ``temperature * log E[count]``, so that after the division by the
        temperature the logit is ``s / t - log E[count]``. :meth:`compute_loss` is
        :func:`~lit_matching.losses.objectives.softmax_loss` of these logits.
        """
        if batch["neg_items"].shape[1] == 0 and not self.in_batch_negatives:
            raise ValueError(
                "the batch has no sampled negatives and in_batch_negatives is off, so the "
                "softmax has nothing to contrast: set num_negatives > 0 or in_batch_negatives"
            )
        users, pos_items, neg_items = self._encode(batch)
        positive = self._scores.rowwise(users, pos_items).unsqueeze(1)
        if not self.in_batch_negatives:
            negatives = self._scores.rowwise(users.unsqueeze(1), neg_items)
            if self.training and self._corrects(batch):
                self._need(batch, ("neg_log_q",))
                count = log_expected_count(None, 0, batch["neg_log_q"], neg_items.shape[1])
                negatives = negatives - self.temperature * count
            return torch.cat([positive, negatives], dim=1)

        inputs = self._in_batch_inputs(batch, users, pos_items, neg_items)
        scaled = in_batch_logits(**inputs)
        own = torch.arange(len(scaled), device=scaled.device) + inputs["offset"]
        masked = torch.isneginf(scaled).scatter_(1, own.unsqueeze(1), True)  # own positive too
        # Back to scores without multiplying -inf (a learned temperature's gradient: NaN).
        negatives = (scaled.masked_fill(masked, 0.0) * self.temperature).masked_fill(
            masked, float("-inf")
        )
        return torch.cat([positive, negatives], dim=1)

    def _encode(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The batch's user (closest interest to the positive), positive and negative vectors."""
        pos_items = self.encode_items(batch["pos_items"])
        neg_items = self.encode_items(batch["neg_items"])
        users = self.select_interest(self.encode_users(self.batch_users(batch)), pos_items)
        return users, pos_items, neg_items

    def _in_batch_inputs(
        self, batch: dict[str, Tensor], users: Tensor, pos_items: Tensor, neg_items: Tensor
    ) -> dict[str, Any]:
        """The arguments of :func:`~lit_matching.losses.in_batch.in_batch_logits` for a batch.

        The candidates are the global batch's positives, then its sampled negatives (gathered
        from every rank); row ``b``'s own positive is column ``offset + b``. In training, with
        log-Q correction, each candidate's ``log E[count]`` under the mixture of the in-batch
        and the sampled negatives.
        """
        pos_ids, neg_ids = batch["pos_items"], batch["neg_items"]
        gather = RankGather(len(pos_ids), pos_ids.device)
        candidates = torch.cat([gather(pos_items), gather(neg_items).flatten(0, 1)])
        candidate_ids = torch.cat([gather(pos_ids), gather(neg_ids).flatten()])
        count = None
        # A lone row without sampled negatives has no negatives to correct.
        if self.training and self._corrects(batch) and len(candidate_ids) > 1:
            count = log_expected_count(
                self._batch_log_q(batch, gather, candidate_ids),
                gather.total - 1,
                self._sampler_log_q(batch, gather),
                gather.total * neg_ids.shape[1],
            )
        return {
            "queries": users,
            "candidates": candidates,
            "candidate_ids": candidate_ids,
            "positive_ids": pos_ids,
            "offset": gather.offset,
            "temperature": self.temperature,
            "log_expected_counts": count,
            "similarity": self._scores,
        }

    def _batch_log_q(self, batch: dict[str, Tensor], gather: RankGather, ids: Tensor) -> Tensor:
        """In-batch (positive) log-probability of each candidate: data or streamed."""
        if self.frequency is not None:
            if self.training:
                self.frequency.update(ids[: gather.total])  # the global batch's positives
            return self.frequency.log_q(ids, gather.total)
        self._need(batch, ("pos_log_q", "neg_batch_log_q"))
        return torch.cat([gather(batch["pos_log_q"]), gather(batch["neg_batch_log_q"]).flatten()])

    def _sampler_log_q(self, batch: dict[str, Tensor], gather: RankGather) -> Tensor | None:
        """Sampler log-probability of each candidate (``None`` without sampled negatives)."""
        if batch["neg_items"].shape[1] == 0:
            return None
        self._need(batch, ("pos_sampler_log_q", "neg_log_q"))
        return torch.cat([gather(batch["pos_sampler_log_q"]), gather(batch["neg_log_q"]).flatten()])

    @override
    def compute_loss(self, batch: dict[str, Tensor]) -> Tensor:
        if self.loss == "cosine_contrastive":
            return self._cosine_contrastive_loss(batch)
        if not self.in_batch_negatives:
            return softmax_loss(self.logits(batch), self.temperature)
        # The loss of logits(batch) without its (B, 1 + M) copies.
        users, pos_items, neg_items = self._encode(batch)
        return in_batch_softmax_loss(**self._in_batch_inputs(batch, users, pos_items, neg_items))

    def _cosine_contrastive_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """SimpleX's loss over the row's negatives, accidental hits left out."""
        if not self.in_batch_negatives:
            scores = self.logits(batch)
            hits = batch["neg_items"] == batch["pos_items"].unsqueeze(1)
            negatives = scores[:, 1:].masked_fill(hits, float("-inf"))
            return cosine_contrastive_loss(
                scores[:, 0], negatives, self.margin, self.negative_weight
            )
        users, pos_items, neg_items = self._encode(batch)
        inputs = self._in_batch_inputs(batch, users, pos_items, neg_items)
        for unused in ("temperature", "log_expected_counts"):
            del inputs[unused]
        return in_batch_cosine_contrastive_loss(
            **inputs, margin=self.margin, negative_weight=self.negative_weight
        )
