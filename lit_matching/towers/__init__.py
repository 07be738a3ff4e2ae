"""Towers: plain ``nn.Module``s that map a batch's features to vectors.

:mod:`~lit_matching.towers.id` (an id embedding), :mod:`~lit_matching.towers.id_history` (an id
embedding mixed with the aggregated history: SimpleX), :mod:`~lit_matching.towers.sequence`
(history pooling, GRU, self-attention), :mod:`~lit_matching.towers.multi_interest` (several
vectors per user) and :mod:`~lit_matching.towers.feature` (side features, DSSM / YouTubeDNN).
"""

from lit_matching.towers.feature import FeatureEncoder, FeatureTower
from lit_matching.towers.id import IDEmbeddingTower
from lit_matching.towers.id_history import IDHistoryTower
from lit_matching.towers.multi_interest import MultiInterestTower
from lit_matching.towers.sequence import GRUTower, HistoryPoolingTower, SelfAttentionTower

__all__ = [
    "FeatureEncoder",
    "FeatureTower",
    "GRUTower",
    "HistoryPoolingTower",
    "IDEmbeddingTower",
    "IDHistoryTower",
    "MultiInterestTower",
    "SelfAttentionTower",
]
