"""``MatchingDataModule``: an interaction log turned into training tuples of one mode."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from lit_matching.data.cleaning import drop_duplicates, k_core, keep_min_rating
from lit_matching.data.features import (
    Categorical,
    FeatureSpec,
    FeatureTable,
    MultiCategorical,
    Numeric,
)
from lit_matching.data.interactions import (
    IdVocabulary,
    IndexedInteractions,
    index_interactions,
    validate_interactions,
)
from lit_matching.data.item_sets import EvalSet, ItemSets
from lit_matching.data.movielens import load_movielens_small
from lit_matching.data.readers import (
    detect_format,
    read_interactions,
    read_recbole,
    split_file_paths,
    table_line,
)
from lit_matching.data.sampling import (
    NegativeSampler,
    PopularityNegativeSampler,
    UniformNegativeSampler,
)
from lit_matching.data.splits import SPLITS, Split, presplit
from lit_matching.data.tuples import (
    MODES,
    ArrayBatchSampler,
    EpochBatchSampler,
    EpochCounter,
    HistoryLookup,
    InteractionTuples,
    UserBatches,
    keep_batch,
)
from lit_matching.utils.progress import progress_enabled, progress_steps

__all__ = ["MatchingDataModule"]

_MODE_NUMBERS = {0: "pointwise", 1: "pairwise", 2: "listwise"}
_SAMPLERS = ("uniform", "popularity")
_PART_NAMES = {"train": "train", "valid": "val", "val": "val", "test": "test"}
# Typed ``Any`` for LightningCLI: with ``pd.DataFrame`` in the annotation jsonargparse reads
# a file path given on the command line and passes the file's content instead of the path.
# Accepted: a DataFrame, a path, a mapping of split names to either, or None.
Interactions = Any
#: ``time_col`` default: ``"timestamp"``, or row order for files of a format without time.
AUTO_TIME = "auto"
_TIMELESS_FORMATS = ("user-lines", "triples", "recbole")  # RecBole files may lack a timestamp
_SEPARATORS = {"csv": ",", "tsv": "\t"}


@dataclass(frozen=True, eq=False)
class _Piece:
    """One frame as given or read from one file, with what is needed to name its rows."""

    frame: pd.DataFrame
    file: Path | None = None  # None: a DataFrame given as such
    format: str | None = None  # the reader's format of ``file``

    def where(self, position: int) -> str:
        """The row at ``position``: its index label, or the line / row of the file."""
        if self.file is None:
            return f"row {self.frame.index[position]!r}"
        if self.format in _SEPARATORS:
            return f"line {table_line(self.file, position, _SEPARATORS[self.format])}"
        return f"row {position}"


def _feature_specs(specs: Sequence[FeatureSpec], side: str) -> tuple[FeatureSpec, ...]:
    """``specs`` as a tuple; ``TypeError`` naming the first entry that is not a spec."""
    kinds = (Categorical, Numeric, MultiCategorical)
    if isinstance(specs, (str, Mapping, *kinds)):
        raise TypeError(f"{side}_feature_specs has to be a list of feature specs, got {specs!r}")
    specs = tuple(specs)
    for position, spec in enumerate(specs):
        if not isinstance(spec, kinds):
            raise TypeError(
                f"{side}_feature_specs[{position}] is {spec!r}, not a feature spec: give "
                "Categorical(name), Numeric(name) or MultiCategorical(name, sep=...) from "
                "lit_matching (in a config: {class_path: lit_matching.Numeric, init_args: "
                "{name: age}})"
            )
    return specs


class MatchingDataModule(LightningDataModule):
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
        self.mode = _MODE_NUMBERS.get(mode, mode) if isinstance(mode, int) else mode
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {list(MODES)} or 0, 1, 2")
        self.build_batch, default_negatives = MODES[self.mode]
        self.num_negatives = default_negatives if num_negatives is None else num_negatives
        if self.mode == "listwise" and self.num_negatives == 0:
            pass  # in-batch negatives only (ListwiseMatching(in_batch_negatives=True))
        elif not isinstance(self.num_negatives, int) or self.num_negatives < 1:
            raise ValueError(
                f"num_negatives has to be a positive integer (or 0 for list-wise in-batch "
                f"negatives only), got {self.num_negatives!r}"
            )
        for name, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} has to be a positive integer, got {value!r}")
        for name, value in (
            ("history_length", history_length),
            ("min_user_interactions", min_user_interactions),
            ("min_item_interactions", min_item_interactions),
        ):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} has to be a non-negative integer, got {value!r}")
        if negative_sampler not in _SAMPLERS:
            raise ValueError(
                f"unknown negative_sampler {negative_sampler!r}; expected one of {list(_SAMPLERS)}"
            )
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        if duplicates not in ("last", "first"):
            raise ValueError(f"duplicates must be 'last' or 'first', got {duplicates!r}")
        self.interactions = interactions
        self.file_format = file_format
        self.split_files = split_files
        self.user_col, self.item_col, self.time_col = user_col, item_col, time_col
        self.rating_col, self.min_rating, self.duplicates = rating_col, min_rating, duplicates
        self.min_user_interactions = min_user_interactions
        self.min_item_interactions = min_item_interactions
        self.split, self.split_options = split, dict(split_options or {})
        self.negative_sampler, self.popularity_alpha = negative_sampler, popularity_alpha
        self.history_length = history_length
        self.side_features = {
            "user": (user_side_features, _feature_specs(user_feature_specs, "user"), user_col),
            "item": (item_side_features, _feature_specs(item_feature_specs, "item"), item_col),
        }
        for side, (table, specs, _) in self.side_features.items():
            if (table is None) != (not specs):
                raise ValueError(
                    f"{side}_side_features and {side}_feature_specs go together: give both "
                    "(the table and which of its columns to encode) or neither"
                )
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.progress = progress
        self._prepared = False

    # ------------------------------------------------------------------ preparation
    def _read(self, source: pd.DataFrame | str) -> pd.DataFrame:
        if isinstance(source, pd.DataFrame):
            return source
        return read_interactions(source, format=self.file_format)

    def _piece(self, source: pd.DataFrame | str | Path, format: str | None = None) -> _Piece:
        """A frame, or the file ``source`` read in ``format`` (default ``file_format``)."""
        if isinstance(source, pd.DataFrame):
            return _Piece(source)
        path = Path(source)
        format = format or self.file_format
        if format == "auto":
            format = detect_format(path)
        return _Piece(read_interactions(path, format=format), path, format)

    def _resolved_time_col(self, pieces: Sequence[_Piece]) -> str | None:
        """``time_col``, with ``"auto"`` resolved for ``pieces`` (see the class docstring)."""
        if self.time_col != AUTO_TIME:
            return self.time_col
        timeless = all(
            piece.format in _TIMELESS_FORMATS and "timestamp" not in piece.frame.columns
            for piece in pieces
        )
        return None if timeless else "timestamp"

    def _validated(self, parts: dict[str, list[_Piece]]) -> dict[str, pd.DataFrame]:
        """Each part's pieces checked (errors name the file and line) and concatenated."""
        self._time_col = self._resolved_time_col([p for pieces in parts.values() for p in pieces])
        frames = {}
        for name, pieces in parts.items():
            for piece in pieces:
                if len(piece.frame) == 0 and len(pieces) > 1:
                    continue  # an empty file among others adds nothing; an empty part fails
                try:
                    validate_interactions(
                        piece.frame, self.user_col, self.item_col, self._time_col, piece.where
                    )
                except ValueError as err:
                    if piece.file is None:
                        raise
                    raise ValueError(f"{piece.file}: {err}") from None
            frames[name] = (
                pieces[0].frame
                if len(pieces) == 1
                else pd.concat([piece.frame for piece in pieces], ignore_index=True)
            )
        return frames

    def _clean(self, frame: pd.DataFrame) -> pd.DataFrame:
        validate_interactions(frame, self.user_col, self.item_col, self._time_col)
        if self.min_rating is not None:
            frame = keep_min_rating(
                frame, self.min_rating, self.rating_col, self.user_col, self.item_col
            )
        return drop_duplicates(
            frame, self.user_col, self.item_col, self._time_col, keep=self.duplicates
        )

    def _k_core(self, frame: pd.DataFrame) -> pd.DataFrame:
        if not (self.min_user_interactions or self.min_item_interactions):
            return frame
        return k_core(
            frame,
            self.min_user_interactions,
            self.min_item_interactions,
            self.user_col,
            self.item_col,
        )

    def _presplit_parts(self) -> dict[str, list[_Piece]] | None:
        """The parts of pre-split input (a folder or a mapping), else ``None``."""
        source = self.interactions
        if isinstance(source, (str, Path)) and Path(source).is_dir():
            # As read_split_files, one piece per file: errors name the file.
            format, paths = split_file_paths(source, self.split_files, format=self.file_format)
            return {
                part: [self._piece(path, format) for path in files] for part, files in paths.items()
            }
        if isinstance(source, Mapping):
            unknown = sorted(set(source) - set(_PART_NAMES))
            if unknown or "train" not in source or "test" not in source:
                raise ValueError(
                    f"pre-split interactions need keys 'train' and 'test' (and optionally "
                    f"'valid'), got {sorted(source)}"
                )
            return {
                name: [self._piece(p) for p in part]
                if isinstance(part, (list, tuple))
                else [self._piece(part)]
                for name, part in source.items()
            }
        return None

    def _index_and_split(
        self, step: Callable[[str], None]
    ) -> tuple[IndexedInteractions, Split, str]:
        """The indexed log, its split and a few words on how it was split.

        ``step(name)`` is called as each step starts (for the progress bar).
        """
        step("reading")
        pieces = self._presplit_parts()
        if pieces is None:
            source = self.interactions
            assert not isinstance(source, Mapping)  # mappings are pre-split
            piece = _Piece(load_movielens_small()) if source is None else self._piece(source)
            frame = self._validated({"all": [piece]})["all"]
            step("cleaning")
            frame = self._k_core(self._clean(frame))
            step("indexing")
            data = index_interactions(frame, self.user_col, self.item_col, self._time_col)
            frame = data.frame.assign(order=np.arange(len(data.frame)))
            options = self.split_options
            step("splitting")
            split = SPLITS[self.split](frame, **options)
            return data, split, f"{self.split} split" + (f" {options}" if options else "")
        if self.min_user_interactions or self.min_item_interactions:
            raise ValueError(
                "k-core filtering would change the given split; it is only "
                "available for input that is not pre-split"
            )
        # One vocabulary over all parts; the part of each row travels as a column.
        parts = self._validated(pieces)
        step("cleaning")
        named = {_PART_NAMES[name]: self._clean(part) for name, part in parts.items()}
        labelled = pd.concat(
            [part.assign(_part=name) for name, part in named.items()], ignore_index=True
        )
        step("indexing")
        data = index_interactions(
            labelled, self.user_col, self.item_col, self._time_col, extra_columns=["_part"]
        )
        step("splitting")
        frame = data.frame.assign(order=np.arange(len(data.frame)))
        by_part = {name: frame[frame._part == name].drop(columns="_part") for name in named}
        split = presplit(by_part["train"], by_part.get("val"), by_part["test"])
        return data, split, "given split"

    def _prepare(self) -> None:
        if self._prepared:
            return
        sides = [side for side, (table, _, _) in self.side_features.items() if table is not None]
        steps = ["reading", "cleaning", "indexing", "splitting", "item sets"]
        steps += [f"{side} features" for side in sides]
        shown = progress_enabled(self.progress, self.trainer)
        with progress_steps(steps, "lit_matching data", shown) as step:
            self._prepare_steps(step)

    def _prepare_steps(self, step: Callable[[str], None]) -> None:
        data, split, described = self._index_and_split(step)
        step("item sets")
        self.user_vocab: IdVocabulary = data.users
        self.item_vocab: IdVocabulary = data.items
        self._splits = split
        shape = (len(data.users), len(data.items))
        self.train_items, self.val_items, self.test_items = (
            ItemSets.from_pairs(part.user.to_numpy(), part.item.to_numpy(), *shape)
            for part in (split.train, split.val, split.test)
        )
        self._item_counts = np.bincount(split.train.item, minlength=shape[1])
        with np.errstate(divide="ignore"):  # items without training interactions: -inf
            #: log-probability of each item being a training batch's positive
            self.item_log_q = np.log(self._item_counts / max(len(split.train), 1))
        cold = [
            int((self._item_counts[part.item.to_numpy()] == 0).sum())
            for part in (split.val, split.test)
        ]
        self._feature_tables = {side: self._feature_table(side, step) for side in ("user", "item")}
        rank_zero_info(
            f"lit_matching: {shape[0]} users, {shape[1]} items; "
            f"{len(split.train)} train / {len(split.val)} val / {len(split.test)} test "
            f"interactions ({described}); cold targets "
            f"(item unseen in training, kept): {cold[0]} val, {cold[1]} test"
        )
        self._prepared = True

    def _feature_table(self, side: str, step: Callable[[str], None]) -> FeatureTable | None:
        source, specs, id_col = self.side_features[side]
        if source is None:
            return None
        step(f"{side} features")
        if isinstance(source, (str, Path)) and not Path(source).exists():
            raise FileNotFoundError(f"{side}_side_features file {str(source)!r} does not exist")
        if isinstance(source, (str, Path)) and Path(source).suffix in (".user", ".item"):
            frame = read_recbole(source, required=[id_col])
        else:
            frame = self._read(source)
        vocab = self.user_vocab if side == "user" else self.item_vocab
        return FeatureTable.from_frame(frame, id_col, vocab, specs)

    @property
    def user_feature_table(self) -> FeatureTable | None:
        """Encoded user side features, row ``i`` for user index ``i`` (``None`` without)."""
        self._prepare()
        return self._feature_tables["user"]

    @property
    def item_feature_table(self) -> FeatureTable | None:
        """Encoded item side features, row ``i`` for item index ``i`` (``None`` without)."""
        self._prepare()
        return self._feature_tables["item"]

    @property
    def splits(self) -> Split:
        """The indexed train / val / test interactions (columns ``user``, ``item``, ``time``)."""
        self._prepare()
        return self._splits

    @property
    def item_counts(self) -> np.ndarray:
        """Training interactions of each item index (what the popularity sampler counts)."""
        self._prepare()
        return self._item_counts

    @property
    def num_users(self) -> int:
        """Number of distinct users (size of the user vocabulary)."""
        self._prepare()
        return len(self.user_vocab)

    @property
    def num_items(self) -> int:
        """Number of distinct items (size of the item vocabulary); also the history pad."""
        self._prepare()
        return len(self.item_vocab)

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
        """Load, clean, index and split the log (once); build the samplers."""
        self._prepare()
        self._rank = self.trainer.global_rank if self.trainer is not None else 0
        self._train_sampler = self._make_sampler()
        self._eval_sampler_cache: NegativeSampler | None = None

    @property
    def _eval_sampler(self) -> NegativeSampler:
        # Built on first use: training alone never needs it.
        if self._eval_sampler_cache is None:
            known = self.train_items.union(self.val_items).union(self.test_items)
            self._eval_sampler_cache = UniformNegativeSampler(known)
        return self._eval_sampler_cache

    def _make_sampler(self) -> NegativeSampler:
        if self.negative_sampler == "popularity":
            return PopularityNegativeSampler(
                self.item_counts, self.train_items, alpha=self.popularity_alpha
            )
        return UniformNegativeSampler(self.train_items)

    def _history_source(self, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(users, items, order)`` a history may draw from at ``stage``: what is known then."""
        parts = {
            "train": ["train"],
            "val": ["train"],
            "test": ["train", "val"],
            "serve": ["train", "val", "test"],
        }[stage]
        source = pd.concat([getattr(self.splits, p) for p in parts], ignore_index=True)
        return source.user.to_numpy(), source.item.to_numpy(), source.order.to_numpy()

    def _history(self, part: pd.DataFrame, stage: str) -> HistoryLookup | None:
        if not self.history_length:
            return None
        return HistoryLookup.build(
            self._history_source(stage),
            (part.user.to_numpy(), part.order.to_numpy()),
            self.history_length,
            pad=self.num_items,
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
        self._prepare()
        users = np.asarray(users, dtype=np.int64)
        features = {"ids": torch.from_numpy(users)}
        if self.history_length:
            lookup = HistoryLookup.latest(
                self._history_source(stage), users, self.history_length, pad=self.num_items
            )
            history, lengths = lookup.gather(np.arange(len(users)))
            features |= {
                "history": torch.from_numpy(history),
                "history_length": torch.from_numpy(lengths),
            }
        return features

    def _tuples(self, stage: str) -> InteractionTuples:
        part = getattr(self.splits, stage)
        train = stage == "train"
        return InteractionTuples(
            part.user.to_numpy(),
            part.item.to_numpy(),
            self._train_sampler if train else self._eval_sampler,
            self.num_negatives,
            self.build_batch,
            # Distinct streams per DDP rank; fixed ones for validation and test.
            seed=[self.seed, self._rank] if train else [self.seed, {"val": 1, "test": 2}[stage]],
            resample=train,
            history=self._history(part, stage),
            item_log_q=self.item_log_q,
        )

    def _loader(
        self,
        dataset: InteractionTuples | UserBatches,
        batches: ArrayBatchSampler,
        loader_class: type[DataLoader] = DataLoader,
    ) -> DataLoader:
        accelerator = getattr(self.trainer, "accelerator", None)
        return loader_class(
            dataset,
            batch_sampler=batches,
            collate_fn=keep_batch,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=type(accelerator).__name__ == "CUDAAccelerator",
            # Worker seeds come from here, not from the global torch RNG: loading data never
            # moves the RNG the model draws from (dropout), which checkpoints save.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _in_order(self, dataset: InteractionTuples | UserBatches) -> DataLoader:
        order = SequentialSampler(dataset)
        return self._loader(dataset, ArrayBatchSampler(order, self.eval_batch_size, False))

    def _epochs(self) -> EpochCounter:
        # One counter for the DataModule's life: every training loader continues the epochs.
        if not hasattr(self, "_epoch_counter"):
            self._epoch_counter = EpochCounter()
        return self._epoch_counter

    def train_dataloader(self) -> DataLoader:
        """Shuffled training tuples with fresh negatives per batch, resumable mid-epoch."""
        dataset = self._tuples("train")
        batches = EpochBatchSampler(
            RandomSampler(dataset), self.batch_size, False, self._epochs(), seed=self.seed
        )
        return self._loader(dataset, batches, _ResumableLoader)

    def val_dataloader(self) -> DataLoader:
        """Validation tuples (fixed negatives), for ``val/loss``."""
        return self._in_order(self._tuples("val"))

    def test_dataloader(self) -> DataLoader:
        """Test tuples (fixed negatives), for ``test/loss``."""
        return self._in_order(self._tuples("test"))

    def predict_dataloader(self) -> DataLoader:
        """Every user index, as ``{"users": ...}`` batches."""
        return self._in_order(UserBatches(self.num_users))

    def _fitting(self) -> bool:
        return getattr(getattr(self.trainer, "state", None), "fn", None) == TrainerFn.FITTING

    def _train_position(self) -> dict[str, int]:
        """The epoch and batch number of the next training batch."""
        counter = self._epochs()
        if counter.resume is not None:
            epoch, batch = counter.resume
            return {"epoch": epoch, "batch": batch}
        if not self._fitting() or counter.started == 0:
            return {"epoch": counter.started, "batch": 0}
        # The trainer's count of trained batches: the loader itself is ahead by the batches
        # Lightning prefetches. (``current`` is a ``_ProcessedTracker`` at run time.)
        assert self.trainer is not None
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        done: int = progress.processed  # type: ignore[attr-defined]
        if done >= self.trainer.num_training_batches:
            return {"epoch": counter.started, "batch": 0}
        return {"epoch": counter.started - 1, "batch": done}

    def state_dict(self) -> dict[str, Any]:
        """What checkpoints keep of the data: id vocabularies, training position, RNG states.

        ``user_ids`` and ``item_ids`` map indices back to raw ids. ``train_position`` (epoch
        and batch number of the next training batch) and ``rng`` (the global torch, CUDA,
        numpy and Python random states, which dropout draws from) let a fit resumed from the
        checkpoint continue as the uninterrupted run would have.
        """
        self._prepare()
        return {
            "user_ids": self.user_vocab.to_list(),
            "item_ids": self.item_vocab.to_list(),
            "train_position": self._train_position(),
            "rng": _global_rng_states(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Check a checkpoint's vocabularies; when fitting, resume its position and RNG states."""
        self._prepare()
        for key, vocab in (("user_ids", self.user_vocab), ("item_ids", self.item_vocab)):
            if key in state_dict and state_dict[key] != vocab.to_list():
                raise ValueError(
                    f"checkpoint {key} differ from this data's ({len(state_dict[key])} vs "
                    f"{len(vocab)} ids): the model was trained on other data"
                )
        if not self._fitting():  # validate / test / predict from a checkpoint: nothing to resume
            return
        if (position := state_dict.get("train_position")) is not None:
            self._epochs().resume = (position["epoch"], position["batch"])
        if (states := state_dict.get("rng")) is not None:
            _set_global_rng_states(states)


class _ResumableLoader(DataLoader):
    """The training ``DataLoader``, marked for Lightning as resumable mid-epoch.

    The position and RNG states travel in :meth:`MatchingDataModule.state_dict` instead,
    which Lightning restores before it builds the loader (also when ``configure_optimizers``
    reads ``trainer.estimated_stepping_batches``); these hooks save nothing.
    """

    def state_dict(self) -> dict[str, Any]:
        """Nothing: see :meth:`MatchingDataModule.state_dict`."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore."""


def _global_rng_states() -> dict[str, Any]:
    """The global random states, in types ``torch.load(weights_only=True)`` accepts."""
    numpy_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is the point)
    assert isinstance(numpy_state, tuple)
    kind, key, position, has_gauss, gauss = numpy_state
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, key.tolist(), position, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()  # of the current device
    return states


def _set_global_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, key, position, has_gauss, gauss = states["numpy"]
    numpy_state = (kind, np.asarray(key, dtype=np.uint32), position, has_gauss, gauss)
    np.random.set_state(numpy_state)  # noqa: NPY002
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
