"""Issue 17: ListwiseMatching(loss="cosine_contrastive") against a slow loop, refusals, a fit."""

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from helpers import quiet_trainer

from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule, RetrievalEvaluator

MARGIN, WEIGHT = 0.0, 5.0


def make_model(**options):
    torch.manual_seed(0)
    return ListwiseMatching(
        IDEmbeddingTower(4, 6), IDEmbeddingTower(9, 6), loss="cosine_contrastive",
        margin=MARGIN, negative_weight=WEIGHT, **options,
    )  # fmt: skip


def batch():
    # Row 1's sampled negatives hold its own positive (4); item 4 is also row 2's positive.
    return {
        "users": torch.tensor([0, 1, 2]),
        "pos_items": torch.tensor([3, 4, 4]),
        "neg_items": torch.tensor([[5, 6], [4, 0], [8, 3]]),
    }


def slow_loss(model, batch, in_batch):
    """Per row, per negative, from the raw embedding tables."""
    users = F.normalize(model.user_tower.embedding.weight.detach(), dim=-1)
    items = F.normalize(model.item_tower.embedding.weight.detach(), dim=-1)
    pos, neg = batch["pos_items"].tolist(), batch["neg_items"].tolist()
    total = 0.0
    for b, user in enumerate(batch["users"].tolist()):
        if in_batch:  # every positive (the own one excepted), then every sampled negative
            others = [p for c, p in enumerate(pos) if c != b] + [n for row in neg for n in row]
        else:
            others = neg[b]
        others = [item for item in others if item != pos[b]]  # accidental hits
        cos = [float(users[user] @ items[item]) for item in others]
        hinge = sum(max(0.0, c - MARGIN) for c in cos) / len(cos)
        total += 1.0 - float(users[user] @ items[pos[b]]) + WEIGHT * hinge
    return total / len(pos)


@pytest.mark.parametrize("in_batch", [False, True])
def test_module_loss_equals_the_slow_loop(in_batch):
    model = make_model(in_batch_negatives=in_batch)
    loss = model.compute_loss(batch())
    assert loss.item() == pytest.approx(slow_loss(model, batch(), in_batch), rel=1e-5)
    loss.backward()
    assert model.user_tower.embedding.weight.grad.abs().sum() > 0


def test_softmax_stays_the_default():
    model = ListwiseMatching(IDEmbeddingTower(4, 6), IDEmbeddingTower(9, 6))
    assert model.loss == "softmax" and model.hparams["loss"] == "softmax"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"similarity": "dot"}, "needs similarity='cosine', got 'dot'"),
        ({"log_q_correction": True}, "log-Q correction .* has none"),
        ({"in_batch_negatives": True, "frequency_buckets": 8}, "log-Q correction"),
        ({"learn_temperature": True}, "no temperature to learn"),
        ({"negative_weight": -1.0}, "negative_weight has to be non-negative, got -1.0"),
        ({"loss": "hinge"}, "unknown loss 'hinge'"),
    ],
)
def test_settings_that_do_not_apply_are_refused(options, message):
    arguments = {"loss": "cosine_contrastive"} | options
    with pytest.raises(ValueError, match=message):
        ListwiseMatching(IDEmbeddingTower(4, 6), IDEmbeddingTower(9, 6), **arguments)


def test_popularity_negatives_are_not_log_q_corrected_by_default(small_log):
    dm = MatchingDataModule(
        interactions=small_log, num_negatives=3, negative_sampler="popularity", batch_size=16
    )
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 6), IDEmbeddingTower(dm.num_items, 6),
        loss="cosine_contrastive",
    )  # fmt: skip
    quiet_trainer(max_steps=1, limit_val_batches=0).fit(model, dm)
    model.train()
    loss = model.compute_loss(next(iter(dm.train_dataloader())))
    assert torch.isfinite(loss)
    assert not model._corrects({})


def test_tiny_fit_on_the_embedded_movielens_learns():
    pl.seed_everything(0)
    dm = MatchingDataModule(num_negatives=4, batch_size=512, eval_batch_size=512)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 32), IDEmbeddingTower(dm.num_items, 32),
        in_batch_negatives=True, loss="cosine_contrastive", margin=0.5, negative_weight=20.0,
        learning_rate=0.01,
    )  # fmt: skip
    evaluator = RetrievalEvaluator(ks=(50,))
    trainer = quiet_trainer(max_epochs=2, callbacks=[evaluator], num_sanity_val_steps=0)
    trainer.validate(model, dm, verbose=False)
    untrained = evaluator.results["val"]["recall@50"]
    trainer.fit(model, dm)
    trained = evaluator.results["val"]["recall@50"]
    # An untrained model ranks at random (50 of 9,066 items: recall about 0.006).
    assert untrained < 0.03 and trained > 0.08, (untrained, trained)
