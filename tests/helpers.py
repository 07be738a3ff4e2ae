"""Shared test helpers, imported as ``from helpers import ...`` (fixtures stay in ``conftest.py``).

``tests/`` is on ``sys.path`` for the test modules (pytest's default ``prepend`` import mode puts
the directory of ``tests/conftest.py`` there) and for the subprocess workers (a script's own
directory comes first on its path).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl

from lit_matching import ListwiseMatching, PairwiseMatching, PointwiseMatching
from lit_matching.data.features import Categorical, FeatureTable, MultiCategorical, Numeric
from lit_matching.data.interactions import IdVocabulary

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


def run_worker(script: Path, *args: str | Path, timeout: int = 600) -> None:
    """Run a worker script (Lightning relaunches it per rank); fail with its stderr."""
    done = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def synthetic_log(num_users: int = 40, num_items: int = 30, per_user: int = 8, seed: int = 0):
    """Users who each prefer one of two item halves, with increasing timestamps."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        half = np.arange(num_items // 2) + (num_items // 2) * (user % 2)
        items = rng.choice(half, size=per_user, replace=False)
        rows += [(f"u{user}", int(item) * 10, float(t)) for t, item in enumerate(items)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


# Side features of a few users (tests of the feature table and of the feature tower).
SPECS = [Categorical("gender"), Numeric("age"), MultiCategorical("genres", sep=" ")]


def small_frame() -> pd.DataFrame:
    """Users 10, 20, 30, 40 (vocab) + 99 (not in vocab); user 50 in vocab has no row."""
    return pd.DataFrame(
        {
            "user_id": [30, 10, 20, 40, 99],
            "gender": ["M", "F", None, "M", "X"],
            "age": [30.0, 10.0, 20.0, np.nan, 1000.0],
            "genres": ["Drama Action", "Comedy", None, "Action Comedy Drama", "Horror"],
        }
    )


def vocab() -> IdVocabulary:
    return IdVocabulary.from_values([10, 20, 30, 40, 50])


def small_table() -> FeatureTable:
    return FeatureTable.from_frame(small_frame(), "user_id", vocab(), SPECS)
