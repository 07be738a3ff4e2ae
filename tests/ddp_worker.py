"""Run by tests/test_ddp.py as a 2-process CPU DDP job (Lightning relaunches this script)."""

import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

sys.path.insert(0, str(Path(__file__).parent))
from helpers import quiet_trainer, synthetic_log

from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule


class RecordBatches(pl.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rows.append(np.column_stack([batch["users"], batch["pos_items"], batch["neg_items"]]))

    def on_train_end(self, trainer, pl_module):
        out = Path(sys.argv[1]) / f"rank{trainer.global_rank}.npy"
        np.save(out, np.concatenate(self.rows))


if __name__ == "__main__":
    pl.seed_everything(0)
    # argv[2], when given: a prepared folder to stream from instead of the log in memory
    data = sys.argv[2] if len(sys.argv) > 2 else synthetic_log()
    dm = MatchingDataModule(interactions=data, batch_size=16, num_negatives=3)
    model = ListwiseMatching(IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8))
    trainer = quiet_trainer(
        devices=2,
        strategy="ddp",
        max_epochs=1,
        callbacks=[RecordBatches()],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
