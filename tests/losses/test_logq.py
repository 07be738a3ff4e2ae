"""Log-Q correction: its sign, its mixture, its auto mode, the streamed frequencies, and that it
recovers the full-softmax gradient."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule
from lit_matching.losses.logq import StreamingFrequency, log_expected_count


class FixedTower(nn.Module):
    """Rows of a fixed (or trainable) matrix."""

    def __init__(self, vectors, trainable=False):
        super().__init__()
        self.vectors = nn.Parameter(torch.as_tensor(vectors, dtype=torch.float32), trainable)

    def forward(self, features):
        return self.vectors[features["ids"]]


def test_correction_lowers_popular_negatives_relative_to_rare_ones():
    # one user; negatives 1 (popular) and 2 (rare) with equal raw scores
    model = ListwiseMatching(
        FixedTower([[1.0, 0.0]]),
        FixedTower([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]]),
        similarity="dot",
        temperature=0.5,
    )
    batch = {
        "users": torch.tensor([0]),
        "pos_items": torch.tensor([0]),
        "neg_items": torch.tensor([[1, 2]]),
        "neg_log_q": torch.log(torch.tensor([[0.8, 0.1]])),
    }
    corrected = model.logits(batch)
    model.log_q_correction = False
    raw = model.logits(batch)
    assert raw[0, 1] == raw[0, 2]
    shift = corrected - raw
    assert shift[0, 0] == 0  # the positive is exact, never corrected
    assert shift[0, 1] < shift[0, 2]  # popular negative lowered more than the rare one
    # by exactly temperature * log(N q)
    expected = -0.5 * torch.log(2 * torch.tensor([0.8, 0.1]))
    torch.testing.assert_close(shift[0, 1:], expected)


def test_auto_mode_corrects_popularity_but_not_uniform_samples():
    model = ListwiseMatching(IDEmbeddingTower(2, 4), IDEmbeddingTower(6, 4))
    batch = {
        "users": torch.tensor([0, 1]),
        "pos_items": torch.tensor([0, 1]),
        "neg_items": torch.tensor([[2, 3], [4, 5]]),
    }
    uniform = batch | {"neg_log_q": torch.full((2, 2), math.log(1 / 5))}
    popular = batch | {"neg_log_q": torch.log(torch.tensor([[0.5, 0.1], [0.2, 0.2]]))}
    plain = ListwiseMatching(IDEmbeddingTower(2, 4), IDEmbeddingTower(6, 4), log_q_correction=False)
    plain.load_state_dict(model.state_dict())
    assert torch.equal(model.logits(uniform), plain.logits(uniform))
    assert not torch.equal(model.logits(popular), plain.logits(popular))
    model.eval()  # a training device only: validation logits are never corrected
    assert torch.equal(model.logits(popular), plain.logits(popular))


def test_mixture_of_in_batch_and_sampled_negatives():
    model = ListwiseMatching(
        IDEmbeddingTower(3, 4), IDEmbeddingTower(8, 4), temperature=0.2, in_batch_negatives=True
    )
    q_batch = torch.log(torch.tensor([0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05]))
    q_sampler = torch.log(torch.full((8,), 1 / 8))
    pos = torch.tensor([0, 1, 2])
    neg = torch.tensor([[3, 4], [5, 6], [7, 3]])
    batch = {
        "users": torch.tensor([0, 1, 2]),
        "pos_items": pos,
        "neg_items": neg,
        "pos_log_q": q_batch[pos],
        "neg_batch_log_q": q_batch[neg],
        "pos_sampler_log_q": q_sampler[pos],
        "neg_log_q": q_sampler[neg],
    }
    corrected = model.logits(batch)
    model.log_q_correction = False
    raw = model.logits(batch)
    candidates = torch.cat([pos, neg.flatten()])
    # loop reference: 2 other positives from q_batch and 3 x 2 sampled from q_sampler per row
    for row in range(3):
        for column, item in enumerate(candidates.tolist()):
            if item == pos[row]:
                assert corrected[row, 1 + column] == float("-inf")
                continue
            count = 2 * math.exp(q_batch[item]) + 6 * math.exp(q_sampler[item])
            shift = (corrected - raw)[row, 1 + column].item()
            assert shift == pytest.approx(-0.2 * math.log(count), rel=1e-5)


def test_log_expected_count_matches_numpy():
    rng = np.random.default_rng(0)
    qb, qs = rng.dirichlet(np.ones(10)), rng.dirichlet(np.ones(10))
    got = log_expected_count(torch.tensor(np.log(qb)), 7, torch.tensor(np.log(qs)), 24)
    np.testing.assert_allclose(got.numpy(), np.log(7 * qb + 24 * qs), rtol=1e-10)
    with pytest.raises(ValueError, match="at least one source"):
        log_expected_count(None, 0, None, 0)


def full_softmax_gradient(user, items, positive):
    user = user.clone().requires_grad_()
    loss = -torch.log_softmax(items @ user, 0)[positive]
    loss.backward()
    return user.grad


def test_corrected_sampled_softmax_recovers_the_full_softmax_gradient():
    # 8 items, one user; negatives drawn from a skewed proposal that excludes the positive.
    torch.manual_seed(0)
    items = torch.randn(8, 3)
    user = torch.randn(3)
    positive = 0
    proposal = torch.tensor([0.0, 0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02])
    rows, num_negatives = 4000, 16
    neg = torch.multinomial(proposal, rows * num_negatives, replacement=True)
    batch = {
        "users": torch.zeros(rows, dtype=torch.long),
        "pos_items": torch.full((rows,), positive),
        "neg_items": neg.view(rows, num_negatives),
        "neg_log_q": torch.log(proposal[neg]).view(rows, num_negatives),
    }
    expected = full_softmax_gradient(user, items, positive)
    errors = {}
    for correct in (True, False):
        model = ListwiseMatching(
            FixedTower(user[None], trainable=True),
            FixedTower(items),
            similarity="dot",
            temperature=1.0,
            log_q_correction=correct,
        )
        model.compute_loss(batch).backward()
        got = model.user_tower.vectors.grad[0]
        errors[correct] = ((got - expected).norm() / expected.norm()).item()
    assert errors[True] < 0.05  # the mean over draws: the full-softmax gradient
    assert errors[False] > 0.1  # without the correction: biased (0.124 here, 0.028 with it)


def test_streaming_frequency_estimates_item_probabilities():
    rng = np.random.default_rng(0)
    p = np.array([0.4, 0.3, 0.2, 0.1])
    frequency = StreamingFrequency(num_buckets=16, momentum=0.01)
    for _ in range(3000):
        frequency.update(torch.as_tensor(rng.choice(4, size=8, p=p)))
    estimate = frequency.log_q(torch.arange(5), batch_size=8).exp().numpy()
    np.testing.assert_allclose(estimate[:4], p, rtol=0.15)
    assert estimate[4] == 0.0  # never seen


def test_streamed_frequencies_train_and_are_checkpointed(small_log, tmp_path):
    from helpers import quiet_trainer

    dm = MatchingDataModule(interactions=small_log, num_negatives=2, batch_size=32)

    def fresh():
        towers = IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8)
        return dict(user_tower=towers[0], item_tower=towers[1])

    model = ListwiseMatching(**fresh(), in_batch_negatives=True, frequency_buckets=64)
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp_path / "logq.ckpt")
    loaded = ListwiseMatching.load_from_checkpoint(tmp_path / "logq.ckpt", **fresh())
    assert model.frequency is not None and loaded.frequency is not None
    trained = dict(model.frequency.named_buffers())
    assert set(trained) == {"last_step", "gap", "hits", "step"}
    assert int(trained["step"]) == trainer.global_step > 0
    assert (trained["hits"] > 0).any() and (trained["gap"] > 0).any()
    for name, buffer in loaded.frequency.named_buffers():  # all trained state came back
        torch.testing.assert_close(buffer, trained[name], rtol=0, atol=0)
    queried = torch.arange(dm.num_items)
    torch.testing.assert_close(
        loaded.frequency.log_q(queried, 32), model.frequency.log_q(queried, 32)
    )
    with pytest.raises(ValueError, match="needs in_batch_negatives"):
        ListwiseMatching(IDEmbeddingTower(2, 2), IDEmbeddingTower(2, 2), frequency_buckets=8)


def test_datamodule_batches_carry_the_mixture_log_probabilities(small_log):
    dm = MatchingDataModule(
        interactions=small_log, num_negatives=3, negative_sampler="popularity", batch_size=16
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    log_freq = torch.as_tensor(dm.item_log_q, dtype=torch.float32)
    torch.testing.assert_close(batch["pos_log_q"], log_freq[batch["pos_items"]])
    torch.testing.assert_close(batch["neg_batch_log_q"], log_freq[batch["neg_items"]])
    counts = torch.as_tensor(dm.item_counts, dtype=torch.float64)
    log_p = torch.log(counts**0.75 / (counts**0.75).sum()).float()  # default alpha
    torch.testing.assert_close(batch["pos_sampler_log_q"], log_p[batch["pos_items"]])
