"""Issue 13, points 3 and 5: the default log-Q rule follows the sampler (one negative too), and
a last training batch of one row trains with in-batch negatives only."""

import pandas as pd
import pytest
import torch
from helpers import quiet_trainer

from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule


def _trained_model(dm: MatchingDataModule, **kwargs) -> ListwiseMatching:
    """A list-wise model attached to ``dm`` by a one-step fit (its ``setup`` has run)."""
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8), **kwargs
    )
    quiet_trainer(max_steps=1, limit_val_batches=0).fit(model, dm)
    return model


def _loss(model: ListwiseMatching, batch: dict, correct: bool | None) -> torch.Tensor:
    model.train()
    saved, model.log_q_correction = model.log_q_correction, correct
    try:
        return model.compute_loss(batch).detach()
    finally:
        model.log_q_correction = saved


@pytest.mark.parametrize("num_negatives", [1, 3])
def test_default_corrects_a_popularity_sampler_with_any_number_of_negatives(
    small_log, num_negatives
):
    dm = MatchingDataModule(
        interactions=small_log,
        num_negatives=num_negatives,
        negative_sampler="popularity",
        batch_size=16,
    )
    model = _trained_model(dm)
    batch = next(iter(dm.train_dataloader()))
    default = _loss(model, batch, None)
    torch.testing.assert_close(default, _loss(model, batch, True))
    assert not torch.allclose(default, _loss(model, batch, False))


@pytest.mark.parametrize("num_negatives", [1, 3])
def test_default_leaves_uniform_negatives_uncorrected(small_log, num_negatives):
    dm = MatchingDataModule(interactions=small_log, num_negatives=num_negatives, batch_size=16)
    model = _trained_model(dm)
    batch = next(iter(dm.train_dataloader()))
    torch.testing.assert_close(_loss(model, batch, None), _loss(model, batch, False))


def test_final_batch_of_one_row_with_in_batch_negatives_only_trains():
    # 3 users x 5 items, leave-last-out: 3 x 3 training rows, batches of 4, 4, 1.
    log = pd.DataFrame(
        [(user, item, float(t)) for user in range(3) for t, item in enumerate(range(5))],
        columns=["user_id", "item_id", "timestamp"],
    )
    dm = MatchingDataModule(interactions=log, num_negatives=0, batch_size=4)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 4),
        IDEmbeddingTower(dm.num_items, 4),
        in_batch_negatives=True,
        log_q_correction=True,
    )
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, dm)
    assert model.trainer.global_step == 3  # the one-row batch ran too

    # A lone row has no negatives: its loss is that of a one-way softmax, 0.
    one = {key: value[:1] for key, value in next(iter(dm.train_dataloader())).items()}
    model.train()
    assert model.compute_loss(one).item() == 0.0
