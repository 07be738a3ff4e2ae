"""Hard negatives mined from the model's own FAISS index, refreshed every few epochs.

:func:`mine_hard_negatives` encodes every user (with their training history) and the catalogue
as :class:`~lit_matching.retrieval.evaluation.RetrievalEvaluator` does, and searches the top-K
items of each user, training positives excluded. The :class:`HardNegativeMiner` callback does
so at the start of the chosen training epochs and hands the datamodule a
:class:`~lit_matching.data.mined.MinedNegativeSampler`, whose log-probabilities are those of
the mixture actually drawn from (so the list-wise log-Q correction stays honest).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lit_matching.data.mined import MinedNegativeSampler
from lit_matching.retrieval.encoding import CatalogueEncoder, encode_catalogue
from lit_matching.retrieval.search import EXACT, build_index, search_top_k

__all__ = ["HardNegativeMiner", "mine_hard_negatives"]


def mine_hard_negatives(
    module: CatalogueEncoder,
    datamodule: Any,
    top_k: int,
    index: str = EXACT,
    batch_size: int = 4096,
) -> np.ndarray:
    """Each user's ``top_k`` items by the model's score, training positives excluded.

    Users are encoded with the features known after training (``user_features("val")``:
    ids, and the training history when the data has one).

    Returns:
        ``(num_users, top_k)`` items, best first; ``-1`` where fewer items are left.

    Example:
        >>> from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule
        >>> dm = MatchingDataModule()
        >>> model = ListwiseMatching(IDEmbeddingTower(dm.num_users, 8),
        ...                          IDEmbeddingTower(dm.num_items, 8))
        >>> mine_hard_negatives(model, dm, top_k=5).shape
        (671, 5)
    """
    users = np.arange(datamodule.num_users)
    features = datamodule.user_features("val", users)
    queries, items = encode_catalogue(module, features, datamodule.num_items, None, batch_size)
    faiss_index = build_index(items, module.similarity.faiss_metric, index)
    seen = datamodule.train_items.select(users)
    found, _ = search_top_k(faiss_index, queries, top_k, seen, batch_size)
    return found


class HardNegativeMiner(Callback):
    """Refreshes the training negatives' hard part from the model every ``every_n_epochs``.

    At the start of epoch ``e`` with ``e >= start_epoch`` and ``(e - start_epoch) %
    every_n_epochs == 0`` it mines each user's ``top_k`` items (:func:`mine_hard_negatives`)
    and sets the datamodule's training sampler to a
    :class:`~lit_matching.data.mined.MinedNegativeSampler` over its configured sampler: each
    negative comes from the user's list with probability ``hard_fraction``. Until
    ``start_epoch`` (default 1: an untrained model's top-K is noise) the configured sampler
    is used alone.

    **Log-Q**: the negatives' ``neg_log_q`` is the mixture's exact ``log q(item | user)``.
    :class:`~lit_matching.modes.listwise.ListwiseMatching`'s default rule follows the
    datamodule's ``negative_sampler``: with ``"uniform"`` it does not correct, so hard
    negatives weigh as drawn (the usual hard-negative objective); ``log_q_correction=True``
    corrects by the mixture probability instead (a consistent sampled softmax, where hard
    negatives lower the variance; the better one on the embedded MovieLens data, see
    ``docs/benchmarks.md``). With in-batch negatives the other rows' mined items are
    corrected by their row-weighted marginal probability (an approximation, as for the base
    samplers).

    **Exact resume**: the lists and the epoch they were mined for are in the callback's
    checkpoint state (``(num_users, top_k)`` int32). A fit resumed from a checkpoint uses
    the saved lists until the next refresh, and a refresh mines from the parameters at that
    epoch's start, which the checkpoint holds; so the resumed run draws the negatives of the
    uninterrupted one (checkpoints at an epoch's end or mid-epoch, e.g. ``ModelCheckpoint``'s
    ``every_n_train_steps``). Refreshes follow Lightning's epoch number: after a stop by
    ``max_steps``, which Lightning counts as a finished epoch while the data continues it,
    they come one data epoch earlier than in the uninterrupted run. DDP: every rank mines
    all users from the same parameters.

    Needs ``num_workers=0`` (persistent loader workers would keep the old sampler).

    Args:
        every_n_epochs: Epochs between refreshes.
        top_k: Candidates per user.
        hard_fraction: Probability that a negative comes from the mined list.
        start_epoch: First epoch (0-based) that uses mined negatives.
        index: FAISS index-factory string of the search (``"Flat"``: exact).
        batch_size: Users / items per forward pass and queries per search.

    Example:
        >>> HardNegativeMiner(every_n_epochs=2, start_epoch=1).refreshes(3)
        True
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        top_k: int = 100,
        hard_fraction: float = 0.5,
        start_epoch: int = 1,
        index: str = EXACT,
        batch_size: int = 4096,
    ):
        if every_n_epochs < 1 or top_k < 1 or start_epoch < 0:
            raise ValueError(
                f"every_n_epochs ({every_n_epochs}) and top_k ({top_k}) must be positive and "
                f"start_epoch ({start_epoch}) non-negative"
            )
        if not 0.0 <= hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction!r}")
        self.every_n_epochs, self.top_k, self.hard_fraction = every_n_epochs, top_k, hard_fraction
        self.start_epoch, self.index, self.batch_size = start_epoch, index, batch_size
        self.mined: np.ndarray | None = None
        self.mined_epoch: int | None = None

    def refreshes(self, epoch: int) -> bool:
        """Whether mining runs at the start of ``epoch``."""
        return epoch >= self.start_epoch and (epoch - self.start_epoch) % self.every_n_epochs == 0

    @staticmethod
    def _datamodule(trainer: pl.Trainer) -> Any:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "set_train_sampler"):
            raise RuntimeError(
                "HardNegativeMiner needs a MatchingDataModule (with set_train_sampler); pass "
                "it as trainer.fit(model, datamodule=...)"
            )
        if datamodule.num_workers:
            raise ValueError(
                f"HardNegativeMiner needs num_workers=0, got {datamodule.num_workers}: "
                "persistent loader workers would keep drawing from the old sampler"
            )
        return datamodule

    def _install(self, trainer: pl.Trainer) -> None:
        datamodule = self._datamodule(trainer)
        base = datamodule.train_sampler
        if isinstance(base, MinedNegativeSampler):
            base = base.base
        if self.mined is not None:
            base = MinedNegativeSampler(base, self.mined, self.hard_fraction)
        datamodule.set_train_sampler(base)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the datamodule; put back the lists of a restored checkpoint."""
        self._install(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Mine at the refresh epochs (once per epoch, also after a resume)."""
        epoch = trainer.current_epoch
        if not self.refreshes(epoch) or self.mined_epoch == epoch:
            return
        datamodule = self._datamodule(trainer)
        self.mined = mine_hard_negatives(
            pl_module,  # type: ignore[arg-type]
            datamodule,
            self.top_k,
            self.index,
            self.batch_size,
        ).astype(np.int32)
        self.mined_epoch = epoch
        self._install(trainer)

    def state_dict(self) -> dict[str, Any]:
        """The mined lists (a tensor, for ``weights_only`` loading) and their epoch."""
        if self.mined is None:
            return {}
        return {"mined": torch.from_numpy(self.mined), "mined_epoch": self.mined_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the lists saved by :meth:`state_dict` (installed at ``on_train_start``)."""
        if "mined" in state_dict:
            self.mined = state_dict["mined"].numpy()
            self.mined_epoch = int(state_dict["mined_epoch"])
