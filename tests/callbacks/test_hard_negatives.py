"""Hard negatives: the mixture sampler against slow references, mining, the refresh callback."""

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers import run_worker, synthetic_log
from pytorch_lightning.callbacks import ModelCheckpoint

from lit_matching import (
    HardNegativeMiner,
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    MinedNegativeSampler,
    mine_hard_negatives,
)
from lit_matching.data.item_sets import ItemSets
from lit_matching.data.sampling import PopularityNegativeSampler, UniformNegativeSampler


def _positives() -> ItemSets:
    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(5), 3)
    return ItemSets.from_pairs(users, rng.integers(0, 9, size=users.size), 5, 9)


def _slow_q(positives, p, mined_rows, h, user):
    """Mixture probability of every item for ``user``, item by item."""
    seen = set(positives.row(user).tolist())
    free = sum(p[i] for i in range(len(p)) if i not in seen)
    mined = [i for i in dict.fromkeys(mined_rows[user].tolist()) if i >= 0 and i not in seen]
    share = h if mined else 0.0
    return np.array(
        [
            0.0
            if i in seen
            else share * (i in mined) / max(len(mined), 1) + (1 - share) * p[i] / free
            for i in range(len(p))
        ]
    )


@pytest.mark.parametrize("popularity", [False, True])
def test_mixture_log_q_matches_a_slow_reference_and_the_draws(popularity):
    positives = _positives()
    counts = np.arange(1, 10, dtype=float)
    base = (
        PopularityNegativeSampler(counts, positives, alpha=1.0)
        if popularity
        else UniformNegativeSampler(positives)
    )
    p = counts / counts.sum() if popularity else np.full(9, 1 / 9)
    mined = np.array([[8, 0, 8], [1, 2, -1], [-1, -1, -1], [4, 5, 6], [0, 1, 2]])
    sampler = MinedNegativeSampler(base, mined, hard_fraction=0.7)
    users = np.repeat(np.arange(5), 4000)
    negatives, log_q = sampler.sample(users, 5, np.random.default_rng(0))
    assert not positives.contains(np.repeat(users[:, None], 5, axis=1), negatives).any()
    for user in range(5):
        reference = _slow_q(positives, p, mined, 0.7, user)
        assert reference.sum() == pytest.approx(1.0)
        rows = users == user
        np.testing.assert_allclose(np.exp(log_q[rows]), reference[negatives[rows]], rtol=1e-6)
        frequency = np.bincount(negatives[rows].ravel(), minlength=9) / negatives[rows].size
        np.testing.assert_allclose(frequency, reference, atol=0.02)


def test_mined_items_that_are_positives_are_dropped():
    positives = _positives()
    row = positives.row(0)
    sampler = MinedNegativeSampler(
        UniformNegativeSampler(positives), np.full((5, 2), row[0]), hard_fraction=1.0
    )
    assert sampler.mined.counts()[0] == 0
    negatives, _ = sampler.sample(np.zeros(50, dtype=int), 3, np.random.default_rng(1))
    assert not np.isin(negatives, row).any()


def _data(**kwargs):
    return MatchingDataModule(
        interactions=synthetic_log(), batch_size=16, num_negatives=4, progress=False, **kwargs
    )


def _model(dm, **kwargs):
    torch.manual_seed(0)
    return ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8), **kwargs
    )


def test_mined_lists_are_the_brute_force_top_k_without_positives():
    dm = _data()
    model = _model(dm, similarity="dot")
    found = mine_hard_negatives(model, dm, top_k=4)
    with torch.no_grad():
        users = model.encode_users({"ids": torch.arange(dm.num_users)}).numpy()
        items = model.encode_items({"ids": torch.arange(dm.num_items)}).numpy()
    scores = users @ items.T
    for user in range(dm.num_users):
        scores[user, dm.train_items.row(user)] = -np.inf
    np.testing.assert_array_equal(found, np.argsort(-scores, axis=1, kind="stable")[:, :4])


class _Spy(pl.Callback):
    def __init__(self, miner):
        self.miner, self.seen = miner, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        epoch = trainer.current_epoch
        if epoch not in self.seen:
            self.seen[epoch] = (self.miner.mined_epoch, trainer.datamodule.train_sampler)
        sampler = trainer.datamodule.train_sampler
        if isinstance(sampler, MinedNegativeSampler):
            users, negatives = batch["users"].numpy(), batch["neg_items"].numpy()
            assert sampler.mined.contains(users[:, None], negatives).all()
            np.testing.assert_allclose(
                batch["neg_log_q"].numpy(), sampler.log_prob(users[:, None], negatives), rtol=1e-6
            )


@pytest.mark.parametrize("log_q_correction", [None, True])
def test_callback_refreshes_on_its_epochs_and_batches_draw_mined_items(log_q_correction):
    dm = _data()
    model = _model(dm, log_q_correction=log_q_correction)
    miner = HardNegativeMiner(every_n_epochs=2, top_k=3, hard_fraction=1.0, start_epoch=1)
    spy = _Spy(miner)
    trainer = pl.Trainer(
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[miner, spy],
    )
    trainer.fit(model, datamodule=dm)
    assert [spy.seen[e][0] for e in range(4)] == [None, 1, 1, 3]
    assert not isinstance(spy.seen[0][1], MinedNegativeSampler)
    assert spy.seen[1][1] is spy.seen[2][1] is not spy.seen[3][1]
    # The lists of epoch 3 are the model's top 3 at that epoch's start: not a positive.
    users = np.repeat(np.arange(dm.num_users)[:, None], 3, axis=1)
    assert not dm.train_items.contains(users, miner.mined).any()
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_callback_state_round_trips_and_refuses_workers():
    miner = HardNegativeMiner()
    assert miner.state_dict() == {}
    miner.mined, miner.mined_epoch = np.array([[1, -1]], dtype=np.int32), 2
    restored = HardNegativeMiner()
    restored.load_state_dict(miner.state_dict())
    np.testing.assert_array_equal(restored.mined, miner.mined)
    assert restored.mined_epoch == 2
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, max_epochs=1)
    trainer.datamodule = _data(num_workers=1)  # type: ignore[misc]
    with pytest.raises(ValueError, match="num_workers=0"):
        miner._datamodule(trainer)


def _fit(dm, model, ckpt_path=None, epochs=3, every=None):
    miner = HardNegativeMiner(every_n_epochs=2, top_k=3, hard_fraction=0.5, start_epoch=1)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=every is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=[miner] + ([] if every is None else [every]),
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return trainer


def test_a_resumed_fit_uses_the_saved_lists_and_ends_where_the_uninterrupted_one_does(tmp_path):
    pl.seed_everything(0)
    dm = _data()
    whole = _model(dm)
    _fit(dm, whole)
    pl.seed_everything(0)
    dm = _data()
    _fit(dm, _model(dm), epochs=2).save_checkpoint(tmp_path / "two.ckpt")  # mined at epoch 1
    dm = _data()
    resumed = _model(dm)
    _fit(dm, resumed, ckpt_path=tmp_path / "two.ckpt")
    assert isinstance(dm.train_sampler, MinedNegativeSampler)  # restored: epoch 2 mines none
    for mine, theirs in zip(resumed.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_a_fit_resumed_mid_epoch_ends_where_the_uninterrupted_one_does(tmp_path):
    pl.seed_everything(0)
    dm = _data()
    whole = _model(dm)
    every = ModelCheckpoint(tmp_path, "{step}", every_n_train_steps=1, save_top_k=-1)
    assert _fit(dm, whole, every=every).global_step == 45  # 15 batches per epoch
    for step in (20, 35):  # mid epoch 1 (a refresh epoch) and mid epoch 2
        dm = _data()
        resumed = _model(dm)
        _fit(dm, resumed, ckpt_path=tmp_path / f"step={step}.ckpt")
        for mine, theirs in zip(resumed.parameters(), whole.parameters(), strict=True):
            torch.testing.assert_close(mine, theirs)


def test_under_ddp_every_rank_mines_the_same_lists_and_draws_from_them(tmp_path):
    worker = Path(__file__).with_name("hard_negatives_ddp_worker.py")
    run_worker(worker, tmp_path)
    rank0, rank1 = (np.load(tmp_path / f"rank{r}.npz") for r in (0, 1))
    np.testing.assert_array_equal(rank0["mined"], rank1["mined"])
    assert rank0["batches"] == rank1["batches"] == 8  # epoch 1: 120 rows per rank, 16 a batch
