"""Run by tests/test_multinode.py: one process of a 2-rank CPU DDP job.

``python multinode_worker.py OUT NUM_NODES DEVICES``: a list-wise model with cross-rank in-batch
negatives trains 2 epochs with a ``RetrievalEvaluator`` (sharded evaluation), then tests. With
``NUM_NODES=2 DEVICES=1`` the test starts this script once per "node", with the environment
Lightning reads on a cluster without a scheduler (``MASTER_ADDR``, ``MASTER_PORT``,
``NODE_RANK``); with ``NUM_NODES=1 DEVICES=2`` Lightning starts the second process itself. Each
rank writes what it saw to ``OUT/rank<global rank>.json``.
"""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import synthetic_log

from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule, RetrievalEvaluator


class Record(pl.Callback):
    """Each training step's loss on this rank."""

    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def main(out: Path, num_nodes: int, devices: int) -> None:
    pl.seed_everything(0)
    torch.set_num_threads(1)
    dm = MatchingDataModule(interactions=synthetic_log(), batch_size=16, num_negatives=3)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 8),
        IDEmbeddingTower(dm.num_items, 8),
        in_batch_negatives=True,  # gathered from every rank
        learning_rate=0.05,
    )
    evaluator, record = RetrievalEvaluator(ks=(5, 10)), Record()
    trainer = pl.Trainer(
        accelerator="cpu",
        num_nodes=num_nodes,
        devices=devices,
        strategy="ddp",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[evaluator, record],
    )
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    state = {key: value.tolist() for key, value in model.state_dict().items()}
    report = {
        "global_rank": trainer.global_rank,
        "node_rank": trainer.node_rank,
        "world_size": trainer.world_size,
        "losses": record.losses,
        "val": evaluator.results["val"],
        "test": evaluator.results["test"],
        "state": state,
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
