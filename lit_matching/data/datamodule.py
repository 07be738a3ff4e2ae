"""``MatchingDataModule``: an interaction log turned into training tuples of one mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, get_worker_info

from lit_matching.data.interactions import IdVocabulary, index_interactions
from lit_matching.data.item_sets import EvalSet, ItemSets
from lit_matching.data.movielens import load_movielens_small
from lit_matching.data.sampling import UniformNegativeSampler
from lit_matching.data.split import leave_last_out

__all__ = ["MODES", "MatchingDataModule", "read_interactions"]

Batch = dict[str, Tensor]
BatchBuilder = Callable[[np.ndarray, np.ndarray, np.ndarray], Batch]


def labelled_batch(users: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> Batch:
    """Point-wise rows ``(user, item, label)``: each positive then its negatives, flattened."""
    num_negatives = negatives.shape[1]
    items = np.concatenate([positives[:, None], negatives], axis=1)
    labels = np.zeros_like(items, dtype=np.float32)
    labels[:, 0] = 1.0
    return {
        "users": torch.from_numpy(np.repeat(users, 1 + num_negatives)),
        "items": torch.from_numpy(items.reshape(-1)),
        "labels": torch.from_numpy(labels.reshape(-1)),
    }


def ranked_batch(users: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> Batch:
    """Pair- and list-wise rows ``(user, pos_item, neg_items[N])``."""
    return {
        "users": torch.from_numpy(users),
        "pos_items": torch.from_numpy(positives),
        "neg_items": torch.from_numpy(np.ascontiguousarray(negatives)),
    }


#: Training modes: name -> (batch builder, default number of negatives per positive).
MODES: dict[str, tuple[BatchBuilder, int]] = {
    "pointwise": (labelled_batch, 4),
    "pairwise": (ranked_batch, 1),
    "listwise": (ranked_batch, 8),
}
_MODE_NUMBERS = {0: "pointwise", 1: "pairwise", 2: "listwise"}


def _keep_batch(batch: Batch) -> Batch:
    # Datasets below return whole batches from __getitems__, so collation is the identity.
    return batch


class InteractionTuples(Dataset[Batch]):
    """Positive ``(user, item)`` pairs, with negatives drawn per batch.

    With ``resample=True`` every batch gets fresh negatives (so every epoch differs); with
    ``resample=False`` the negatives are drawn once from ``seed`` (for stable validation).
    Whole batches are built at once in :meth:`__getitems__`, which the ``DataLoader`` calls with
    the batch's indices.
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        sampler: UniformNegativeSampler,
        num_negatives: int,
        build: BatchBuilder,
        seed: int,
        resample: bool = True,
    ):
        self.users = np.asarray(users, dtype=np.int64)
        self.items = np.asarray(items, dtype=np.int64)
        self.sampler = sampler
        self.num_negatives = num_negatives
        self.build = build
        self.seed = seed
        self._generator: np.random.Generator | None = None
        self._worker_seed: int | None = None
        self.fixed_negatives = (
            None
            if resample
            else sampler.sample(self.users, num_negatives, np.random.default_rng(seed))
        )

    def __len__(self) -> int:
        return len(self.users)

    def _rng(self) -> np.random.Generator:
        # Each DataLoader worker gets its own stream; torch gives workers a new seed each epoch.
        info = get_worker_info()
        worker_seed = None if info is None else info.seed
        if self._generator is None or worker_seed != self._worker_seed:
            self._generator = np.random.default_rng([self.seed, worker_seed or 0])
            self._worker_seed = worker_seed
        return self._generator

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """The batch of the given positions, negatives included."""
        index = np.asarray(indices, dtype=np.int64)
        users = self.users[index]
        if self.fixed_negatives is None:
            negatives = self.sampler.sample(users, self.num_negatives, self._rng())
        else:
            negatives = self.fixed_negatives[index]
        return self.build(users, self.items[index], negatives)

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])


class _UserBatches(Dataset[Batch]):
    """All user indices, served as ``{"users": ...}`` batches for prediction."""

    def __init__(self, num_users: int):
        self.num_users = num_users

    def __len__(self) -> int:
        return self.num_users

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        return {"users": torch.as_tensor(np.asarray(indices, dtype=np.int64))}

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])


def read_interactions(path: str | Path) -> pd.DataFrame:
    r"""Read an interaction table from a ``.csv``, ``.tsv`` or ``.parquet`` file.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "log.tsv")
        >>> pd.DataFrame({"user_id": [1], "item_id": [2]}).to_csv(path, sep="\t", index=False)
        >>> read_interactions(path).to_dict("list")
        {'user_id': [1], 'item_id': [2]}
    """
    path = Path(path)
    suffixes = "".join(path.suffixes[-2:]).lower()
    if not path.exists():
        raise FileNotFoundError(f"interaction file {str(path)!r} does not exist")
    if ".parquet" in suffixes:
        return pd.read_parquet(path)
    if ".tsv" in suffixes:
        return pd.read_csv(path, sep="\t")
    if ".csv" in suffixes:
        return pd.read_csv(path)
    raise ValueError(
        f"cannot read {str(path)!r}: supported files are .csv, .tsv and .parquet "
        "(optionally compressed, e.g. .csv.gz)"
    )


class MatchingDataModule(LightningDataModule):
    """Interaction log -> contiguous ids -> leave-last-out split -> tuples of one mode.

    Raw user and item ids of any type map to indices ``0..n-1`` (sorted raw-id order). Each
    user's last interaction (by time, ties by row order) is the test target and the one before
    it the validation target; users with fewer than 3 interactions stay in training only. The
    training tuples depend on ``mode``:

    * ``"pointwise"`` (0): batches of ``(users, items, labels)``; every positive is followed by
      ``num_negatives`` negatives labelled 0, so a batch has ``batch_size * (1 + N)`` rows;
    * ``"pairwise"`` (1) and ``"listwise"`` (2): ``(users, pos_items, neg_items)`` with
      ``neg_items`` of shape ``(batch_size, N)``.

    Negatives are uniform over the catalogue, never one of the user's training positives,
    and drawn afresh for every training batch (so every epoch and every DDP rank differ).
    Validation and test tuples (for ``val/loss``) use negatives drawn once from ``seed`` that
    avoid all of the user's known items. Retrieval metrics read :meth:`eval_set`.

    Args:
        mode: ``"pointwise"``, ``"pairwise"`` or ``"listwise"`` (or 0, 1, 2).
        interactions: A DataFrame, a path to a ``.csv`` / ``.tsv`` / ``.parquet`` file, or
            ``None`` for the embedded MovieLens ``ml-latest-small`` ratings.
        user_col: Column of raw user ids.
        item_col: Column of raw item ids.
        time_col: Column that orders each user's interactions; ``None`` uses row order.
        num_negatives: Negatives per positive; defaults to 4 (point-wise), 1 (pair-wise) or
            8 (list-wise).
        batch_size: Positives per training batch.
        eval_batch_size: Rows per validation / test / predict batch.
        num_workers: ``DataLoader`` worker processes (batches are built vectorised, so 0 is
            usually fastest for in-memory data).
        seed: Seed of negative sampling (combined with the DDP rank).

    Example:
        >>> dm = MatchingDataModule(mode="listwise", batch_size=2, num_negatives=3)
        >>> dm.num_users, dm.num_items
        (671, 9066)
        >>> dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))
        >>> {key: tuple(value.shape) for key, value in batch.items()}
        {'users': (2,), 'pos_items': (2,), 'neg_items': (2, 3)}
    """

    def __init__(
        self,
        mode: str | int = "listwise",
        interactions: pd.DataFrame | str | None = None,
        user_col: str = "user_id",
        item_col: str = "item_id",
        time_col: str | None = "timestamp",
        num_negatives: int | None = None,
        batch_size: int = 1024,
        eval_batch_size: int = 4096,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.mode = _MODE_NUMBERS.get(mode, mode) if isinstance(mode, int) else mode
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {list(MODES)} or 0, 1, 2")
        self.build_batch, default_negatives = MODES[self.mode]
        self.num_negatives = default_negatives if num_negatives is None else num_negatives
        for name, value in (
            ("num_negatives", self.num_negatives),
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} has to be a positive integer, got {value!r}")
        self.interactions = interactions
        self.user_col, self.item_col, self.time_col = user_col, item_col, time_col
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._prepared = False

    # ------------------------------------------------------------------ preparation
    def _load_frame(self) -> pd.DataFrame:
        if self.interactions is None:
            return load_movielens_small()
        if isinstance(self.interactions, pd.DataFrame):
            return self.interactions
        return read_interactions(self.interactions)

    def _prepare(self) -> None:
        if self._prepared:
            return
        data = index_interactions(self._load_frame(), self.user_col, self.item_col, self.time_col)
        split = leave_last_out(data.frame)
        self.user_vocab: IdVocabulary = data.users
        self.item_vocab: IdVocabulary = data.items
        self.splits = split
        shape = (len(data.users), len(data.items))
        self.train_items, self.val_items, self.test_items = (
            ItemSets.from_pairs(part.user.to_numpy(), part.item.to_numpy(), *shape)
            for part in (split.train, split.val, split.test)
        )
        self.item_counts = np.bincount(split.train.item, minlength=shape[1])
        cold = [
            int((self.item_counts[part.item.to_numpy()] == 0).sum())
            for part in (split.val, split.test)
        ]
        rank_zero_info(
            f"lit_matching: {shape[0]} users, {shape[1]} items; "
            f"{len(split.train)} train / {len(split.val)} val / {len(split.test)} test "
            f"interactions (leave-last-out); cold targets (item unseen in training): "
            f"{cold[0]} val, {cold[1]} test"
        )
        self._prepared = True

    @property
    def num_users(self) -> int:
        """Number of distinct users (size of the user vocabulary)."""
        self._prepare()
        return len(self.user_vocab)

    @property
    def num_items(self) -> int:
        """Number of distinct items (size of the item vocabulary)."""
        self._prepare()
        return len(self.item_vocab)

    def eval_set(self, stage: str) -> EvalSet:
        """Users, targets and excluded items for retrieval evaluation of ``"val"`` or ``"test"``.

        Validation excludes each user's training items; test excludes training and validation
        items.
        """
        self._prepare()
        if stage == "val":
            targets, exclude = self.val_items, self.train_items
        elif stage == "test":
            targets, exclude = self.test_items, self.train_items.union(self.val_items)
        else:
            raise ValueError(f"stage must be 'val' or 'test', got {stage!r}")
        users = np.flatnonzero(targets.counts() > 0)
        return EvalSet(users=users, targets=targets.select(users), exclude=exclude.select(users))

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Load, index and split the log (once); build the samplers."""
        self._prepare()
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self._train_sampler = UniformNegativeSampler(self.train_items)
        all_items = self.train_items.union(self.val_items).union(self.test_items)
        self._eval_sampler = UniformNegativeSampler(all_items)
        # Distinct streams per rank: DDP ranks must not draw the same negatives.
        self._train_seed = self.seed * 1_000_003 + rank

    def _loader(self, dataset: Dataset[Batch], batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=_keep_batch,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _tuples(
        self, part: pd.DataFrame, sampler: UniformNegativeSampler, seed: int, resample: bool
    ) -> InteractionTuples:
        return InteractionTuples(
            part.user.to_numpy(),
            part.item.to_numpy(),
            sampler,
            self.num_negatives,
            self.build_batch,
            seed=seed,
            resample=resample,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training tuples with fresh negatives per batch."""
        tuples = self._tuples(self.splits.train, self._train_sampler, self._train_seed, True)
        return self._loader(tuples, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation tuples (fixed negatives), for ``val/loss``."""
        tuples = self._tuples(self.splits.val, self._eval_sampler, self.seed + 1, False)
        return self._loader(tuples, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test tuples (fixed negatives), for ``test/loss``."""
        tuples = self._tuples(self.splits.test, self._eval_sampler, self.seed + 2, False)
        return self._loader(tuples, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Every user index, as ``{"users": ...}`` batches."""
        return self._loader(_UserBatches(self.num_users), self.eval_batch_size, shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """The id vocabularies, saved with checkpoints so indices can be mapped back."""
        self._prepare()
        return {"user_ids": self.user_vocab.to_list(), "item_ids": self.item_vocab.to_list()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Check that a checkpoint's vocabularies match this data."""
        self._prepare()
        for key, vocab in (("user_ids", self.user_vocab), ("item_ids", self.item_vocab)):
            if key in state_dict and state_dict[key] != vocab.to_list():
                raise ValueError(
                    f"checkpoint {key} differ from this data's ({len(state_dict[key])} vs "
                    f"{len(vocab)} ids): the model was trained on other data"
                )
