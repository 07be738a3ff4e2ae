"""lit_matching: PyTorch Lightning modules for two-tower retrieval recommenders.

The public names below are imported on first use (PEP 562), so that a process that only serves
an export (``lit_matching.serving``) does not load torch or Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lit_matching._version import __version__

#: Where each public name lives.
_PUBLIC = {
    "HardNegativeMiner": "lit_matching.callbacks.hard_negatives",
    "mine_hard_negatives": "lit_matching.callbacks.hard_negatives",
    "RecommendationTable": "lit_matching.callbacks.recommendation_table",
    "load_item_titles": "lit_matching.callbacks.recommendation_table",
    "recommendation_table": "lit_matching.callbacks.recommendation_table",
    "MatchingDataModule": "lit_matching.data.datamodule",
    "MinedNegativeSampler": "lit_matching.data.mined",
    "Categorical": "lit_matching.data.features",
    "FeatureTable": "lit_matching.data.features",
    "MultiCategorical": "lit_matching.data.features",
    "Numeric": "lit_matching.data.features",
    "load_movielens_small": "lit_matching.data.movielens",
    "load_movielens_small_movies": "lit_matching.data.movielens",
    "read_interactions": "lit_matching.data.readers",
    "bce_loss": "lit_matching.losses.objectives",
    "bpr_loss": "lit_matching.losses.objectives",
    "cosine_contrastive_loss": "lit_matching.losses.objectives",
    "softmax_loss": "lit_matching.losses.objectives",
    "Cosine": "lit_matching.losses.similarity",
    "Dot": "lit_matching.losses.similarity",
    "Euclidean": "lit_matching.losses.similarity",
    "Similarity": "lit_matching.losses.similarity",
    "get_similarity": "lit_matching.losses.similarity",
    "ListwiseMatching": "lit_matching.modes",
    "MatchingModule": "lit_matching.modes",
    "PairwiseMatching": "lit_matching.modes",
    "PointwiseMatching": "lit_matching.modes",
    "RetrievalEvaluator": "lit_matching.retrieval.evaluation",
    "evaluate_retrieval": "lit_matching.retrieval.evaluation",
    "most_popular_metrics": "lit_matching.retrieval.evaluation",
    "export_retriever": "lit_matching.serving.from_training",
    "Retriever": "lit_matching.serving.retriever",
    "FeatureTower": "lit_matching.towers.feature",
    "IDEmbeddingTower": "lit_matching.towers.id",
    "IDHistoryTower": "lit_matching.towers.id_history",
    "MultiInterestTower": "lit_matching.towers.multi_interest",
    "GRUTower": "lit_matching.towers.sequence",
    "HistoryPoolingTower": "lit_matching.towers.sequence",
    "SelfAttentionTower": "lit_matching.towers.sequence",
}

if TYPE_CHECKING:  # what type checkers and editors see
    from lit_matching.callbacks.hard_negatives import HardNegativeMiner, mine_hard_negatives
    from lit_matching.callbacks.recommendation_table import (
        RecommendationTable,
        load_item_titles,
        recommendation_table,
    )
    from lit_matching.data.datamodule import MatchingDataModule
    from lit_matching.data.features import Categorical, FeatureTable, MultiCategorical, Numeric
    from lit_matching.data.mined import MinedNegativeSampler
    from lit_matching.data.movielens import load_movielens_small, load_movielens_small_movies
    from lit_matching.data.readers import read_interactions
    from lit_matching.losses.objectives import (
        bce_loss,
        bpr_loss,
        cosine_contrastive_loss,
        softmax_loss,
    )
    from lit_matching.losses.similarity import Cosine, Dot, Euclidean, Similarity, get_similarity
    from lit_matching.modes import (
        ListwiseMatching,
        MatchingModule,
        PairwiseMatching,
        PointwiseMatching,
    )
    from lit_matching.retrieval.evaluation import (
        RetrievalEvaluator,
        evaluate_retrieval,
        most_popular_metrics,
    )
    from lit_matching.serving.from_training import export_retriever
    from lit_matching.serving.retriever import Retriever
    from lit_matching.towers.feature import FeatureTower
    from lit_matching.towers.id import IDEmbeddingTower
    from lit_matching.towers.id_history import IDHistoryTower
    from lit_matching.towers.multi_interest import MultiInterestTower
    from lit_matching.towers.sequence import GRUTower, HistoryPoolingTower, SelfAttentionTower

__all__ = [
    "Categorical",
    "Cosine",
    "Dot",
    "Euclidean",
    "FeatureTable",
    "FeatureTower",
    "GRUTower",
    "HardNegativeMiner",
    "HistoryPoolingTower",
    "IDEmbeddingTower",
    "IDHistoryTower",
    "ListwiseMatching",
    "MatchingDataModule",
    "MatchingModule",
    "MinedNegativeSampler",
    "MultiCategorical",
    "MultiInterestTower",
    "Numeric",
    "PairwiseMatching",
    "PointwiseMatching",
    "RecommendationTable",
    "RetrievalEvaluator",
    "Retriever",
    "SelfAttentionTower",
    "Similarity",
    "__version__",
    "bce_loss",
    "bpr_loss",
    "cosine_contrastive_loss",
    "evaluate_retrieval",
    "export_retriever",
    "get_similarity",
    "load_item_titles",
    "load_movielens_small",
    "load_movielens_small_movies",
    "mine_hard_negatives",
    "most_popular_metrics",
    "read_interactions",
    "recommendation_table",
    "softmax_loss",
]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lit_matching' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
