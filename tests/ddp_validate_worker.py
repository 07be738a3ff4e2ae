"""Run by tests/test_evaluation.py: validation metrics on N CPU processes, after a DDP fit too."""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import synthetic_log

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


def fit_model():
    """The data and model of the full-fit test: in-batch negatives gathered across ranks."""
    pl.seed_everything(0)
    dm = MatchingDataModule(interactions=synthetic_log(num_users=45), batch_size=16)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 8),
        IDEmbeddingTower(dm.num_items, 8),
        in_batch_negatives=True,
        learning_rate=0.02,
    )
    return dm, model


def fit_then_validate(out: Path) -> None:
    """2-process DDP fit; rank 0 saves the weights, every rank its last validation metrics."""
    dm, model = fit_model()
    evaluator = RetrievalEvaluator(ks=(3, 10), batch_size=7)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[evaluator],
    )
    trainer.fit(model, dm)
    if trainer.global_rank == 0:
        torch.save(model.state_dict(), out / "weights.pt")
    result = {"results": evaluator.results["val"], "steps": trainer.global_step}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[2] == "fit":
        fit_then_validate(Path(sys.argv[1]))
    else:
        out = validation_metrics(int(sys.argv[2]))
        Path(sys.argv[1], f"rank{out['rank']}.json").write_text(json.dumps(out))
