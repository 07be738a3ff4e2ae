"""Issue 17: SimpleX's cosine contrastive loss against slow loops, and its gradient."""

import pytest
import torch
import torch.nn.functional as F

from lit_matching.losses.in_batch import in_batch_cosine_contrastive_loss
from lit_matching.losses.objectives import cosine_contrastive_loss


def slow_loss(pos, neg, margin, weight):
    """One row at a time, one negative at a time, in Python floats."""
    total = 0.0
    for b in range(len(pos)):
        hinges = [max(0.0, s - margin) for s in neg[b].tolist() if s != float("-inf")]
        negative = weight * sum(hinges) / len(hinges) if hinges else 0.0
        total += (1.0 - pos[b].item()) + negative
    return total / len(pos)


def test_loss_equals_the_slow_loop_with_masked_negatives():
    generator = torch.Generator().manual_seed(0)
    pos = torch.rand(6, generator=generator) * 2 - 1
    neg = torch.rand(6, 9, generator=generator) * 2 - 1
    neg[0, :3] = float("-inf")
    neg[5, :] = float("-inf")  # a row without negatives: the positive term only
    for margin, weight in [(0.9, 150.0), (0.0, 1.0), (-0.5, 3.0)]:
        got = cosine_contrastive_loss(pos, neg, margin, weight).item()
        assert got == pytest.approx(slow_loss(pos, neg, margin, weight), rel=1e-5)


def test_loss_gradient_matches_finite_differences_and_masks_cleanly():
    generator = torch.Generator().manual_seed(1)
    pos = (torch.rand(4, generator=generator, dtype=torch.float64) * 2 - 1).requires_grad_()
    neg = torch.rand(4, 5, generator=generator, dtype=torch.float64) * 2 - 1
    neg = neg.masked_fill(neg.abs() > 0.9, 0.5).requires_grad_()  # away from the hinge at 0.3
    torch.autograd.gradcheck(lambda p, n: cosine_contrastive_loss(p, n, 0.3, 7.0), (pos, neg))
    # Analytic: d/dpos = -1/B; d/dneg_j = weight / (B * N) where s_j > margin, else 0.
    masked = neg.detach().clone()
    masked[0, 0] = float("-inf")
    masked.requires_grad_()
    cosine_contrastive_loss(pos, masked, 0.3, 7.0).backward()
    counts = torch.tensor([4.0, 5.0, 5.0, 5.0], dtype=torch.float64).unsqueeze(1)
    expected = torch.where(masked.detach() > 0.3, 7.0 / (4 * counts), 0.0)
    torch.testing.assert_close(masked.grad, expected)
    torch.testing.assert_close(pos.grad, torch.full((4,), -0.25, dtype=torch.float64))


def test_loss_rejects_wrong_shapes_and_a_negative_weight():
    with pytest.raises(ValueError, match=r"expected pos_scores \(B,\)"):
        cosine_contrastive_loss(torch.zeros(2, 1), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="negative_weight has to be non-negative, got -1"):
        cosine_contrastive_loss(torch.zeros(2), torch.zeros(2, 3), negative_weight=-1.0)


def test_in_batch_loss_equals_the_slow_loop_with_accidental_hits():
    generator = torch.Generator().manual_seed(2)
    queries = F.normalize(torch.randn(4, 3, generator=generator), dim=-1)
    candidates = F.normalize(torch.randn(10, 3, generator=generator), dim=-1)
    # Another rank's 2 rows first (offset 2), then this rank's 4, then 4 sampled negatives;
    # item 7 is the positive of rows 0 and 2, item 3 a sampled negative equal to row 1's.
    candidate_ids = torch.tensor([1, 9, 7, 3, 7, 5, 3, 8, 2, 6])
    positive_ids = candidate_ids[2:6]
    candidates[2:6] = F.normalize(candidates[2:6] + queries, dim=-1)  # positives nearer
    margin, weight = 0.1, 4.0
    total = 0.0
    for b in range(4):
        own = 2 + b
        negatives = [
            float(queries[b] @ candidates[j])
            for j in range(10)
            if j != own and candidate_ids[j] != positive_ids[b]
        ]
        hinge = sum(max(0.0, s - margin) for s in negatives) / len(negatives)
        total += 1.0 - float(queries[b] @ candidates[own]) + weight * hinge
    got = in_batch_cosine_contrastive_loss(
        queries, candidates, candidate_ids, positive_ids, offset=2, margin=margin,
        negative_weight=weight,
    )  # fmt: skip
    assert got.item() == pytest.approx(total / 4, rel=1e-5)
    # The masking matters: counted as negatives, the hits would change the loss.
    unmasked = in_batch_cosine_contrastive_loss(
        queries, candidates, torch.arange(10), torch.arange(2, 6), 2, margin, weight
    )
    assert unmasked.item() != pytest.approx(got.item(), rel=1e-3)


def test_in_batch_loss_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(3)
    queries = torch.randn(3, 4, generator=generator, dtype=torch.float64).requires_grad_()
    candidates = torch.randn(5, 4, generator=generator, dtype=torch.float64).requires_grad_()
    ids, positives = torch.tensor([0, 1, 2, 1, 4]), torch.tensor([0, 1, 2])

    def loss(q, c):
        return in_batch_cosine_contrastive_loss(q, c, ids, positives, 0, -0.2, 3.0, "cosine")

    torch.autograd.gradcheck(loss, (queries, candidates))
