from pathlib import Path

import numpy as np
import pytest
from helpers import run_worker, synthetic_log

from lit_matching import MatchingDataModule
from lit_matching.data.prepare import prepare_shards


@pytest.mark.parametrize("source", ["in_memory", "prepared"])
def test_ddp_ranks_split_the_epoch_between_them(tmp_path, source):
    worker = Path(__file__).with_name("ddp_worker.py")
    data = []
    if source == "prepared":  # 240 training rows in 10 row groups: 5 for each rank
        synthetic_log().to_parquet(tmp_path / "log.parquet")
        prepare_shards(tmp_path / "log.parquet", tmp_path / "shards", row_group_size=24)
        data = [str(tmp_path / "shards")]
    run_worker(worker, tmp_path, *data)
    rank0, rank1 = (np.load(tmp_path / f"rank{r}.npy") for r in (0, 1))
    dm = MatchingDataModule(interactions=synthetic_log())
    train = {tuple(p) for p in dm.splits.train[["user", "item"]].to_numpy()}
    pairs0 = [tuple(p) for p in rank0[:, :2]]
    pairs1 = [tuple(p) for p in rank1[:, :2]]
    # The epoch is sharded: 240 positives, 120 per rank, none shared
    assert len(pairs0) == len(pairs1) == len(train) // 2
    assert set(pairs0).isdisjoint(pairs1) and set(pairs0) | set(pairs1) == train
    # negatives never hit a training positive on either rank (that the ranks' streams differ
    # is tested in test_datamodule_pipeline.py on identical batches)
    for rows in (rank0, rank1):
        assert not dm.train_items.contains(rows[:, :1], rows[:, 2:]).any()
