"""Issue 17: learning-rate schedules from the config, followed step by step, sparse tables too."""

import math

import pytest
import torch
from helpers import quiet_trainer

from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule, PairwiseMatching
from lit_matching.cli.lightning import run_cli

LR = 0.1


def expected_rates(schedule, warmup, total):
    """The learning rate of each optimiser step, written out independently of the module."""
    rates = []
    for step in range(total):
        if step < warmup:
            rates.append(LR * (step + 1) / (warmup + 1))
        elif schedule == "cosine":
            rates.append(LR * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2)
        elif schedule == "linear":
            rates.append(LR * (1 - (step - warmup) / (total - warmup)))
        else:
            rates.append(LR)
    return rates


def recorded_rates(monkeypatch, model, dm, **trainer_options):
    """Fit, recording the learning rate each dense Adam and SparseAdam step ran with."""
    seen = {"Adam": [], "SparseAdam": []}
    for cls in (torch.optim.Adam, torch.optim.SparseAdam):
        original = cls.step

        def step(self, *args, _original=original, _name=cls.__name__, **kwargs):
            seen[_name].append(self.param_groups[0]["lr"])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "step", step)
    quiet_trainer(limit_val_batches=0, **trainer_options).fit(model, dm)
    return seen


@pytest.mark.parametrize(
    ("schedule", "warmup", "sparse"),
    [("cosine", 3, False), ("cosine", 3, True), ("linear", 0, True), ("constant", 2, False)],
)
def test_learning_rate_follows_the_schedule(monkeypatch, small_log, schedule, warmup, sparse):
    dm = MatchingDataModule(interactions=small_log, batch_size=32, num_negatives=2)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8),
        learning_rate=LR, lr_schedule=schedule, warmup_steps=warmup, sparse_embeddings=sparse,
        learn_temperature=True,  # with sparse tables, the dense Adam has the temperature
    )  # fmt: skip
    seen = recorded_rates(monkeypatch, model, dm, max_epochs=2)  # 240 rows: 8 batches a epoch
    expected = expected_rates(schedule, warmup, 16)
    assert seen["Adam"] == pytest.approx(expected)
    assert seen["SparseAdam"] == (pytest.approx(expected) if sparse else [])


def test_schedule_counts_optimiser_steps_with_accumulation(monkeypatch, small_log):
    dm = MatchingDataModule(mode="pairwise", interactions=small_log, batch_size=32)
    model = PairwiseMatching(
        IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8),
        learning_rate=LR, lr_schedule="cosine", warmup_steps=1,
    )  # fmt: skip
    seen = recorded_rates(monkeypatch, model, dm, max_epochs=1, accumulate_grad_batches=2)
    assert seen["Adam"] == pytest.approx(expected_rates("cosine", 1, 4))


def test_bad_schedules_are_refused(small_log):
    towers = (IDEmbeddingTower(2, 2), IDEmbeddingTower(2, 2))
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        ListwiseMatching(*towers, lr_schedule="step")
    with pytest.raises(ValueError, match="warmup_steps has to be non-negative, got -1"):
        ListwiseMatching(*towers, warmup_steps=-1)
    dm = MatchingDataModule(interactions=small_log, batch_size=32)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8), lr_schedule="cosine"
    )
    with pytest.raises(ValueError, match=r"set trainer\.max_steps or trainer\.max_epochs"):
        quiet_trainer(max_epochs=-1, limit_val_batches=0).fit(model, dm)


def test_schedule_and_weight_decay_from_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lit-matching"])
    cli = run_cli(
        [
            "fit", "--config", "listwise", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=4", "--trainer.enable_progress_bar=false",
            "--model.init_args.lr_schedule=cosine", "--model.init_args.warmup_steps=2",
            "--model.init_args.weight_decay=0.001",
        ]
    )  # fmt: skip
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    assert cli.trainer.optimizers[0].param_groups[0]["weight_decay"] == 0.001
    saved = (tmp_path / cli.trainer.log_dir / "config.yaml").read_text()
    assert "lr_schedule: cosine" in saved and "warmup_steps: 2" in saved
