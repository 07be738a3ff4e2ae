"""The DataModule's read-only views of its prepared data (vocabularies, item sets, counts).

:class:`PreparedDataViews` is a base of
:class:`~lit_matching.data.datamodule.MatchingDataModule`: every property prepares the data
on first use (``_prepare``), from the log in memory or from a folder of prepared shards.
"""

from __future__ import annotations

import numpy as np

from lit_matching.data.features import FeatureTable
from lit_matching.data.interactions import IdVocabulary
from lit_matching.data.item_sets import EvalSet, ItemSets
from lit_matching.data.pipeline import PreparedData
from lit_matching.data.shards import PreparedShards
from lit_matching.data.splits import Split
from lit_matching.data.stored_sets import StoredItemSets

__all__ = ["PreparedDataViews"]


class PreparedDataViews:
    """Properties over ``self._prepare()``'s result (see the DataModule)."""

    def _prepare(self) -> PreparedData | PreparedShards:
        raise NotImplementedError

    @property
    def user_vocab(self) -> IdVocabulary:
        """Raw user id of each user index."""
        return self._prepare().user_vocab

    @property
    def item_vocab(self) -> IdVocabulary:
        """Raw item id of each item index."""
        return self._prepare().item_vocab

    @property
    def train_items(self) -> ItemSets | StoredItemSets:
        """Each user's training items."""
        return self._prepare().train_items

    @property
    def val_items(self) -> ItemSets | StoredItemSets:
        """Each user's validation items."""
        return self._prepare().val_items

    @property
    def test_items(self) -> ItemSets | StoredItemSets:
        """Each user's test items."""
        return self._prepare().test_items

    @property
    def item_log_q(self) -> np.ndarray:
        """Log-probability of each item being a training batch's positive (``-inf``: none)."""
        return self._prepare().item_log_q

    @property
    def user_feature_table(self) -> FeatureTable | None:
        """Encoded user side features, row ``i`` for user index ``i`` (``None`` without)."""
        return self._prepare().feature_tables["user"]

    @property
    def item_feature_table(self) -> FeatureTable | None:
        """Encoded item side features, row ``i`` for item index ``i`` (``None`` without)."""
        return self._prepare().feature_tables["item"]

    @property
    def splits(self) -> Split:
        """The indexed train / val / test interactions (columns ``user``, ``item``, ``time``)."""
        return self._prepare().splits

    @property
    def item_counts(self) -> np.ndarray:
        """Training interactions of each item index (what the popularity sampler counts)."""
        return self._prepare().item_counts

    @property
    def num_users(self) -> int:
        """Number of distinct users (size of the user vocabulary)."""
        return len(self.user_vocab)

    @property
    def num_items(self) -> int:
        """Number of distinct items (size of the item vocabulary); also the history pad."""
        return len(self.item_vocab)

    def eval_set(self, stage: str) -> EvalSet:
        """Users, targets and excluded items for retrieval evaluation of ``"val"`` or ``"test"``.

        Validation excludes each user's training items; test excludes training and validation
        items.
        """
        return self._prepare().eval_set(stage)
