"""Learnable temperature, and the guards against non-finite losses and overflowing logits."""

import math
from types import SimpleNamespace

import pytest
import torch
from helpers import quiet_trainer
from pytorch_lightning.loggers import CSVLogger

from lit_matching import (
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    PairwiseMatching,
    PointwiseMatching,
)
from lit_matching.losses.objectives import softmax_loss


def test_fixed_temperature_is_a_float_without_parameter():
    model = ListwiseMatching(IDEmbeddingTower(2, 4), IDEmbeddingTower(3, 4), temperature=0.07)
    assert model.temperature == 0.07 and model.log_temperature is None
    assert "log_temperature" not in dict(model.named_parameters())


@pytest.mark.parametrize("module", [ListwiseMatching, PairwiseMatching, PointwiseMatching])
def test_learned_temperature_trains_is_logged_and_clamped(small_log, tmp_path, module):
    mode = module.mode
    dm = MatchingDataModule(mode=mode, interactions=small_log, batch_size=32, num_negatives=2)
    model = module(
        IDEmbeddingTower(dm.num_users, 8),
        IDEmbeddingTower(dm.num_items, 8),
        temperature=0.5,
        learn_temperature=True,
        temperature_range=(0.05, 0.6),
        learning_rate=0.05,
    )
    assert isinstance(model.temperature, torch.Tensor)
    assert model.temperature.item() == pytest.approx(0.5)
    trainer = quiet_trainer(max_epochs=3, logger=CSVLogger(tmp_path), log_every_n_steps=1)
    trainer.fit(model, dm)
    assert model.temperature.item() != pytest.approx(0.5)  # it was learned
    low, high = math.log(0.05), math.log(0.6)
    assert low - 1e-6 <= model.log_temperature.item() <= high + 1e-6
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    logged = [line for line in metrics.splitlines()[1:] if line.split(",")[0]]
    header = metrics.splitlines()[0].split(",")
    column = header.index("train/temperature")
    values = [float(line.split(",")[column]) for line in logged if line.split(",")[column]]
    assert len(values) == trainer.global_step  # every step
    assert all(0.05 - 1e-6 <= v <= 0.6 + 1e-6 for v in values)


def test_clamp_keeps_the_parameter_inside_its_range():
    model = ListwiseMatching(
        IDEmbeddingTower(2, 4),
        IDEmbeddingTower(3, 4),
        temperature=0.1,
        learn_temperature=True,
        temperature_range=(0.05, 0.2),
    )
    with torch.no_grad():
        model.log_temperature.fill_(5.0)
    assert model.temperature.item() == pytest.approx(0.2)
    model.on_train_batch_end(None, None, 0)
    assert model.log_temperature.item() == pytest.approx(math.log(0.2))
    with pytest.raises(ValueError, match="temperature_range"):
        ListwiseMatching(
            IDEmbeddingTower(2, 4), IDEmbeddingTower(3, 4), learn_temperature=True, temperature=2.0
        )


def test_masked_columns_give_a_finite_temperature_gradient():
    log_t = torch.tensor(math.log(0.1), requires_grad=True)
    logits = torch.tensor([[0.5, float("-inf"), 0.1]])
    softmax_loss(logits, log_t.exp()).backward()
    assert torch.isfinite(log_t.grad)
    expected = torch.autograd.grad(softmax_loss(logits[:, [0, 2]], log_t.exp()), log_t)[0]
    torch.testing.assert_close(log_t.grad, expected)


def test_non_finite_loss_stops_training_naming_the_step(small_log):
    dm = MatchingDataModule(interactions=small_log, batch_size=32)
    items = IDEmbeddingTower(dm.num_items, 8)
    model = ListwiseMatching(IDEmbeddingTower(dm.num_users, 8), items, similarity="dot")

    class PoisonAtStep3(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = items
            self.calls = 0

        def forward(self, features):
            self.calls += 1
            out = self.inner(features)
            return out * float("nan") if self.calls > 6 else out  # 2 calls a step

    model.item_tower = PoisonAtStep3()
    with pytest.raises(FloatingPointError, match=r"at step 3\. Likely causes: .*learning rate"):
        quiet_trainer(max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0).fit(model, dm)


def test_overflowing_temperature_warns_for_half_precision():
    model = ListwiseMatching(IDEmbeddingTower(2, 4), IDEmbeddingTower(3, 4), temperature=1e-5)
    model._trainer = SimpleNamespace(precision="16-mixed")
    with pytest.warns(UserWarning, match="overflow"):
        model.on_fit_start()
    model._trainer = SimpleNamespace(precision="bf16-mixed")  # bfloat16 reaches 3e38: fine
    model.on_fit_start()
    fine = ListwiseMatching(IDEmbeddingTower(2, 4), IDEmbeddingTower(3, 4), temperature=0.05)
    fine._trainer = SimpleNamespace(precision="16-mixed")
    fine.on_fit_start()
