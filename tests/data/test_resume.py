"""A fit stopped mid-epoch and resumed from its checkpoint ends as if it had never stopped."""

import pytest
import pytorch_lightning as pl
import torch
from helpers import quiet_trainer, synthetic_log
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule
from lit_matching.data.resume import EpochBatchSampler

# Checkpoints of ModelCheckpoint hold its state; the resumed fits need not restore it.
pytestmark = pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")

EPOCHS = 2
BATCHES = 8  # per epoch: 240 training rows of the synthetic log / 30


class DropoutTower(nn.Module):
    """An id tower with dropout on its output, so training draws from the global torch RNG."""

    def __init__(self, num_embeddings: int, dim: int):
        super().__init__()
        self.ids = IDEmbeddingTower(num_embeddings, dim)
        self.dropout = nn.Dropout(0.5)

    def forward(self, features):
        return self.dropout(self.ids(features))


class SeenBatches(pl.Callback):
    """The users of every training batch, by global step."""

    def __init__(self):
        self.users: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.users[trainer.global_step] = batch["users"].tolist()


def datamodule(log, num_workers: int = 0) -> MatchingDataModule:
    return MatchingDataModule(
        interactions=log, batch_size=30, num_negatives=4, seed=3, num_workers=num_workers
    )


def make(log, tower: str, seed: int):
    pl.seed_everything(seed, verbose=False)
    dm = datamodule(log)
    towers = {
        "id": lambda n: IDEmbeddingTower(n, 8),
        "dropout": lambda n: DropoutTower(n, 8),
    }[tower]
    model = ListwiseMatching(towers(dm.num_users), towers(dm.num_items), learning_rate=0.05)
    return dm, model


def fit(log, tower, seed, ckpt_path=None, callbacks=(), **trainer_args):
    dm, model = make(log, tower, seed)
    seen = SeenBatches()
    trainer = quiet_trainer(
        **({"max_epochs": EPOCHS} | trainer_args),
        deterministic=True,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        callbacks=[seen, *callbacks],
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, model, seen


@pytest.fixture(scope="module", params=["id", "dropout"])
def uninterrupted(request, tmp_path_factory):
    """One fit of two epochs that saves a checkpoint after every step (``step=K.ckpt``)."""
    folder = tmp_path_factory.mktemp(f"every_step_{request.param}")
    every_step = ModelCheckpoint(folder, "{step}", every_n_train_steps=1, save_top_k=-1)
    trainer, model, seen = fit(synthetic_log(), request.param, seed=0, callbacks=[every_step])
    assert trainer.global_step == EPOCHS * BATCHES
    return request.param, folder, model, seen, trainer.callback_metrics


def assert_same_fit(resumed, uninterrupted, stopped_at):
    trainer, model, seen = resumed
    _, _, expected_model, expected_seen, expected_metrics = uninterrupted
    assert trainer.global_step == EPOCHS * BATCHES
    # The batches after the stop are the uninterrupted run's, not a restarted epoch's.
    assert seen.users == {s: u for s, u in expected_seen.users.items() if s >= stopped_at}
    for (name, value), expected in zip(
        model.state_dict().items(), expected_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(value, expected, msg=name)
    torch.testing.assert_close(trainer.callback_metrics["val/loss"], expected_metrics["val/loss"])


# 5 and 11: mid-epoch, in the first and in the second epoch; 8: at the epoch boundary.
@pytest.mark.parametrize("step", [5, 8, 11])
def test_resume_from_mid_epoch_checkpoint_equals_uninterrupted(small_log, uninterrupted, step):
    tower, folder = uninterrupted[:2]
    # Another process seed: what the run draws next has to come from the checkpoint.
    resumed = fit(small_log, tower, seed=1, ckpt_path=folder / f"step={step}.ckpt")
    assert_same_fit(resumed, uninterrupted, step)


def test_stop_at_max_steps_then_resume_equals_uninterrupted(small_log, uninterrupted, tmp_path):
    tower = uninterrupted[0]
    trainer, _, _ = fit(small_log, tower, seed=0, max_steps=11)
    assert trainer.global_step == 11
    checkpoint = tmp_path / "stopped.ckpt"
    trainer.save_checkpoint(checkpoint)
    # Lightning counts the epoch that max_steps stopped as finished, so only a larger
    # max_steps continues it; the data resumes the stopped epoch at its batch 3 all the same.
    total = EPOCHS * BATCHES
    resumed = fit(small_log, tower, seed=1, ckpt_path=checkpoint, max_steps=total, max_epochs=-1)
    assert_same_fit(resumed, uninterrupted, 11)


def test_batches_depend_on_position_only_not_workers(small_log):
    """Each batch is a function of (seed, epoch, batch number): workers build the same ones."""

    def epochs(num_workers, resume=None):
        dm = datamodule(small_log, num_workers)
        dm.setup("fit")
        if resume is not None:
            dm._epoch_counter.resume = resume
        loader = dm.train_dataloader()
        assert isinstance(loader.batch_sampler, EpochBatchSampler)
        return [[batch["neg_items"] for batch in loader] for _ in range(2)]  # two epochs

    plain = epochs(0)
    assert len(plain[0]) == BATCHES
    assert not torch.equal(plain[0][0], plain[1][0])  # every epoch differs
    torch.testing.assert_close(epochs(2), plain)
    # Resumed at epoch 0, batch 5: the rest of that epoch, then epoch 1.
    torch.testing.assert_close(epochs(0, resume=(0, 5)), [plain[0][5:], plain[1]])
