"""Side features from tables, through the DataModule into feature towers."""

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
from helpers import quiet_trainer

from lit_matching import (
    Categorical,
    FeatureTower,
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    MultiCategorical,
    Numeric,
    RetrievalEvaluator,
    Retriever,
)


def item_table(small_log):
    items = np.sort(small_log.item_id.unique())
    half = np.where(items < 150, "first", "second")  # the synthetic users like one half
    return pd.DataFrame(
        {
            "item_id": items,
            "half": half,
            "tags": [f"t{i % 3}|t{i % 5}" for i in range(len(items))],
            "price": np.arange(len(items), dtype=float),
        }
    )


def test_side_feature_tables_follow_the_vocabulary(small_log, tmp_path):
    table = item_table(small_log).iloc[:-2]  # two items without a row: unknown
    dm = MatchingDataModule(
        interactions=small_log,
        item_side_features=table,
        item_feature_specs=[Categorical("half"), MultiCategorical("tags"), Numeric("price")],
    )
    features = dm.item_feature_table
    assert len(features) == dm.num_items and dm.user_feature_table is None
    raw = dm.item_vocab.to_raw(np.arange(dm.num_items))
    codes = features["half"].codes.numpy()
    names = features.vocabulary("half")
    assert [names[c] for c in codes[:-2]] == ["first" if r < 150 else "second" for r in raw[:-2]]
    assert codes[-2:].tolist() == [0, 0]  # unknown
    assert dm.tower_arguments("item")["table"] is features
    with pytest.raises(ValueError, match="go together"):
        MatchingDataModule(item_side_features=table)


def test_recbole_item_file(small_log, tmp_path):
    path = tmp_path / "toy.item"
    frame = item_table(small_log)
    lines = ["item_id:token\thalf:token"] + [
        f"{i}\t{h}" for i, h in zip(frame.item_id, frame.half, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    log = small_log.assign(item_id=small_log.item_id.astype(str))  # RecBole ids are tokens
    dm = MatchingDataModule(
        interactions=log, item_side_features=str(path), item_feature_specs=[Categorical("half")]
    )
    assert (dm.item_feature_table["half"].codes > 0).all()


def test_feature_tower_trains_and_exports(small_log):
    pl.seed_everything(0)
    dm = MatchingDataModule(
        interactions=small_log,
        item_side_features=item_table(small_log),
        item_feature_specs=[Categorical("half"), MultiCategorical("tags")],
        batch_size=32,
        num_negatives=4,
    )
    items = FeatureTower(
        dm.item_feature_table,
        embedding_dim=16,
        feature_dim=8,
        hidden_dims=(32,),
        num_ids=dm.num_items,
    )
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 16), items, temperature=0.5, learning_rate=0.02
    )
    evaluator = RetrievalEvaluator(ks=(5,))
    quiet_trainer(max_epochs=10, callbacks=[evaluator]).fit(model, dm)
    # the item's half is a feature, so the model learns which half each user likes
    assert evaluator.results["val"]["hit_rate@5"] > 0.3
    retriever = Retriever.from_module(model, dm)
    assert retriever.item_embeddings.shape == (dm.num_items, 16)
