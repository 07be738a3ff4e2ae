"""``MatchingDataModule``: an interaction log turned into training tuples of one mode.

A thin composition: the arguments are checked by :mod:`lit_matching.data.arguments`, the log
is prepared (read, cleaned, indexed, split) by :mod:`lit_matching.data.pipeline`, batches are
built by :mod:`lit_matching.data.tuples` in the mode contract of
:mod:`lit_matching.data.batches`, and checkpoints resume through :mod:`lit_matching.data.resume`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any, Literal

import numpy as np
import torch
from pytorch_lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from lit_matching.data.arguments import check_arguments, side_features
from lit_matching.data.batches import MODES, ArrayBatchSampler, BatchBuilder, batch_loader
from lit_matching.data.features import FeatureSpec
from lit_matching.data.pipeline import AUTO_TIME, DataPipeline, PreparedData
from lit_matching.data.prepare import is_prepared
from lit_matching.data.prepared_views import PreparedDataViews
from lit_matching.data.resume import (
    EpochBatchSampler,
    EpochCounter,
    ResumableLoader,
    checkpoint_state,
    restore_checkpoint_state,
)
from lit_matching.data.sampling import NegativeSampler, negative_sampler
from lit_matching.data.shards import PREPARED_ARGUMENTS, PreparedShards, ShardBatches, shard_loader
from lit_matching.data.tuples import HistoryLookup, InteractionTuples, UserBatches, stage_tuples
from lit_matching.utils.progress import progress_enabled, progress_steps

__all__ = ["MatchingDataModule"]

# Typed ``Any`` for LightningCLI: with ``pd.DataFrame`` in the annotation jsonargparse reads
# a file path given on the command line and passes the file's content instead of the path.
# Accepted: a DataFrame, a path, a mapping of split names to either, or None.
Interactions = Any


class MatchingDataModule(PreparedDataViews, LightningDataModule):
    """Interaction log -> cleaning -> contiguous ids -> split -> training tuples of one mode.

    **Input** (``interactions``): a DataFrame; a file (``.csv``, ``.tsv``, ``.parquet``,
    MovieLens ``ratings.dat`` / ``u.data``, RecBole ``.inter``, per-user lines ``.txt``; see
    :func:`~lit_matching.data.readers.read_interactions`); a folder with pre-split
    ``train.txt`` / ``valid.txt`` / ``test.txt``; a mapping ``{"train": ..., "valid": ...,
    "test": ...}`` of frames or files; or ``None`` for the embedded MovieLens
    ``ml-latest-small`` ratings. Files read by the readers have the columns ``user_id``,
    ``item_id`` and, where the format has them, ``rating`` and ``timestamp``. A part of
    pre-split input may be a list of frames or files, concatenated: with ``split_files =
    [[train.txt, valid.txt], null, test.txt]`` a folder trains on train + valid (no
    validation part: see :class:`~lit_matching.retrieval.evaluation.RetrievalEvaluator`'s
    ``test_every_n_epochs`` for a learning curve).

    **Cleaning**, each step logged with what it dropped: ratings below ``min_rating`` (implicit
    feedback), repeated ``(user, item)`` pairs (keeping the ``duplicates`` one in time), and a
    k-core filter (``min_user_interactions`` / ``min_item_interactions``).

    **Ids**: raw ids map to ``0..n-1`` (sorted raw-id order); the vocabularies are saved in
    checkpoints (:meth:`state_dict`). Ids must be strings or finite numbers, not both in one
    column (what an export writes as JSON): others fail while the data is read, naming the
    file, column and line or row.

    **Split** (``split``, with ``split_options``): ``"leave_last_out"`` (default: each user's
    last interaction by time, ties in row order, is test, the one before validation),
    ``"random_leave_one_out"``, ``"ratio"`` (per user, e.g. ``ratios=(0.8, 0.1, 0.1)``,
    ``order="time"`` or ``"random"``) or ``"time_cut"`` (``val_start``, ``test_start``); see
    :mod:`lit_matching.data.splits`. Pre-split input keeps its parts (a ``(user, item)`` pair
    in two parts is an error). Users too short for a split stay in training only (logged).

    **Tuples** per ``mode``:

    * ``"pointwise"`` (0): ``(users, items, labels)``; every positive is followed by
      ``num_negatives`` negatives labelled 0, so a batch has ``batch_size * (1 + N)`` rows;
    * ``"pairwise"`` (1) and ``"listwise"`` (2): ``(users, pos_items, neg_items)`` with
      ``neg_items`` of shape ``(batch_size, N)``, ``neg_log_q``, their sampling
      log-probabilities, and ``pos_log_q``, the log-probability of each positive being drawn
      into a batch (its share of the training interactions), which is the sampling probability
      of in-batch negatives. For the mixture of both sources, ``neg_batch_log_q`` gives the
      negatives' in-batch log-probabilities and ``pos_sampler_log_q`` the positives' under the
      sampler. All serve :class:`~lit_matching.modes.listwise.ListwiseMatching`'s log-Q correction.

    Negatives (``"uniform"``, or ``"popularity"`` proportional to ``count ** alpha``) are
    never one of the user's training positives and are drawn afresh for every training batch
    from a stream seeded by ``(seed, DDP rank, epoch, batch number)``: every epoch and every
    rank differ, the same seed repeats, and neither ``num_workers`` nor earlier batches change
    a batch. Nothing of size ``N x interactions`` is built up front. Validation and test
    tuples (for ``val/loss``) use uniform negatives drawn once from ``seed`` that avoid all of
    the user's known items. Retrieval metrics read :meth:`eval_set`.

    **Exact resume**: each epoch's order is drawn from ``(seed, epoch)`` (under DDP,
    Lightning's ``DistributedSampler`` orders by the ``seed_everything`` seed and the epoch),
    and data loading never draws from the global torch RNG. Checkpoints keep the position of
    the next training batch and the global random states (torch, CUDA, numpy, Python: what
    dropout draws from), restored by ``trainer.fit(..., ckpt_path=...)``; so a fit resumed
    from a mid-epoch checkpoint continues with the batches, negatives and dropout masks of the
    uninterrupted run, also with ``num_workers > 0``, and ends with the same parameters (on
    CPU with ``Trainer(deterministic=True)``). A stop by ``max_steps`` ends Lightning's epoch
    early: resume it with a larger ``max_steps``. Under DDP every rank gets rank 0's random
    states, which equal its own when all ranks share one seed (Lightning's default).

    With ``history_length = L > 0`` every batch also carries ``history`` ``(B, L)``: the last
    ``L`` training items of the user strictly before the row's interaction (for test rows,
    training and validation items), left-padded with ``num_items``, and ``history_length``.

    Args:
        mode: ``"pointwise"``, ``"pairwise"`` or ``"listwise"`` (or 0, 1, 2).
        interactions: See above.
        file_format: Format of files (``"auto"`` infers it from the name).
        split_files: File names of the ``(train, valid, test)`` parts of a folder given as
            ``interactions``; a list of names is one part made of those files; the validation
            entry may be ``None`` (no validation part).
        user_col: Column of raw user ids.
        item_col: Column of raw item ids.
        time_col: Column that orders each user's interactions; ``None`` uses row order.
            ``"auto"`` (default): ``"timestamp"``, except for files of a format that may
            carry no time (per-user lines, triples, RecBole) and have none, which are in
            row order (the order of the file); a column named explicitly must exist.
        rating_col: Column of ratings (used by ``min_rating``).
        min_rating: Keep only interactions rated at least this (``None``: keep all).
        duplicates: Which of repeated ``(user, item)`` interactions to keep, ``"last"`` or
            ``"first"``.
        min_user_interactions: k-core: drop users with fewer interactions (0: off).
        min_item_interactions: k-core: drop items with fewer interactions (0: off).
        split: Name of the split strategy (ignored for pre-split input).
        split_options: Keyword arguments of the split strategy.
        num_negatives: Negatives per positive; defaults to 4 (point-wise), 1 (pair-wise) or
            8 (list-wise). List-wise accepts 0: in-batch negatives only.
        negative_sampler: ``"uniform"`` or ``"popularity"``.
        popularity_alpha: Exponent of the popularity sampler.
        history_length: Length of the per-row history (0: no history).
        user_side_features: A table of user side features (DataFrame or file: csv, tsv,
            parquet, RecBole ``.user``), one row per raw user id in column ``user_col``.
        user_feature_specs: Which of its columns to encode and how
            (:class:`~lit_matching.data.features.Categorical`, ``Numeric``, ``MultiCategorical``);
            the encoded table is :attr:`user_feature_table`, given to towers as ``table``.
            In a config each entry is ``{class_path: lit_matching.Numeric, init_args:
            {name: age}}`` (see the packaged ``ml100k-features`` config).
        item_side_features: The same for items (e.g. RecBole ``.item``), keyed by ``item_col``.
        item_feature_specs: Which of its columns to encode; see :attr:`item_feature_table`.
        batch_size: Positives per training batch.
        eval_batch_size: Rows per validation / test / predict batch.
        num_workers: ``DataLoader`` worker processes (batches are built vectorised, so 0 is
            usually fastest for in-memory data).
        seed: Seed of the training order (on one device) and of negative sampling
            (combined with the DDP rank).
        progress: A progress bar (stderr, rank 0) over the preparation steps: reading,
            cleaning, indexing, splitting, item sets, feature tables. ``None`` (default): when
            stderr is a terminal (the ``lit-matching`` CLI turns it off with the trainer's
            ``enable_progress_bar=false``); see :mod:`lit_matching.utils.progress`.

    Example:
        >>> dm = MatchingDataModule(mode="listwise", batch_size=2, num_negatives=3)
        >>> dm.num_users, dm.num_items
        (671, 9066)
        >>> dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))
        >>> sorted(batch)  # doctest: +NORMALIZE_WHITESPACE
        ['neg_batch_log_q', 'neg_items', 'neg_log_q', 'pos_items', 'pos_log_q',
         'pos_sampler_log_q', 'users']
        >>> batch["neg_items"].shape, batch["pos_items"].shape
        (torch.Size([2, 3]), torch.Size([2]))
    """

    _data: PreparedData | PreparedShards | None = None  # the prepared data, on first use

    def __init__(
        self,
        mode: str | int = "listwise",
        interactions: Interactions = None,
        file_format: str = "auto",
        split_files: Sequence[str | Sequence[str] | None] = ("train.txt", "valid.txt", "test.txt"),
        user_col: str = "user_id",
        item_col: str = "item_id",
        time_col: str | None = AUTO_TIME,
        rating_col: str = "rating",
        min_rating: float | None = None,
        duplicates: Literal["last", "first"] = "last",
        min_user_interactions: int = 0,
        min_item_interactions: int = 0,
        split: str = "leave_last_out",
        split_options: dict[str, Any] | None = None,
        num_negatives: int | None = None,
        negative_sampler: str = "uniform",
        popularity_alpha: float = 0.75,
        history_length: int = 0,
        user_side_features: Interactions = None,
        user_feature_specs: Sequence[FeatureSpec] = (),
        item_side_features: Interactions = None,
        item_feature_specs: Sequence[FeatureSpec] = (),
        batch_size: int = 1024,
        eval_batch_size: int = 4096,
        num_workers: int = 0,
        seed: int = 0,
        progress: bool | None = None,
    ):
        super().__init__()
        self.mode, self.num_negatives = check_arguments(
            mode,
            num_negatives,
            sizes={"batch_size": batch_size, "eval_batch_size": eval_batch_size},
            counts={
                "history_length": history_length,
                "min_user_interactions": min_user_interactions,
                "min_item_interactions": min_item_interactions,
            },
            negative_sampler=negative_sampler,
            split=split,
            duplicates=duplicates,
        )
        self.side_features = side_features(
            (user_side_features, user_feature_specs, user_col),
            (item_side_features, item_feature_specs, item_col),
        )
        self.interactions, self.file_format = interactions, file_format
        self.split_files = split_files
        self.user_col, self.item_col, self.time_col = user_col, item_col, time_col
        self.rating_col, self.min_rating, self.duplicates = rating_col, min_rating, duplicates
        self.min_user_interactions = min_user_interactions
        self.min_item_interactions = min_item_interactions
        self.split, self.split_options = split, dict(split_options or {})
        self.negative_sampler, self.popularity_alpha = negative_sampler, popularity_alpha
        self.history_length = history_length
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed, self.progress = num_workers, seed, progress
        self._epoch_counter = EpochCounter()  # for the DataModule's life: epochs continue

    # ------------------------------------------------------------------ preparation
    @property
    def build_batch(self) -> BatchBuilder:
        """The mode's batch builder (see :data:`~lit_matching.data.batches.MODES`)."""
        return MODES[self.mode][0]

    def _prepare(self) -> PreparedData | PreparedShards:
        """The prepared data, from the pipeline on first use (with a progress bar)."""
        if self._data is None and is_prepared(self.interactions):
            self._data = self._open_prepared()
        if self._data is None:
            # The pipeline's fields are the DataModule's attributes of the same names.
            pipeline = DataPipeline(**{f.name: getattr(self, f.name) for f in fields(DataPipeline)})
            shown = progress_enabled(self.progress, self.trainer)
            with progress_steps(pipeline.steps(), "lit_matching data", shown) as step:
                self._data = pipeline.run(step)
        return self._data

    def _open_prepared(self) -> PreparedShards:
        """The folder ``lit-matching prepare`` wrote, with this DataModule's feature tables."""
        defaults = inspect.signature(MatchingDataModule.__init__).parameters

        def plain(value: Any) -> Any:  # a config's list equals the default tuple
            return list(value) if isinstance(value, (list, tuple)) else value or None

        changed = [
            name
            for name in PREPARED_ARGUMENTS
            if plain(getattr(self, name)) != plain(defaults[name].default)
        ]
        shards = PreparedShards.open(self.interactions, changed, self.history_length)
        pipeline = DataPipeline(interactions=None, side_features=self.side_features)
        vocabs = {"user": shards.user_vocab, "item": shards.item_vocab}
        tables = {side: pipeline.feature_table(side, vocabs[side]) for side in vocabs}
        return replace(shards, feature_tables=tables)

    def tower_arguments(self, side: str) -> dict[str, Any]:
        """Vocabulary sizes a tower of ``side`` (``"user"`` or ``"item"``) may need, by name.

        ``num_embeddings`` is the size of that side's id vocabulary; ``num_users`` and
        ``num_items`` are what they say; ``table`` is that side's encoded
        :class:`~lit_matching.data.features.FeatureTable`, when side features were given. The
        ``lit-matching`` CLI fills unset tower arguments of these names from here.

        Example:
            >>> MatchingDataModule().tower_arguments("item")
            {'num_embeddings': 9066, 'num_users': 671, 'num_items': 9066}
        """
        if side not in ("user", "item"):
            raise ValueError(f"side must be 'user' or 'item', got {side!r}")
        sizes = {"num_users": self.num_users, "num_items": self.num_items}
        table = self.user_feature_table if side == "user" else self.item_feature_table
        return (
            {"num_embeddings": sizes[f"num_{side}s"]}
            | sizes
            | ({"table": table} if table is not None else {})
        )

    def user_features(self, stage: str, users: np.ndarray) -> dict[str, Tensor]:
        """Features of ``users`` to encode them at ``stage``: ``"val"``, ``"test"`` or ``"serve"``.

        Always ``"ids"``; with ``history_length > 0`` also ``"history"`` (the user's last items
        known at that stage: training items for validation, training and validation items for
        test, everything for serving) and ``"history_length"``.

        Example:
            >>> dm = MatchingDataModule(history_length=3)
            >>> features = dm.user_features("test", np.array([0, 5]))
            >>> {key: tuple(value.shape) for key, value in features.items()}
            {'ids': (2,), 'history': (2, 3), 'history_length': (2,)}
        """
        data = self._prepare()
        users = np.asarray(users, dtype=np.int64)
        features = {"ids": torch.from_numpy(users)}
        if self.history_length:
            lookup = (
                data.latest_history(stage, users, self.history_length)
                if isinstance(data, PreparedShards)
                else HistoryLookup.latest(
                    data.history_source(stage), users, self.history_length, pad=self.num_items
                )
            )
            history, lengths = lookup.gather(np.arange(len(users)))
            features |= {
                "history": torch.from_numpy(history),
                "history_length": torch.from_numpy(lengths),
            }
        return features

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Load, clean, index and split the log (once); build the samplers."""
        self._prepare()
        self._rank = self.trainer.global_rank if self.trainer is not None else 0
        self._world_size = getattr(self.trainer, "world_size", 1)
        self._train_sampler = negative_sampler(
            self.negative_sampler, self.item_counts, self.train_items, self.popularity_alpha
        )
        self._train_dataset: InteractionTuples | ShardBatches | None = None

    @property
    def train_sampler(self) -> NegativeSampler:
        """The sampler of the training negatives (after :meth:`setup`)."""
        return self._train_sampler

    def set_train_sampler(self, sampler: NegativeSampler) -> None:
        """Draw the training negatives from ``sampler`` from the next training batch on.

        The loader built last (in memory or streamed from prepared shards) takes it too, so a
        swap in ``on_train_epoch_start`` reaches that epoch's batches without rebuilding the
        loader. Loader workers (``num_workers > 0``, persistent) keep the copy they started
        with: there the swap reaches only loaders built afterwards.
        """
        self._train_sampler = sampler
        if self._train_dataset is not None:
            self._train_dataset.sampler = sampler

    def _tuples(self, stage: str) -> InteractionTuples:
        data = self._prepare()
        if isinstance(data, PreparedShards):
            return data.held_out_tuples(
                stage, self.build_batch, self.num_negatives, self.history_length, self.seed
            )
        return stage_tuples(
            data,
            stage,
            self._train_sampler if stage == "train" else data.eval_sampler,
            build=self.build_batch,
            num_negatives=self.num_negatives,
            history_length=self.history_length,
            seed=[self.seed, self._rank],
        )

    def _pin_memory(self) -> bool:
        return type(getattr(self.trainer, "accelerator", None)).__name__ == "CUDAAccelerator"

    def _loader(
        self,
        dataset: InteractionTuples | UserBatches,
        batches: ArrayBatchSampler,
        loader_class: type[DataLoader] = DataLoader,
    ) -> DataLoader:
        return batch_loader(
            dataset,
            batches,
            num_workers=self.num_workers,
            seed=self.seed,
            pin_memory=self._pin_memory(),
            loader_class=loader_class,
        )

    def _in_order(self, dataset: InteractionTuples | UserBatches) -> DataLoader:
        order = SequentialSampler(dataset)
        return self._loader(dataset, ArrayBatchSampler(order, self.eval_batch_size, False))

    def train_dataloader(self) -> DataLoader:
        """Shuffled training tuples with fresh negatives per batch, resumable mid-epoch."""
        data = self._prepare()
        if isinstance(data, PreparedShards):
            stream = ShardBatches(
                data,
                batch_size=self.batch_size,
                sampler=self._train_sampler,
                num_negatives=self.num_negatives,
                build=self.build_batch,
                seed=self.seed,
                rank=self._rank,
                world_size=self._world_size,
                history_length=self.history_length,
            )
            self._train_dataset = stream
            return shard_loader(
                stream,
                self._epoch_counter,
                num_workers=self.num_workers,
                seed=self.seed,
                pin_memory=self._pin_memory(),
            )
        dataset = self._train_dataset = self._tuples("train")
        batches = EpochBatchSampler(
            RandomSampler(dataset), self.batch_size, False, self._epoch_counter, seed=self.seed
        )
        return self._loader(dataset, batches, ResumableLoader)

    def val_dataloader(self) -> DataLoader:
        """Validation tuples (fixed negatives), for ``val/loss``."""
        return self._in_order(self._tuples("val"))

    def test_dataloader(self) -> DataLoader:
        """Test tuples (fixed negatives), for ``test/loss``."""
        return self._in_order(self._tuples("test"))

    def predict_dataloader(self) -> DataLoader:
        """Every user index, as ``{"users": ...}`` batches."""
        return self._in_order(UserBatches(self.num_users))

    def state_dict(self) -> dict[str, Any]:
        """What checkpoints keep of the data: id vocabularies, training position, RNG states.

        ``user_ids`` and ``item_ids`` map indices back to raw ids. ``train_position`` (epoch
        and batch number of the next training batch) and ``rng`` (the global torch, CUDA,
        numpy and Python random states, which dropout draws from) let a fit resumed from the
        checkpoint continue as the uninterrupted run would have; see
        :mod:`lit_matching.data.resume`.
        """
        data = self._prepare()
        return checkpoint_state(data.user_vocab, data.item_vocab, self._epoch_counter, self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Check a checkpoint's vocabularies; when fitting, resume its position and RNG states."""
        data = self._prepare()
        restore_checkpoint_state(
            state_dict, data.user_vocab, data.item_vocab, self._epoch_counter, self.trainer
        )
