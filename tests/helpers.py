"""Shared test helpers, imported as ``from helpers import ...`` (fixtures stay in ``conftest.py``).

``tests/`` is on ``sys.path`` for the test modules (pytest's default ``prepend`` import mode puts
the directory of ``tests/conftest.py`` there) and for the subprocess workers (a script's own
directory comes first on its path).
"""

import numpy as np
import pandas as pd
import pytorch_lightning as pl

from lit_matching import ListwiseMatching, PairwiseMatching, PointwiseMatching

MODULES = {
    "pointwise": PointwiseMatching,
    "pairwise": PairwiseMatching,
    "listwise": ListwiseMatching,
}


def quiet_trainer(**kwargs) -> pl.Trainer:
    """A CPU Trainer without logger, checkpoints, progress bar or summary (overridable)."""
    defaults = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    return pl.Trainer(**(defaults | kwargs))


def synthetic_log(num_users: int = 40, num_items: int = 30, per_user: int = 8, seed: int = 0):
    """Users who each prefer one of two item halves, with increasing timestamps."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        half = np.arange(num_items // 2) + (num_items // 2) * (user % 2)
        items = rng.choice(half, size=per_user, replace=False)
        rows += [(f"u{user}", int(item) * 10, float(t)) for t, item in enumerate(items)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
