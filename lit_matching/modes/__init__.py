"""LightningModules of the three training modes, on one shared base.

:class:`~lit_matching.modes.base.MatchingModule` owns the towers, the similarity, encoding, the
optimiser and the logging; each mode owns only its loss and that loss's hyper-parameters.
"""

from lit_matching.modes.base import MatchingModule
from lit_matching.modes.listwise import ListwiseMatching
from lit_matching.modes.pairwise import PairwiseMatching
from lit_matching.modes.pointwise import PointwiseMatching

__all__ = ["ListwiseMatching", "MatchingModule", "PairwiseMatching", "PointwiseMatching"]
