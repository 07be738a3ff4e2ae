"""Run by tests/retrieval/test_evaluation.py: evaluation on N CPU processes, after a DDP fit too."""

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
from lit_matching.retrieval import evaluation
from lit_matching.retrieval.encoding import encode_catalogue
from lit_matching.retrieval.search import search_top_k


def record_encoded_and_searched() -> dict[str, list[int]]:
    """Record the users the evaluator encodes and how many queries each of its searches gets."""
    record = {"encoded": [], "searched": []}

    def encode_and_record(module, user_features, *args, **kwargs):
        record["encoded"].extend(user_features["ids"].tolist())
        return encode_catalogue(module, user_features, *args, **kwargs)

    def search_and_record(index, queries, *args, **kwargs):
        record["searched"].append(len(queries))
        return search_top_k(index, queries, *args, **kwargs)

    evaluation.encode_catalogue = encode_and_record
    evaluation.search_top_k = search_and_record
    return record


def validation_metrics(devices: int) -> dict:
    """Validate then test on ``devices`` CPU processes: metrics, logged values, users encoded."""
    pl.seed_everything(0)
    dm = MatchingDataModule(interactions=synthetic_log(num_users=45), eval_batch_size=8)
    model = ListwiseMatching(IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8))
    record = record_encoded_and_searched()
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
    out = {"logged": {}, "encoded": {}, "searched": {}}
    for stage, run in (("val", trainer.validate), ("test", trainer.test)):
        record["encoded"].clear()
        record["searched"].clear()
        run(model, dm, verbose=False)
        names = [f"{stage}/{name}" for name in evaluator.results[stage]]  # not the loss
        out["logged"][stage] = {k: float(trainer.callback_metrics[k]) for k in names}
        out["encoded"][stage] = list(record["encoded"])
        out["searched"][stage] = list(record["searched"])
    return out | {"results": evaluator.results, "rank": trainer.global_rank}


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
