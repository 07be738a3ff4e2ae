"""Every tower trains in every mode through the same LightningModules."""

import pytest
import pytorch_lightning as pl
import torch
from conftest import MODULES

from lit_matching import (
    GRUTower,
    HistoryPoolingTower,
    IDEmbeddingTower,
    MatchingDataModule,
    MultiInterestTower,
    RetrievalEvaluator,
    Retriever,
    SelfAttentionTower,
)

DIM = 16


def user_tower(kind, dm, item_tower):
    shared = item_tower.embedding  # the history shares the item tower's id table
    return {
        "id": lambda: IDEmbeddingTower(dm.num_users, DIM),
        "pooling": lambda: HistoryPoolingTower(dm.num_items, DIM, item_embedding=shared),
        "gru": lambda: GRUTower(dm.num_items, DIM, item_embedding=shared),
        "attention": lambda: SelfAttentionTower(
            dm.num_items, DIM, num_layers=1, max_length=5, item_embedding=shared
        ),
        "multi_interest": lambda: MultiInterestTower(
            dm.num_items, DIM, num_interests=3, item_embedding=shared
        ),
        "routing": lambda: MultiInterestTower(
            dm.num_items, DIM, num_interests=3, extractor="routing", item_embedding=shared
        ),
    }[kind]()


def mean_loss(model, batches):
    model.eval()
    with torch.no_grad():
        loss = sum(model.compute_loss(b).item() for b in batches) / len(batches)
    model.train()
    return loss


@pytest.mark.parametrize("mode", list(MODULES))
@pytest.mark.parametrize("kind", ["id", "pooling", "gru", "attention", "multi_interest", "routing"])
def test_tower_trains_in_mode(small_log, mode, kind):
    pl.seed_everything(0)
    dm = MatchingDataModule(
        mode=mode, interactions=small_log, history_length=5, batch_size=32, num_negatives=4
    )
    items = IDEmbeddingTower(dm.num_items, DIM)
    # Point-wise BCE on cosine scores / 0.5 bottoms out near 0.58 (logits within +-2), so 0.25
    temperature = 0.25 if mode == "pointwise" else 0.5
    model = MODULES[mode](
        user_tower(kind, dm, items), items, learning_rate=0.02, temperature=temperature
    )
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert batches[0]["history"].shape[1] == 5
    before = mean_loss(model, batches)
    evaluator = RetrievalEvaluator(ks=(5,))
    pl.Trainer(
        max_epochs=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[evaluator],
    ).fit(model, dm)
    assert mean_loss(model, batches) < 0.8 * before
    assert 0.0 <= evaluator.results["val"]["hit_rate@5"] <= 1.0
    # export encodes every user with its full history
    retriever = Retriever.from_module(model, dm)
    interests = (3,) if kind in ("multi_interest", "routing") else ()
    assert retriever.user_embeddings.shape == (dm.num_users, *interests, DIM)
    assert len(retriever.recommend(["u0"], k=3)) == 3
