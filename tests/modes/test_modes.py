import math

import pytest
import pytorch_lightning as pl
import torch
from helpers import MODULES, quiet_trainer

from lit_matching import (
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    PairwiseMatching,
    RetrievalEvaluator,
)
from lit_matching.losses.objectives import softmax_loss


def towers(dm, dim=16):
    return IDEmbeddingTower(dm.num_users, dim), IDEmbeddingTower(dm.num_items, dim)


@pytest.mark.parametrize("mode", list(MODULES))
@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean"])
def test_each_mode_trains(small_log, mode, similarity):
    pl.seed_everything(0)
    dm = MatchingDataModule(mode=mode, interactions=small_log, batch_size=32, num_negatives=4)
    model = MODULES[mode](
        *towers(dm),
        similarity=similarity,
        learning_rate=0.05,
        temperature=0.5 if similarity == "cosine" else 1.0,
    )
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    with torch.no_grad():
        before = sum(model.compute_loss(b).item() for b in batches) / len(batches)
    evaluator = RetrievalEvaluator(ks=(5,))
    quiet_trainer(max_epochs=15, callbacks=[evaluator]).fit(model, dm)
    with torch.no_grad():
        after = sum(model.compute_loss(b).item() for b in batches) / len(batches)
    assert after < 0.7 * before
    # users prefer one half of the catalogue; a trained model recommends from it
    assert evaluator.results["val"]["hit_rate@5"] > 0.3


def test_listwise_logits_mask_accidental_hits():
    model = ListwiseMatching(
        IDEmbeddingTower(3, 4),
        IDEmbeddingTower(6, 4),
        temperature=0.5,
        in_batch_negatives=True,
        log_q_correction=False,
    )
    batch = {
        "users": torch.tensor([0, 1, 2]),
        "pos_items": torch.tensor([4, 4, 5]),
        "neg_items": torch.tensor([[0, 1], [1, 2], [2, 4]]),
    }
    logits = model.logits(batch)
    # the positive, then the batch's 3 positives and its 6 sampled negatives, shared by all rows
    assert logits.shape == (3, 1 + 3 + 6)
    candidates = torch.tensor([4, 4, 5, 0, 1, 1, 2, 2, 4])
    # item 4 is the positive of rows 0 and 1: masked wherever it appears, also among the
    # sampled negatives of row 2; item 5 only for row 2
    expected_mask = candidates.unsqueeze(0) == batch["pos_items"].unsqueeze(1)
    assert torch.equal(torch.isinf(logits[:, 1:]), expected_mask)
    u = model.encode_users(batch["users"])
    c = model.encode_items(candidates)
    i = model.encode_items(batch["pos_items"])
    for row in range(3):
        assert logits[row, 0].item() == pytest.approx((u[row] @ i[row]).item(), abs=1e-6)
        for j in range(len(candidates)):
            if not expected_mask[row, j]:
                expected = (u[row] @ c[j]).item()
                assert logits[row, 1 + j].item() == pytest.approx(expected, abs=1e-6)
    # the loss equals softmax CE over the unmasked columns only
    finite = [logits[r][torch.isfinite(logits[r])] for r in range(3)]
    expected = sum(-torch.log_softmax(f / 0.5, 0)[0] for f in finite) / 3
    assert model.compute_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    assert math.isfinite(softmax_loss(logits, 0.5).item())


@pytest.mark.parametrize("learn_temperature", [False, True])
def test_in_batch_loss_is_the_softmax_loss_of_the_logits(learn_temperature):
    # compute_loss takes a faster route (own positive as the target column, log-Q and masking
    # in place) than softmax_loss(logits(batch), t); loss and gradients must not differ
    torch.manual_seed(0)
    model = ListwiseMatching(
        IDEmbeddingTower(5, 8),
        IDEmbeddingTower(9, 8),
        temperature=0.2,
        learn_temperature=learn_temperature,
        in_batch_negatives=True,
    )
    log_q = torch.log(torch.rand(9) + 0.05)  # an item's log q, any distribution will do
    pos, neg = torch.tensor([4, 4, 7, 1]), torch.tensor([[0, 4], [8, 2], [7, 3], [5, 5]])
    batch = {
        "users": torch.tensor([0, 1, 2, 3]),
        "pos_items": pos,
        "neg_items": neg,
        "pos_log_q": log_q[pos],
        "neg_batch_log_q": log_q[neg],
        "pos_sampler_log_q": log_q.flip(0)[pos],
        "neg_log_q": log_q.flip(0)[neg],
    }
    params = [p for p in model.parameters()]
    fast = model.compute_loss(batch)
    reference = softmax_loss(model.logits(batch), model.temperature)
    assert fast.item() == pytest.approx(reference.item(), rel=1e-6)
    for got, expected in zip(
        torch.autograd.grad(fast, params), torch.autograd.grad(reference, params), strict=True
    ):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    model.log_q_correction = False  # the correction changes the loss: the check can fail
    assert model.compute_loss(batch).item() != pytest.approx(reference.item(), rel=1e-3)


def test_pointwise_encodes_each_users_rows_once_with_the_same_loss(small_log):
    from lit_matching import GRUTower, PointwiseMatching
    from lit_matching.losses.objectives import bce_loss

    dm = MatchingDataModule(
        mode="pointwise", interactions=small_log, num_negatives=3, history_length=5, batch_size=8
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    model = PointwiseMatching(
        GRUTower(dm.num_items, 8), IDEmbeddingTower(dm.num_items, 8), temperature=0.3
    )
    rows = []
    model.user_tower.register_forward_hook(lambda _, args, out: rows.append(len(out)))
    loss = model.compute_loss(batch)
    assert rows == [8]  # 8 positives' users, not 8 x (1 + 3) rows
    # reference: every row's user encoded on its own
    users = model.encode_users(model.batch_users(batch))
    scores = (users * model.encode_items(batch["items"])).sum(-1)
    reference = bce_loss(scores, batch["labels"], 0.3)
    assert rows == [8, 32]
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    params = list(model.parameters())
    for got, expected in zip(
        torch.autograd.grad(loss, params), torch.autograd.grad(reference, params), strict=True
    ):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    # rows of one user with different histories are not merged
    batch["history"][1, -1] = (batch["history"][1, -1] + 1) % dm.num_items
    rows.clear()
    model.compute_loss(batch)
    assert rows == [10]  # run 0 split at row 1: rows 0 | 1 | 2-3, then 7 more runs


def test_without_in_batch_negatives_only_sampled_columns():
    model = ListwiseMatching(
        IDEmbeddingTower(3, 4), IDEmbeddingTower(6, 4), in_batch_negatives=False
    )
    batch = {
        "users": torch.tensor([0, 1]),
        "pos_items": torch.tensor([4, 5]),
        "neg_items": torch.tensor([[0, 1, 2], [1, 2, 3]]),
    }
    assert model.logits(batch).shape == (2, 4)


def test_mode_mismatch_is_explained(small_log):
    dm = MatchingDataModule(mode="pointwise", interactions=small_log)
    model = ListwiseMatching(*towers(dm))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with pytest.raises(ValueError, match=r"ListwiseMatching needs batch keys.*mode='listwise'"):
        model.training_step(batch, 0)


def test_hyperparameters_and_checkpoint_round_trip(small_log, tmp_path):
    dm = MatchingDataModule(mode="listwise", interactions=small_log, batch_size=64)
    model = ListwiseMatching(*towers(dm), temperature=0.07, learning_rate=0.02)
    assert model.hparams["temperature"] == 0.07 and "user_tower" not in model.hparams
    t = quiet_trainer(max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=True)
    t.fit(model, dm)
    path = t.checkpoint_callback.best_model_path
    loaded = ListwiseMatching.load_from_checkpoint(
        path, user_tower=towers(dm)[0], item_tower=towers(dm)[1]
    )
    assert loaded.temperature == 0.07
    users = torch.arange(dm.num_users)
    torch.testing.assert_close(loaded.encode_users(users), model.encode_users(users))
    assert torch.load(path, weights_only=False)["MatchingDataModule"]["item_ids"][:1] == [0]


def test_predict_returns_user_embeddings(small_log):
    dm = MatchingDataModule(mode="pairwise", interactions=small_log, eval_batch_size=16)
    model = PairwiseMatching(*towers(dm, dim=8))
    out = quiet_trainer().predict(model, dm)
    users = torch.cat([o["users"] for o in out])
    assert users.tolist() == list(range(dm.num_users))
    assert torch.cat([o["embeddings"] for o in out]).shape == (dm.num_users, 8)


def test_in_batch_negatives_only(small_log):
    pl.seed_everything(0)
    dm = MatchingDataModule(interactions=small_log, num_negatives=0, batch_size=32)
    model = ListwiseMatching(
        *towers(dm), in_batch_negatives=True, temperature=0.5, learning_rate=0.05
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["neg_items"].shape == (32, 0)
    assert model.logits(batch).shape == (32, 1 + 32)
    quiet_trainer(max_epochs=2).fit(model, dm)
    no_negatives = ListwiseMatching(*towers(dm), in_batch_negatives=False)
    with pytest.raises(ValueError, match="nothing to contrast"):
        no_negatives.compute_loss(batch)
    with pytest.raises(ValueError, match="num_negatives has to be a positive integer"):
        MatchingDataModule(mode="pairwise", num_negatives=0)
