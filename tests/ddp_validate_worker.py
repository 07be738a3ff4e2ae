"""Run by tests/test_evaluation.py: validation metrics of a fixed model on N CPU processes."""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl

sys.path.insert(0, str(Path(__file__).parent))
from conftest import synthetic_log

from lit_matching import (
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    RetrievalEvaluator,
)


def validation_metrics(devices: int) -> dict[str, float]:
    pl.seed_everything(0)
    dm = MatchingDataModule(interactions=synthetic_log(num_users=45), eval_batch_size=8)
    model = ListwiseMatching(IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8))
    evaluator = RetrievalEvaluator(ks=(3, 10), batch_size=7)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[evaluator],
    )
    trainer.validate(model, dm, verbose=False)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if "@" in k}
    return {"results": evaluator.results["val"], "logged": logged, "rank": trainer.global_rank}


if __name__ == "__main__":
    out = validation_metrics(int(sys.argv[2]))
    Path(sys.argv[1], f"rank{out['rank']}.json").write_text(json.dumps(out))
