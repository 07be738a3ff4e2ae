"""Run by test_hard_negatives.py as a 2-process CPU DDP job (Lightning relaunches this script)."""

import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

sys.path.insert(0, str(Path(__file__).parents[1]))
from helpers import quiet_trainer, synthetic_log

from lit_matching import (
    HardNegativeMiner,
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    MinedNegativeSampler,
)


class CheckBatches(pl.Callback):
    """Counts the batches drawn from mined lists; every negative must be in the user's list."""

    def __init__(self):
        self.mined_batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        sampler = trainer.datamodule.train_sampler
        if isinstance(sampler, MinedNegativeSampler):
            users, negatives = batch["users"].numpy(), batch["neg_items"].numpy()
            assert sampler.mined.contains(users[:, None], negatives).all()
            self.mined_batches += 1

    def on_train_end(self, trainer, pl_module):
        miner = next(c for c in trainer.callbacks if isinstance(c, HardNegativeMiner))
        out = Path(sys.argv[1]) / f"rank{trainer.global_rank}.npz"
        np.savez(out, mined=miner.mined, batches=self.mined_batches)


if __name__ == "__main__":
    pl.seed_everything(0)
    dm = MatchingDataModule(interactions=synthetic_log(), batch_size=16, num_negatives=3)
    model = ListwiseMatching(IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8))
    trainer = quiet_trainer(
        devices=2,
        strategy="ddp",
        max_epochs=2,
        callbacks=[HardNegativeMiner(top_k=3, hard_fraction=1.0), CheckBatches()],
    )
    trainer.fit(model, datamodule=dm)
