import math

import pytest
import torch

from lit_matching.losses.objectives import bce_loss, bpr_loss, softmax_loss

torch.manual_seed(0)


def softmax_reference(logits, t):
    total = 0.0
    for row in logits.tolist():
        scaled = [x / t for x in row]
        top = max(scaled)
        lse = top + math.log(sum(math.exp(x - top) for x in scaled if x != -math.inf))
        total += lse - scaled[0]
    return total / len(logits)


def bpr_reference(pos, neg, t):
    values = [
        -math.log(1 / (1 + math.exp(-(p - n) / t)))
        for p, row in zip(pos, neg, strict=True)
        for n in row
    ]
    return sum(values) / len(values)


def bce_reference(scores, labels, t):
    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    values = [
        -(y * math.log(sigmoid(s / t)) + (1 - y) * math.log(1 - sigmoid(s / t)))
        for s, y in zip(scores, labels, strict=True)
    ]
    return sum(values) / len(values)


def test_worked_case():
    logits = torch.tensor([[1.0, -1.0, -1.0, -1.0]])
    assert softmax_loss(logits).item() == pytest.approx(math.log(1 + 3 * math.exp(-2)))
    assert softmax_loss(logits).item() == pytest.approx(0.341, abs=5e-4)
    # the gap becomes 2 / 0.2 = 10: log(1 + 3 e^-10) = 1.36e-4 (exact in float64; float32
    # loses digits to cancellation in log-sum-exp minus the positive logit)
    expected = math.log(1 + 3 * math.exp(-10))
    assert softmax_loss(logits.double(), 0.2).item() == pytest.approx(expected, rel=1e-9)
    assert softmax_loss(logits, 0.2).item() == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("temperature", [1.0, 0.2, 0.05])
def test_softmax_matches_loop(temperature):
    logits = torch.randn(6, 5, dtype=torch.float64)
    expected = softmax_reference(logits, temperature)
    assert softmax_loss(logits, temperature).item() == pytest.approx(expected, rel=1e-9)


def test_softmax_masked_columns_drop_out():
    logits = torch.tensor([[0.3, 0.1, float("-inf"), -0.2]], dtype=torch.float64)
    expected = softmax_reference(torch.tensor([[0.3, 0.1, -0.2]]), 0.5)
    assert softmax_loss(logits, 0.5).item() == pytest.approx(expected)


@pytest.mark.parametrize("temperature", [1.0, 0.1])
def test_bpr_matches_loop(temperature):
    pos, neg = torch.randn(7, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    expected = bpr_reference(pos.tolist(), neg.tolist(), temperature)
    assert bpr_loss(pos, neg, temperature).item() == pytest.approx(expected, rel=1e-9)
    # one negative per positive, 1-D form
    one = bpr_reference(pos.tolist(), neg[:, :1].tolist(), temperature)
    assert bpr_loss(pos, neg[:, 0], temperature).item() == pytest.approx(one, rel=1e-9)


@pytest.mark.parametrize("temperature", [1.0, 0.1])
def test_bce_matches_loop(temperature):
    scores = torch.randn(12, dtype=torch.float64) * 0.3
    labels = (torch.rand(12) > 0.5).double()
    expected = bce_reference(scores.tolist(), labels.tolist(), temperature)
    assert bce_loss(scores, labels, temperature).item() == pytest.approx(expected, rel=1e-9)


def test_no_overflow_at_small_temperature():
    t = 0.01
    # cosine-like scores at the extremes, logits up to 1/t = 100 after scaling... and beyond
    logits = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [100.0, -100.0, 0.0]])
    for loss in (
        softmax_loss(logits, t),
        bpr_loss(logits[:, 0], logits[:, 1:], t),
        bce_loss(logits.flatten(), torch.tensor([1.0, 0, 0] * 3), t),
    ):
        assert torch.isfinite(loss)
    logits.requires_grad_(True)
    softmax_loss(logits, t).backward()
    assert torch.isfinite(logits.grad).all()
    # a confident wrong answer costs (gap / t), not inf
    assert softmax_loss(torch.tensor([[-1.0, 1.0]]), t).item() == pytest.approx(200.0, rel=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_temperature_must_be_positive(bad):
    with pytest.raises(ValueError, match="temperature has to be positive"):
        softmax_loss(torch.zeros(1, 2), bad)
