"""lit_matching: PyTorch Lightning modules for two-tower retrieval recommenders."""

from lit_matching._version import __version__
from lit_matching.callbacks.recommendation_table import (
    RecommendationTable,
    load_item_titles,
    recommendation_table,
)
from lit_matching.data.datamodule import MatchingDataModule
from lit_matching.data.features import Categorical, FeatureTable, MultiCategorical, Numeric
from lit_matching.data.movielens import load_movielens_small, load_movielens_small_movies
from lit_matching.data.readers import read_interactions
from lit_matching.losses.objectives import bce_loss, bpr_loss, softmax_loss
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
from lit_matching.serving.retriever import Retriever, export_retriever
from lit_matching.towers.feature import FeatureTower
from lit_matching.towers.id import IDEmbeddingTower
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
    "HistoryPoolingTower",
    "IDEmbeddingTower",
    "ListwiseMatching",
    "MatchingDataModule",
    "MatchingModule",
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
    "evaluate_retrieval",
    "export_retriever",
    "get_similarity",
    "load_item_titles",
    "load_movielens_small",
    "load_movielens_small_movies",
    "most_popular_metrics",
    "read_interactions",
    "recommendation_table",
    "softmax_loss",
]
