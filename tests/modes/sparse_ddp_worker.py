"""Run by test_sparse_embeddings.py: 2-process CPU DDP, sparse tables; saves each rank's weights."""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from helpers import quiet_trainer, synthetic_log

from lit_matching import HistoryPoolingTower, IDEmbeddingTower, ListwiseMatching, MatchingDataModule

if __name__ == "__main__":
    pl.seed_everything(0)
    dm = MatchingDataModule(
        interactions=synthetic_log(), batch_size=16, num_negatives=3, history_length=4
    )
    item = IDEmbeddingTower(dm.num_items, 8)
    user = HistoryPoolingTower(dm.num_items, 8, hidden_dims=(8,), item_embedding=item.embedding)
    model = ListwiseMatching(
        user, item, in_batch_negatives=True, learning_rate=0.05, sparse_embeddings=True
    )
    trainer = quiet_trainer(
        devices=2,
        strategy="ddp",
        max_epochs=2,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    torch.save(model.state_dict(), Path(sys.argv[1]) / f"rank{trainer.global_rank}.pt")
