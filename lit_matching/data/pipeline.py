"""The preparation pipeline: read, validate, clean, k-core, index, split; then item sets.

:class:`DataPipeline` holds the choices (the data arguments of
:class:`~lit_matching.data.datamodule.MatchingDataModule`) and :meth:`DataPipeline.run` turns
the interaction log into a :class:`PreparedData`: id vocabularies, the split, the item sets of
each part, item counts and log-probabilities, and the encoded side-feature tables. Each step is
announced through a ``step(name)`` callback (the progress bar) and logs what it dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pytorch_lightning.utilities import rank_zero_info

from lit_matching.data.cleaning import drop_duplicates, k_core, keep_min_rating
from lit_matching.data.features import FeatureSpec, FeatureTable
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
from lit_matching.data.sampling import UniformNegativeSampler
from lit_matching.data.splits import SPLITS, Split, presplit

__all__ = ["AUTO_TIME", "DataPipeline", "PreparedData"]

#: ``time_col`` default: ``"timestamp"``, or row order for files of a format without time.
AUTO_TIME = "auto"
_TIMELESS_FORMATS = ("user-lines", "triples", "recbole")  # RecBole files may lack a timestamp
_SEPARATORS = {"csv": ",", "tsv": "\t"}
_PART_NAMES = {"train": "train", "valid": "val", "val": "val", "test": "test"}
#: Parts whose interactions a user's history may draw from, at each stage.
_KNOWN_AT = {
    "train": ["train"],
    "val": ["train"],
    "test": ["train", "val"],
    "serve": ["train", "val", "test"],
}


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


@dataclass(frozen=True, eq=False)
class PreparedData:
    """The indexed, split log and what is derived from it once.

    Attributes:
        user_vocab: Raw user id of each user index.
        item_vocab: Raw item id of each item index.
        splits: The train / val / test interactions (``user``, ``item``, ``time``, ``order``).
        train_items: Each user's training items (also val_items, test_items).
        item_counts: Training interactions of each item index.
        item_log_q: Log-probability of each item being a training batch's positive
            (``-inf`` for items without training interactions).
        feature_tables: The encoded side features of ``"user"`` and ``"item"`` (or ``None``).
    """

    user_vocab: IdVocabulary
    item_vocab: IdVocabulary
    splits: Split
    train_items: ItemSets
    val_items: ItemSets
    test_items: ItemSets
    item_counts: np.ndarray
    item_log_q: np.ndarray
    feature_tables: dict[str, FeatureTable | None]

    def eval_set(self, stage: str) -> EvalSet:
        """Users with targets at ``"val"`` or ``"test"``, their targets and items to exclude."""
        return EvalSet.of_stage(stage, self.train_items, self.val_items, self.test_items)

    @cached_property
    def eval_sampler(self) -> UniformNegativeSampler:
        """Uniform negatives that avoid all of a user's known items (for val / test tuples)."""
        # Built on first use: training alone never needs it.
        return UniformNegativeSampler(self.train_items.union(self.val_items).union(self.test_items))

    def history_source(self, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(users, items, order)`` a history may draw from at ``stage``: what is known then."""
        parts = [getattr(self.splits, part) for part in _KNOWN_AT[stage]]
        source = pd.concat(parts, ignore_index=True)
        return source.user.to_numpy(), source.item.to_numpy(), source.order.to_numpy()


@dataclass(frozen=True)
class DataPipeline:
    """How an interaction log becomes :class:`PreparedData` (arguments as the DataModule's).

    ``side_features`` maps ``"user"`` / ``"item"`` to ``(table or None, specs, id column)``.
    """

    interactions: Any
    file_format: str = "auto"
    split_files: Sequence[str | Sequence[str] | None] = ("train.txt", "valid.txt", "test.txt")
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = AUTO_TIME
    rating_col: str = "rating"
    min_rating: float | None = None
    duplicates: Literal["last", "first"] = "last"
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    split: str = "leave_last_out"
    split_options: Mapping[str, Any] | None = None
    side_features: Mapping[str, tuple[Any, Sequence[FeatureSpec], str]] | None = None

    def steps(self) -> list[str]:
        """The names :meth:`run` announces, in order."""
        sides = [side for side, (table, _, _) in self._sides().items() if table is not None]
        return ["reading", "cleaning", "indexing", "splitting", "item sets"] + [
            f"{side} features" for side in sides
        ]

    def run(self, step: Callable[[str], None] = lambda name: None) -> PreparedData:
        """Prepare the data, calling ``step(name)`` as each of :meth:`steps` starts."""
        data, split, described = self._index_and_split(step)
        step("item sets")
        shape = (len(data.users), len(data.items))
        train_items, val_items, test_items = (
            ItemSets.from_pairs(part.user.to_numpy(), part.item.to_numpy(), *shape)
            for part in (split.train, split.val, split.test)
        )
        item_counts = np.bincount(split.train.item, minlength=shape[1])
        with np.errstate(divide="ignore"):  # items without training interactions: -inf
            item_log_q = np.log(item_counts / max(len(split.train), 1))
        cold = [
            int((item_counts[part.item.to_numpy()] == 0).sum()) for part in (split.val, split.test)
        ]
        vocabs = {"user": data.users, "item": data.items}
        tables = {side: self.feature_table(side, vocabs[side], step) for side in vocabs}
        rank_zero_info(
            f"lit_matching: {shape[0]} users, {shape[1]} items; "
            f"{len(split.train)} train / {len(split.val)} val / {len(split.test)} test "
            f"interactions ({described}); cold targets "
            f"(item unseen in training, kept): {cold[0]} val, {cold[1]} test"
        )
        return PreparedData(
            user_vocab=data.users,
            item_vocab=data.items,
            splits=split,
            train_items=train_items,
            val_items=val_items,
            test_items=test_items,
            item_counts=item_counts,
            item_log_q=item_log_q,
            feature_tables=tables,
        )

    def _sides(self) -> Mapping[str, tuple[Any, Sequence[FeatureSpec], str]]:
        return self.side_features or {}

    # ------------------------------------------------------------------ reading
    def _piece(self, source: pd.DataFrame | str | Path, format: str | None = None) -> _Piece:
        """A frame, or the file ``source`` read in ``format`` (default ``file_format``)."""
        if isinstance(source, pd.DataFrame):
            return _Piece(source)
        path = Path(source)
        format = format or self.file_format
        if format == "auto":
            format = detect_format(path)
        return _Piece(read_interactions(path, format=format), path, format)

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

    def _resolved_time_col(self, pieces: Sequence[_Piece]) -> str | None:
        """``time_col``, with ``"auto"`` resolved for ``pieces`` (see the DataModule)."""
        if self.time_col != AUTO_TIME:
            return self.time_col
        timeless = all(
            piece.format in _TIMELESS_FORMATS and "timestamp" not in piece.frame.columns
            for piece in pieces
        )
        return None if timeless else "timestamp"

    def _validated(
        self, parts: dict[str, list[_Piece]], time_col: str | None
    ) -> dict[str, pd.DataFrame]:
        """Each part's pieces checked (errors name the file and line) and concatenated."""
        frames = {}
        for name, pieces in parts.items():
            for piece in pieces:
                if len(piece.frame) == 0 and len(pieces) > 1:
                    continue  # an empty file among others adds nothing; an empty part fails
                try:
                    validate_interactions(
                        piece.frame, self.user_col, self.item_col, time_col, piece.where
                    )
                except ValueError as err:
                    if piece.file is None:
                        raise
                    raise ValueError(f"{piece.file}: {err}") from None
            if len(pieces) == 1:
                frames[name] = pieces[0].frame
                continue
            frames[name] = pd.concat([piece.frame for piece in pieces], ignore_index=True)
            # What no single file shows: e.g. numbers in one file, strings in another.
            validate_interactions(frames[name], self.user_col, self.item_col, time_col)
        return frames

    # ------------------------------------------------------------------ cleaning
    def _clean(self, frame: pd.DataFrame, time_col: str | None) -> pd.DataFrame:
        """Keep the ratings and first or last duplicates asked for (``frame`` is validated)."""
        if self.min_rating is not None:
            frame = keep_min_rating(
                frame, self.min_rating, self.rating_col, self.user_col, self.item_col
            )
        return drop_duplicates(frame, self.user_col, self.item_col, time_col, keep=self.duplicates)

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

    # ------------------------------------------------------------------ indexing, splitting
    def _index_and_split(
        self, step: Callable[[str], None]
    ) -> tuple[IndexedInteractions, Split, str]:
        """The indexed log (with an ``order`` column), its split and how it was split."""
        step("reading")
        parts = self._presplit_parts()
        if parts is None:
            return self._index_and_split_log(step)
        if self.min_user_interactions or self.min_item_interactions:
            raise ValueError(
                "k-core filtering would change the given split; it is only "
                "available for input that is not pre-split"
            )
        # One vocabulary over all parts; the part of each row travels as a column.
        time_col = self._resolved_time_col([p for pieces in parts.values() for p in pieces])
        frames = self._validated(parts, time_col)
        step("cleaning")
        named = {_PART_NAMES[name]: self._clean(part, time_col) for name, part in frames.items()}
        labelled = pd.concat(
            [part.assign(_part=name) for name, part in named.items()], ignore_index=True
        )
        step("indexing")
        data = index_interactions(
            labelled, self.user_col, self.item_col, time_col, extra_columns=["_part"]
        )
        step("splitting")
        frame = data.frame.assign(order=np.arange(len(data.frame)))
        by_part = {name: frame[frame._part == name].drop(columns="_part") for name in named}
        split = presplit(by_part["train"], by_part.get("val"), by_part["test"])
        return data, split, "given split"

    def _index_and_split_log(
        self, step: Callable[[str], None]
    ) -> tuple[IndexedInteractions, Split, str]:
        """:meth:`_index_and_split` of one log (not pre-split), split by ``split``."""
        source = self.interactions
        assert not isinstance(source, Mapping)  # mappings are pre-split
        piece = _Piece(load_movielens_small()) if source is None else self._piece(source)
        time_col = self._resolved_time_col([piece])
        frame = self._validated({"all": [piece]}, time_col)["all"]
        step("cleaning")
        frame = self._k_core(self._clean(frame, time_col))
        step("indexing")
        data = index_interactions(frame, self.user_col, self.item_col, time_col)
        frame = data.frame.assign(order=np.arange(len(data.frame)))
        options = dict(self.split_options or {})
        step("splitting")
        split = SPLITS[self.split](frame, **options)
        return data, split, f"{self.split} split" + (f" {options}" if options else "")

    # ------------------------------------------------------------------ side features
    def feature_table(
        self, side: str, vocab: IdVocabulary, step: Callable[[str], None] = lambda name: None
    ) -> FeatureTable | None:
        """The encoded side features of ``side`` (``"user"`` / ``"item"``) for ``vocab``."""
        source, specs, id_col = self._sides().get(side, (None, (), ""))
        if source is None:
            return None
        step(f"{side} features")
        if isinstance(source, (str, Path)) and not Path(source).exists():
            raise FileNotFoundError(f"{side}_side_features file {str(source)!r} does not exist")
        if isinstance(source, (str, Path)) and Path(source).suffix in (".user", ".item"):
            frame = read_recbole(source, required=[id_col])
        else:
            frame = source if isinstance(source, pd.DataFrame) else self._read(source)
        return FeatureTable.from_frame(frame, id_col, vocab, specs)

    def _read(self, source: str | Path) -> pd.DataFrame:
        return read_interactions(source, format=self.file_format)
