"""The base of the three training modes: :class:`MatchingModule`.

:class:`MatchingModule` owns the towers, the similarity, ``encode_users`` / ``encode_items``,
the optimiser and the logging of ``{train,val,test}/loss``. Each subclass owns only its loss
and that loss's hyper-parameters:

==========================  =====================================  ==========================
module                      batch (from ``MatchingDataModule``)    loss
==========================  =====================================  ==========================
:class:`PointwiseMatching`  ``users, items, labels``               :func:`~objectives.bce_loss`
:class:`PairwiseMatching`   ``users, pos_items, neg_items[N]``     :func:`~objectives.bpr_loss`
:class:`ListwiseMatching`   ``users, pos_items, neg_items[N]``     :func:`~objectives.softmax_loss`
==========================  =====================================  ==========================

With ``in_batch_negatives``, :class:`ListwiseMatching`'s loss is
:func:`~lit_matching.losses.in_batch.in_batch_softmax_loss`; with
``loss="cosine_contrastive"`` it is SimpleX's
:func:`~lit_matching.losses.objectives.cosine_contrastive_loss` (in-batch:
:func:`~lit_matching.losses.in_batch.in_batch_cosine_contrastive_loss`).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lit_matching.losses.similarity import SimilarityName, get_similarity
from lit_matching.modes.schedule import ScheduleName, check_schedule, scheduler_config
from lit_matching.modes.sparse import check_sparse_gradients, clip_gradients_, sparse_tables
from lit_matching.towers.id import Features, as_features
from lit_matching.utils.allocator import reuse_freed_memory

__all__ = ["MatchingModule"]


class MatchingModule(pl.LightningModule):
    """Base of the two-tower modules: towers, similarity, encoding, optimiser, logging.

    Args:
        user_tower: Maps a batch of user features (``{"ids": ...}`` and, from the data, e.g.
            ``"history"``; see :mod:`lit_matching.towers.id`) to vectors.
        item_tower: Maps a batch of item features (``{"ids": ...}``) to vectors of the same
            size.
        similarity: ``"cosine"``, ``"dot"`` or ``"euclidean"``.
        temperature: Divides the scores in the loss (the initial value when learned).
        learn_temperature: Learn the temperature (as its logarithm, with the towers), clamped
            to ``temperature_range`` and logged as ``train/temperature`` every step.
        temperature_range: ``(lowest, highest)`` temperature allowed when learned.
        learning_rate: Adam learning rate.
        weight_decay: Adam L2 penalty (not applied to the temperature, nor to sparse tables).
        sparse_embeddings: Train the towers' embedding tables with sparse gradients and
            :class:`torch.optim.SparseAdam` (see below); default: dense, one fused Adam.
        lr_schedule: ``"constant"`` (default), ``"cosine"`` or ``"linear"`` decay of the
            learning rate over the run's optimiser steps (:mod:`lit_matching.modes.schedule`).
        warmup_steps: Linear warm-up of the learning rate over this many first steps.

    **Learning-rate schedule and weight decay** come from the config:
    ``--model.init_args.lr_schedule cosine --model.init_args.warmup_steps 500
    --model.init_args.weight_decay 1e-6``. The module builds its optimisers itself (for the
    sparse tables), so LightningCLI's ``--optimizer`` / ``--lr_scheduler`` are not offered;
    the schedule is stepped every optimiser step and steers the sparse tables too.

    Training stops with a :class:`FloatingPointError` naming the step when a loss is not
    finite (on every rank under DDP), and warns at the start of fitting when the temperature
    lets cosine logits overflow the trainer's precision.

    **Sparse embeddings.** With ``sparse_embeddings=True`` every ``nn.Embedding`` of the
    towers (ID tables, history item tables, also when shared, feature embeddings; not
    :class:`~lit_matching.towers.sequence.SelfAttentionTower`'s position table, see
    :mod:`lit_matching.modes.sparse`) is switched to ``sparse=True`` (the towers passed in
    are changed) and updated by ``SparseAdam``, the rest by the fused Adam as before. A step
    then costs in the rows the batch touches, not in the catalogue size. Lightning sees one
    optimiser (the dense Adam, or ``SparseAdam`` when every parameter is a table); the other
    is stepped and zeroed in :meth:`optimizer_step` / :meth:`optimizer_zero_grad`, so
    automatic optimisation is kept: ``accumulate_grad_batches`` and ``global_step`` /
    ``max_steps`` behave as in the dense run, the trainer's ``gradient_clip_val`` clips the
    global norm (or values) over dense and sparse gradients together, the tables take the
    learning rate of Lightning's optimiser at every step (a learning-rate scheduler on it
    steers them too), and both optimisers' states are in the checkpoint (resume works). Not
    supported: weight decay on the tables (``SparseAdam`` has none; ``weight_decay`` then
    decays the dense parameters only, with a warning), ``precision="16-mixed"`` (its loss
    scaler would steer one optimiser only; ``bf16-mixed`` works), resuming a dense run's
    checkpoint with sparse tables or the other way round, and strategies that shard
    parameters (FSDP, DeepSpeed). ``SparseAdam`` differs from Adam by design: a row's moments
    decay only in the steps that touch it, and the step count of the bias correction is the
    table's, not the row's.

    Subclasses set :attr:`mode` and :attr:`batch_keys` and implement :meth:`compute_loss`.
    Towers are not stored as hyper-parameters (their weights are in the checkpoint), so
    ``load_from_checkpoint`` needs them passed again, e.g.
    ``ListwiseMatching.load_from_checkpoint(path, user_tower=..., item_tower=...)``, also for
    checkpoints of the ``lit-matching`` CLI; ``lit-matching export --config CFG --ckpt_path
    CKPT --output DIR`` rebuilds them from the config instead.
    """

    #: Name of the training mode; the DataModule must be built with the same.
    mode: ClassVar[str]
    #: Keys every batch must hold.
    batch_keys: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        user_tower: nn.Module,
        item_tower: nn.Module,
        similarity: SimilarityName = "cosine",
        temperature: float = 0.1,
        learn_temperature: bool = False,
        temperature_range: tuple[float, float] = (0.01, 1.0),
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        sparse_embeddings: bool = False,
        lr_schedule: ScheduleName = "constant",
        warmup_steps: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["user_tower", "item_tower"])
        if learning_rate <= 0:
            raise ValueError(f"learning_rate has to be positive, got {learning_rate}")
        if not temperature > 0:
            raise ValueError(f"temperature has to be positive, got {temperature}")
        low, high = temperature_range
        if learn_temperature and not 0 < low <= temperature <= high:
            raise ValueError(
                f"temperature_range {temperature_range} must be positive and hold the initial "
                f"temperature {temperature}"
            )
        self.user_tower = user_tower
        self.item_tower = item_tower
        self.similarity = get_similarity(similarity)
        # Losses score encode_* outputs, which are prepared already.
        self._scores = self.similarity.on_prepared()
        check_schedule(lr_schedule, warmup_steps)
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay
        self._fixed_temperature = temperature
        self._log_temperature_range = (math.log(low), math.log(high)) if learn_temperature else None
        self.log_temperature = (
            nn.Parameter(torch.tensor(math.log(temperature))) if learn_temperature else None
        )
        self.sparse_embeddings = sparse_embeddings
        if sparse_embeddings:
            sparse_tables(self)
        # Optimisers Lightning does not see (the sparse tables'), stepped with its own.
        self._extra_optimizers: list[torch.optim.Optimizer] = []
        self._extra_states: list[dict[str, Any]] | None = None  # from a checkpoint, to load
        self._sparse_names: list[str] = []

    @property
    def temperature(self) -> float | Tensor:
        """The temperature: the fixed float, or the learned (clamped) scalar tensor."""
        if self.log_temperature is None or self._log_temperature_range is None:
            return self._fixed_temperature
        return self.log_temperature.clamp(*self._log_temperature_range).exp()

    #: Batch keys passed to the user tower besides the user ids, when present.
    user_feature_keys: ClassVar[tuple[str, ...]] = ("history", "history_length")

    def encode_users(self, users: Features | Tensor) -> Tensor:
        """User vectors, ready for the FAISS index (normalised for cosine).

        ``(B, d)``, or ``(B, K, d)`` for a multi-interest user tower.

        Args:
            users: User features (``{"ids": ..., "history": ..., ...}``) or user indices.
        """
        return self.similarity.prepare(self.user_tower(as_features(users)))

    def encode_items(self, items: Features | Tensor) -> Tensor:
        """Item vectors, ready for the FAISS index (normalised for cosine).

        Args:
            items: Item features (``{"ids": ...}``) or item indices, any shape.
        """
        return self.similarity.prepare(self.item_tower(as_features(items)))

    def select_interest(self, users: Tensor, targets: Tensor) -> Tensor:
        """For multi-interest users ``(B, K, d)``, each row's interest closest to its target.

        MIND and ComiRec train each row with the interest that scores highest against the
        row's target item (``targets``: ``(B, d)``), and score the row's negatives with the
        same interest. Single-vector users ``(B, d)`` are returned unchanged.

        Example:
            >>> from lit_matching.modes.listwise import ListwiseMatching
            >>> from lit_matching.towers.id import IDEmbeddingTower
            >>> model = ListwiseMatching(IDEmbeddingTower(2, 2), IDEmbeddingTower(2, 2))
            >>> users = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # one user, two interests
            >>> model.select_interest(users, torch.tensor([[0.1, 0.9]])).tolist()
            [[0.0, 1.0]]
        """
        if users.dim() == targets.dim():
            return users
        if users.dim() != 3 or targets.dim() != 2:
            raise ValueError(
                f"expected users (B, d) or (B, K, d) and targets (B, d), got "
                f"{tuple(users.shape)} and {tuple(targets.shape)}"
            )
        best = self._scores.rowwise(users, targets.unsqueeze(1)).argmax(dim=1)
        return users[torch.arange(len(users), device=users.device), best]

    def batch_users(self, batch: dict[str, Tensor]) -> Features:
        """The user features of a training batch: its users and, if present, their history."""
        return {"ids": batch["users"]} | {
            key: batch[key] for key in self.user_feature_keys if key in batch
        }

    @abstractmethod
    def compute_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The mode's loss on one batch."""

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        missing = [key for key in self.batch_keys if key not in batch]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs batch keys {list(self.batch_keys)}, got "
                f"{sorted(batch)}: build the data with MatchingDataModule(mode={self.mode!r})"
            )
        loss = self.compute_loss(batch)
        if stage == "train":
            self._check_finite(loss)
            if self.log_temperature is not None:
                self.log("train/temperature", self.temperature, batch_size=len(batch["users"]))
        self.log(
            f"{stage}/loss",
            loss,
            batch_size=len(batch["users"]),
            prog_bar=stage == "train",
            sync_dist=stage != "train",
        )
        return loss

    def _check_finite(self, loss: Tensor) -> None:
        """Stop on a non-finite training loss, on every rank at once (no rank left waiting)."""
        bad = not bool(torch.isfinite(loss.detach()))
        if self._trainer is not None:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        where = f"step {self.global_step}" if self._trainer is not None else "this batch"
        causes = [
            "the learning rate is too high (the weights diverged)",
            "the input holds NaN or inf (e.g. a numeric side feature)",
        ]
        if self.similarity.name != "cosine":
            causes.append(
                f"{self.similarity.name} scores are unbounded: at temperature "
                f"{float(self.temperature):.3g} their logits can overflow (try cosine)"
            )
        if self._precision_dtype() != torch.float32:
            causes.append(f"the logits overflow {self._precision_dtype()} (a larger temperature)")
        raise FloatingPointError(
            f"{type(self).__name__}: the training loss is {loss.item()} at {where}. Likely "
            f"causes: {'; '.join(causes)}."
        )

    def _precision_dtype(self) -> torch.dtype:
        precision = str(self.trainer.precision) if self._trainer is not None else "32"
        if precision.startswith("16"):
            return torch.float16
        return torch.bfloat16 if precision.startswith("bf16") else torch.float32

    @override
    def on_fit_start(self) -> None:
        """Warn when the lowest temperature lets cosine logits overflow the precision.

        On CPU, also keep freed memory for reuse (see :mod:`lit_matching.utils.allocator`):
        otherwise glibc page-faults a step's large temporaries in afresh every step.
        """
        if self.device.type == "cpu":
            reuse_freed_memory()
        lowest = (
            math.exp(self._log_temperature_range[0])
            if self._log_temperature_range is not None
            else self._fixed_temperature
        )
        largest = torch.finfo(self._precision_dtype()).max
        if self.similarity.name == "cosine" and 1.0 / lowest >= largest:
            rank_zero_warn(
                f"temperature {lowest:g} scales cosine scores up to {1 / lowest:.3g}, beyond "
                f"the largest {self._precision_dtype()} ({largest:.3g}): logits overflow to inf"
            )

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Keep the learned temperature inside its range (the clamp in `temperature` alone
        # would leave the parameter stuck outside it, with a zero gradient).
        if self.log_temperature is not None and self._log_temperature_range is not None:
            with torch.no_grad():
                self.log_temperature.clamp_(*self._log_temperature_range)

    @override
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    @override
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    @override
    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    @override
    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """User embeddings of a ``{"users": ...}`` batch (with history, if present)."""
        return {"users": batch["users"], "embeddings": self.encode_users(self.batch_users(batch))}

    @override
    def configure_optimizers(self) -> Any:
        tables = sparse_tables(self) if self.sparse_embeddings else []
        sparse = {id(table) for table in tables}
        towers = [
            p
            for name, p in self.named_parameters()
            if name != "log_temperature" and id(p) not in sparse
        ]
        groups: list[dict[str, Any]] = [{"params": towers, "weight_decay": self.weight_decay}]
        if self.log_temperature is not None:
            groups.append({"params": [self.log_temperature], "weight_decay": 0.0})
        groups = [group for group in groups if group["params"]]
        optimizers: list[torch.optim.Optimizer] = []
        if groups:
            # The fused kernel is the same update in one pass per tensor: on CPU 3x faster than
            # the default loop over a 1M x 64 table, where the optimiser dominates the step.
            fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
            optimizers.append(torch.optim.Adam(groups, lr=self.learning_rate, fused=fused))
        if tables:
            self._check_sparse_settings()
            optimizers.append(torch.optim.SparseAdam(tables, lr=self.learning_rate))
        self._extra_optimizers = optimizers[1:]
        self._sparse_names = [name for name, p in self.named_parameters() if id(p) in sparse]
        if self._extra_states is not None:
            for optimizer, state in zip(self._extra_optimizers, self._extra_states, strict=True):
                optimizer.load_state_dict(state)
            self._extra_states = None
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        schedule = scheduler_config(optimizers[0], self.lr_schedule, self.warmup_steps, total)
        if schedule is None:
            return optimizers[0]
        return {"optimizer": optimizers[0], "lr_scheduler": schedule}

    def _check_sparse_settings(self) -> None:
        if self._precision_dtype() == torch.float16:
            raise ValueError(
                "sparse_embeddings=True does not support float16 precision (16-mixed's loss "
                "scaler would steer one of the two optimisers): use 'bf16-mixed' or 32"
            )
        if self.weight_decay:
            rank_zero_warn(
                f"weight_decay={self.weight_decay} decays the dense parameters only: SparseAdam "
                "has no weight decay, so the sparse embedding tables are not decayed"
            )

    @override
    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Lightning's step, then the sparse tables' at the same learning rate."""
        optimizer.step(closure=optimizer_closure)
        learning_rate = optimizer.param_groups[0]["lr"]
        for extra in self._extra_optimizers:
            for group in extra.param_groups:
                group["lr"] = learning_rate
            extra.step()

    @override
    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        optimizer.zero_grad()
        for extra in self._extra_optimizers:
            extra.zero_grad()  # to None: nothing of the table's size is zeroed

    @override
    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if self._sparse_names:
            params = dict(self.named_parameters())
            check_sparse_gradients((name, params[name]) for name in self._sparse_names)

    @override
    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping; with sparse tables, over every gradient together."""
        if not self.sparse_embeddings:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
        elif gradient_clip_val:
            clip_gradients_(self.parameters(), gradient_clip_val, gradient_clip_algorithm or "norm")

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._extra_optimizers:
            checkpoint["extra_optimizer_states"] = [
                optimizer.state_dict() for optimizer in self._extra_optimizers
            ]

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Only when a trainer resumes (it builds the optimisers next); load_from_checkpoint
        # restores weights, and a new fit starts its optimisers afresh.
        if self._trainer is not None and "extra_optimizer_states" in checkpoint:
            self._extra_states = checkpoint["extra_optimizer_states"]
