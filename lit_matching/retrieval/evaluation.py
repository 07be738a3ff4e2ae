"""Full-catalogue retrieval evaluation: a function and the Lightning callback around it."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import faiss
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from lit_matching.data.item_sets import EvalSet, ItemSets
from lit_matching.losses.similarity import FaissMetric
from lit_matching.retrieval.encoding import CatalogueEncoder, encode_catalogue
from lit_matching.retrieval.metrics import hit_matrix, metric_sums
from lit_matching.retrieval.search import (
    EXACT,
    build_index,
    is_exact,
    overlap_at_k,
    overlap_per_row,
    search_top_k,
)
from lit_matching.retrieval.sharding import (
    AllReduce,
    reduce_sums,
    shard_eval_set,
    torch_all_reduce,
)
from lit_matching.retrieval.validation import check_ks
from lit_matching.utils.progress import ProgressBars, progress_bar, progress_bars

__all__ = ["RetrievalEvaluator", "evaluate_retrieval", "most_popular_metrics"]


def evaluate_retrieval(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    metric: FaissMetric,
    eval_set: EvalSet,
    ks: Sequence[int] = (10, 20, 50),
    exclude_seen: bool = True,
    index: str = EXACT,
    search_params: Mapping[str, float] | None = None,
    item_counts: np.ndarray | None = None,
    batch_size: int = 4096,
    progress: bool | ProgressBars = False,
    progress_label: str = "retrieval",
    all_reduce: AllReduce | None = None,
) -> dict[str, float]:
    """Search the full catalogue for every evaluated user and score the top ``max(ks)``.

    Args:
        user_vectors: ``(len(eval_set.users), d)`` query vectors, prepared for ``metric``;
            ``(len(eval_set.users), K, d)`` for ``K`` interests per user (their results are
            merged, see :func:`~lit_matching.retrieval.search.merge_interests`).
        item_vectors: ``(num_items, d)`` item vectors, prepared for ``metric``.
        metric: FAISS metric that ranks as the model's similarity (``"l2"`` or ``"ip"``).
        eval_set: Evaluated users, their targets and their seen items.
        ks: Cut-offs.
        exclude_seen: Never recommend an item of ``eval_set.exclude``.
        index: FAISS index-factory string (see :func:`build_index`); for an approximate
            index the result also holds ``ann_recall@K``, the share of the exact top K found.
        search_params: Search parameters of the index, e.g. ``{"efSearch": 128}``.
        item_counts: Training count of each item, for ``popularity@K``.
        batch_size: Queries per FAISS call (the result does not depend on it).
        progress: Show a progress bar of the search: ``True`` for a tqdm bar on stderr, or
            the :class:`~lit_matching.utils.progress.ProgressBars` to make it with.
        progress_label: What the bar is labelled with, e.g. ``"val"``.
        all_reduce: Sharded evaluation (see :mod:`lit_matching.retrieval.sharding`): the users
            are this process's share; the metrics, of all shares, are reduced with it.

    Returns:
        ``{"recall@10": ..., "ndcg@10": ..., ...}`` averaged over the evaluated users.

    Example:
        >>> users = np.array([0, 1])
        >>> eval_set = EvalSet(users, targets=ItemSets.from_pairs(users, [1, 2], 2, 3),
        ...                    exclude=ItemSets.from_pairs(users, [0, 0], 2, 3))
        >>> items = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)
        >>> queries = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
        >>> evaluate_retrieval(queries, items, "ip", eval_set, ks=[1])["hit_rate@1"]
        0.5
    """
    bars = ProgressBars() if progress is True else progress or None
    exclude = eval_set.exclude if exclude_seen else None
    search = functools.partial(
        _search, user_vectors, max(ks), exclude, batch_size, bars, progress_label
    )  # the same search, over the index it is given
    found = search(build_index(item_vectors, metric, index, search_params), "searching")
    metrics = _score(found, eval_set.targets, ks, item_counts, all_reduce)
    if not is_exact(index):  # the share of the exact top K the approximate search found
        exact = search(build_index(item_vectors, metric), "exact search (ann_recall)")
        metrics |= _ann_recall(found, exact, ks, all_reduce)
    return metrics


def _score(
    found: np.ndarray,
    targets: ItemSets,
    ks: Sequence[int],
    item_counts: np.ndarray | None,
    all_reduce: AllReduce | None,
) -> dict[str, float]:
    """The metrics of the items ``found`` for each user (of all shares with ``all_reduce``)."""
    sums = metric_sums(hit_matrix(found, targets), targets.counts(), ks, found, item_counts)
    return (sums if all_reduce is None else reduce_sums(sums, all_reduce)).metrics()


def _ann_recall(
    found: np.ndarray, exact: np.ndarray, ks: Sequence[int], all_reduce: AllReduce | None
) -> dict[str, float]:
    """``ann_recall@K`` for every cut-off, over the users of all shares with ``all_reduce``."""
    if all_reduce is None:
        return {f"ann_recall@{cut}": overlap_at_k(found, exact, cut) for cut in ks}
    sums = [overlap_per_row(found, exact, cut).sum() for cut in ks] + [len(found)]
    totals = all_reduce(np.array(sums, dtype=np.float64), "sum")
    return {
        f"ann_recall@{cut}": float(total / totals[-1])
        for cut, total in zip(ks, totals[:-1], strict=True)
    }


def _search(
    user_vectors: np.ndarray,
    k: int,
    exclude: ItemSets | None,
    batch_size: int,
    bars: ProgressBars | None,
    progress_label: str,
    index: faiss.Index,
    what: str,
) -> np.ndarray:
    """:func:`search_top_k`'s items for every user (interests included), with a progress bar."""
    queries = int(np.prod(user_vectors.shape[:-1]))  # users x interests
    with progress_bar(bars, queries, f"{progress_label}: {what}", "query") as advance:
        found, _ = search_top_k(index, user_vectors, k, exclude, batch_size, advance)
    return found


def most_popular_metrics(
    item_counts: np.ndarray, eval_set: EvalSet, ks: Sequence[int] = (10, 20, 50)
) -> dict[str, float]:
    """Metrics of recommending the most popular unseen items to everyone (the baseline).

    Popularity ranking is inner-product search with a score of 1 per user and the item's
    training count per item, so it goes through exactly the same search and metrics as a model.

    Example:
        >>> from lit_matching.data.item_sets import ItemSets
        >>> users = np.array([0, 1])  # user 0 has seen item 2, the most popular one
        >>> eval_set = EvalSet(users, targets=ItemSets.from_pairs(users, [1, 2], 2, 3),
        ...                    exclude=ItemSets.from_pairs([0], [2], 2, 3))
        >>> metrics = most_popular_metrics(np.array([1, 5, 9]), eval_set, ks=[1])
        >>> metrics["hit_rate@1"], metrics["coverage@1"]  # user 0 gets item 1, user 1 item 2
        (1.0, 0.6666666666666666)
    """
    items = np.asarray(item_counts, dtype=np.float32)[:, None]
    users = np.ones((len(eval_set.users), 1), dtype=np.float32)
    return evaluate_retrieval(users, items, "ip", eval_set, ks, item_counts=item_counts)


class RetrievalEvaluator(Callback):
    """Logs full-catalogue retrieval metrics at the end of validation and test.

    At the end of each validation epoch (sanity check excluded) it encodes every item and every
    validation user (:func:`~lit_matching.retrieval.encoding.encode_catalogue`), builds a FAISS
    index (exact by default) whose metric ranks as the model's similarity
    (:attr:`Similarity.faiss_metric`), retrieves the top ``max(ks)`` items per user with the
    user's training items excluded, and logs, for every ``K`` in ``ks``, the metrics of
    :data:`~lit_matching.retrieval.metrics.METRICS`: ``val/recall@K``, ``val/ndcg@K``,
    ``val/hit_rate@K``, ``val/mrr@K``, ``val/precision@K`` and ``val/map@K``; and
    ``val/users`` / ``val/skipped_users`` (users evaluated / without a held-out item). On
    ``trainer.test`` it does the same on the test split as ``test/...``, excluding training
    and validation items.

    The data come from ``trainer.datamodule.eval_set(stage)`` (see
    :meth:`MatchingDataModule.eval_set`); the model must offer ``encode_users``,
    ``encode_items`` and ``similarity`` (as :class:`MatchingModule` does).

    Under DDP (world size above 1) the evaluation is sharded: each rank encodes and searches
    every ``world_size``-th user only (:func:`~lit_matching.retrieval.sharding.shard_eval_set`),
    against the whole catalogue, and the metrics are all-reduced exactly
    (:mod:`lit_matching.retrieval.sharding`), so every rank ends with the same metrics, those
    of one process up to float64 rounding; they are safe to monitor.

    With an approximate ``index`` (a FAISS index-factory string such as ``"HNSW32"`` or
    ``"IVF1024,Flat"``) it also logs ``{stage}/ann_recall@K``: the share of the exact top K
    the approximate search found, so approximate numbers are never mistaken for exact ones.
    With ``item_counts`` on the datamodule it logs ``{stage}/coverage@K`` (share of the
    catalogue recommended to anyone) and ``{stage}/popularity@K`` (mean training count of
    recommended items).

    Args:
        ks: Cut-offs.
        index: FAISS index-factory string; ``"Flat"`` (default) is exact.
        search_params: Search parameters of the index, e.g. ``{"efSearch": 128}``.
        exclude_seen: Exclude seen items (training items for validation, training and
            validation items for test).
        batch_size: Users / items encoded per forward pass, and queries per FAISS call.
        progress: Progress bars (on stderr, rank 0) for encoding users and items and for the
            search. ``None`` (default): when the trainer shows its progress bar and stderr is
            a terminal; see :mod:`lit_matching.utils.progress`.
        test_every_n_epochs: Also evaluate the test split at the end of every ``n``-th
            training epoch (0: never), logging ``test/...``: a learning curve for a fit with
            no validation part (e.g. the final fit on train + valid of a protocol whose epochs
            were chosen on valid). Never select a checkpoint by it.

    Example:
        >>> evaluator = RetrievalEvaluator(ks=(10, 50))
        >>> from pytorch_lightning.callbacks import ModelCheckpoint
        >>> checkpoint = ModelCheckpoint(monitor="val/recall@50", mode="max")
    """

    def __init__(
        self,
        ks: Sequence[int] = (10, 20, 50),
        index: str = EXACT,
        search_params: dict[str, float] | None = None,
        exclude_seen: bool = True,
        batch_size: int = 4096,
        progress: bool | None = None,
        test_every_n_epochs: int = 0,
    ):
        if not isinstance(test_every_n_epochs, int) or test_every_n_epochs < 0:
            raise ValueError(
                f"test_every_n_epochs has to be a non-negative integer, got {test_every_n_epochs!r}"
            )
        self.test_every_n_epochs = test_every_n_epochs
        self.ks = check_ks(ks)
        self.index = index
        self.search_params = dict(search_params or {})
        self.exclude_seen = exclude_seen
        self.batch_size = batch_size
        self.progress = progress
        #: The metrics of the last evaluation of each stage, e.g. ``{"val": {"recall@10": ..}}``.
        self.results: dict[str, dict[str, float]] = {}

    def evaluate(
        self,
        pl_module: CatalogueEncoder,
        eval_set: EvalSet,
        device: torch.device,
        num_items: int,
        item_counts: np.ndarray | None = None,
        user_features: Mapping[str, Tensor] | None = None,
        progress: bool | ProgressBars = False,
        progress_label: str = "retrieval",
        all_reduce: AllReduce | None = None,
    ) -> dict[str, float]:
        """Encode users and items with ``pl_module`` and compute the metrics.

        ``user_features`` (one row per ``eval_set.users``, e.g. with their history) default
        to the user ids alone. With ``progress`` (``True``, or the
        :class:`~lit_matching.utils.progress.ProgressBars` to use), bars labelled ``progress_label``
        show the encoding and the search. The module encodes in eval mode (no dropout) and
        is left in the mode it was in, each submodule's included. With ``all_reduce``,
        ``eval_set`` is this process's share of the users and the metrics are those of all
        shares (see :func:`evaluate_retrieval`).
        """
        if user_features is None:
            user_features = {"ids": torch.as_tensor(eval_set.users)}
        bars = ProgressBars() if progress is True else progress or None
        users, items = encode_catalogue(
            pl_module, user_features, num_items, device, self.batch_size, bars, progress_label
        )
        return evaluate_retrieval(
            users,
            items,
            pl_module.similarity.faiss_metric,
            eval_set,
            self.ks,
            exclude_seen=self.exclude_seen,
            index=self.index,
            search_params=self.search_params,
            item_counts=item_counts,
            batch_size=self.batch_size,
            progress=bars or False,
            progress_label=progress_label,
            all_reduce=all_reduce,
        )

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "eval_set"):
            raise RuntimeError(
                "RetrievalEvaluator needs a datamodule with eval_set(stage), such as "
                "MatchingDataModule; pass it as trainer.fit(model, datamodule=...)"
            )
        eval_set = datamodule.eval_set(stage)
        all_reduce = None
        if trainer.world_size > 1:  # each rank its share of the users, metrics reduced
            eval_set = shard_eval_set(eval_set, trainer.global_rank, trainer.world_size)
            all_reduce = torch_all_reduce(pl_module.device)
        features = (
            datamodule.user_features(stage, eval_set.users)
            if hasattr(datamodule, "user_features")
            else None
        )
        metrics = self.evaluate(
            pl_module,  # type: ignore[arg-type]
            eval_set,
            pl_module.device,
            datamodule.num_items,
            getattr(datamodule, "item_counts", None),
            features,
            progress=progress_bars(self.progress, trainer) or False,
            progress_label=stage,
            all_reduce=all_reduce,
        )
        self.results[stage] = metrics
        for name, value in metrics.items():
            pl_module.log(f"{stage}/{name}", value, sync_dist=True)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Evaluate on the validation split (skipped during the sanity check)."""
        if not trainer.sanity_checking:
            self._run(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Evaluate on the test split."""
        self._run(trainer, pl_module, "test")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Evaluate on the test split every ``test_every_n_epochs`` epochs (if set)."""
        n = self.test_every_n_epochs
        if not n or (trainer.current_epoch + 1) % n:
            return
        self._run(trainer, pl_module, "test")  # encodes in eval mode, without gradients
