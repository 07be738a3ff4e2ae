"""Every tower trains in every mode through the same LightningModules."""

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from helpers import MODULES

from lit_matching import (
    Categorical,
    FeatureTower,
    GRUTower,
    HistoryPoolingTower,
    IDEmbeddingTower,
    IDHistoryTower,
    MatchingDataModule,
    MultiInterestTower,
    Numeric,
    RetrievalEvaluator,
    Retriever,
    SelfAttentionTower,
    most_popular_metrics,
)

DIM = 16


def side_tables(log):
    """User and item side features of the synthetic log (users like one item half)."""
    users = np.sort(log.user_id.unique())
    items = np.sort(log.item_id.unique())
    user_frame = pd.DataFrame(
        {"user_id": users, "parity": [int(u[1:]) % 2 for u in users], "age": np.arange(len(users))}
    )
    item_frame = pd.DataFrame({"item_id": items, "half": (items >= 150).astype(int)})
    return {
        "user_side_features": user_frame,
        "user_feature_specs": [Categorical("parity"), Numeric("age")],
        "item_side_features": item_frame,
        "item_feature_specs": [Categorical("half")],
    }


FEATURE_KINDS = ("dssm", "youtubednn")


def user_tower(kind, dm, item_tower):
    shared = getattr(item_tower, "embedding", None)  # histories share the item tower's ids
    return {
        "dssm": lambda: FeatureTower(dm.user_feature_table, DIM, num_ids=dm.num_users),
        "youtubednn": lambda: FeatureTower(
            dm.user_feature_table,
            DIM,
            history_tower=HistoryPoolingTower(dm.num_items, DIM, item_embedding=shared),
        ),
        "id": lambda: IDEmbeddingTower(dm.num_users, DIM),
        "id_history": lambda: IDHistoryTower(
            dm.num_users, dm.num_items, DIM, aggregation="attention", item_embedding=shared
        ),
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
@pytest.mark.parametrize(
    "kind",
    [
        "id",
        "id_history",
        "pooling",
        "gru",
        "attention",
        "multi_interest",
        "routing",
        "dssm",
        "youtubednn",
    ],
)
def test_tower_trains_in_mode(small_log, mode, kind):
    pl.seed_everything(0)
    sides = side_tables(small_log) if kind in FEATURE_KINDS else {}
    dm = MatchingDataModule(
        mode=mode,
        interactions=small_log,
        history_length=5,
        batch_size=32,
        num_negatives=4,
        **sides,
    )
    items = (
        FeatureTower(dm.item_feature_table, DIM, num_ids=dm.num_items)  # DSSM item tower
        if kind == "dssm"
        else IDEmbeddingTower(dm.num_items, DIM)
    )
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
    popular = most_popular_metrics(dm.item_counts, dm.eval_set("val"), ks=(5,))
    # users like one item half: popularity hits 0.175, any tower that learns the halves 0.55+
    assert evaluator.results["val"]["hit_rate@5"] > popular["hit_rate@5"] + 0.25
    # export encodes every user with its full history
    retriever = Retriever.from_module(model, dm)
    interests = (3,) if kind in ("multi_interest", "routing") else ()
    assert retriever.user_embeddings.shape == (dm.num_users, *interests, DIM)
    assert len(retriever.recommend(["u0"], k=3)) == 3
