"""The library's in-batch softmax against a slow reference built row by row."""

import math

import pytest
import torch

from lit_matching.losses.in_batch import (
    correct_sampling_bias_,
    in_batch_logits,
    in_batch_softmax_loss,
    remove_accidental_hits_,
)
from lit_matching.losses.logq import log_expected_count
from lit_matching.losses.similarity import get_similarity
from lit_matching.modes.listwise import ListwiseMatching
from lit_matching.towers.id import IDEmbeddingTower


def reference_in_batch_loss(
    queries, candidates, candidate_ids, positive_ids, offset, temperature, log_counts, similarity
):
    """Row by row: the own positive first, then every candidate that is not the row's item."""
    score = get_similarity(similarity).rowwise
    losses = []
    for row in range(len(queries)):
        own = offset + row
        logits = [score(queries[row], candidates[own]) / temperature]
        for column in range(len(candidates)):
            if column == own or candidate_ids[column] == positive_ids[row]:
                continue  # the positive itself, or an accidental hit
            logit = score(queries[row], candidates[column]) / temperature
            if log_counts is not None:
                logit = logit - log_counts[column]
            logits.append(logit)
        losses.append(-torch.log_softmax(torch.stack(logits), dim=0)[0])
    return torch.stack(losses).mean()


# Rows 0, 1 and 4 share item 3; a sampled negative equals item 7 (row 2's positive) and one
# equals item 3. With offset 2, two rows of another rank come first (as under DDP).
POSITIVES = torch.tensor([3, 3, 7, 1, 3])
SAMPLED = torch.tensor([7, 0, 3, 5, 6])


def _inputs(offset, dtype=torch.float64):
    generator = torch.Generator().manual_seed(offset)
    other_rank = torch.tensor([2, 3, 8])[:offset]
    candidate_ids = torch.cat([other_rank, POSITIVES, SAMPLED])
    table = torch.randn(9, 4, generator=generator, dtype=dtype, requires_grad=True)
    queries = torch.randn(len(POSITIVES), 4, generator=generator, dtype=dtype, requires_grad=True)
    log_q = torch.log(torch.rand(9, generator=generator, dtype=dtype) + 0.05)
    return queries, table, candidate_ids, log_q[candidate_ids]


@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean"])
@pytest.mark.parametrize("log_q", [False, True])
@pytest.mark.parametrize("offset", [0, 2])
@pytest.mark.parametrize("learned_temperature", [False, True])
def test_in_batch_loss_equals_the_reference_in_value_and_gradients(
    similarity, log_q, offset, learned_temperature
):
    queries, table, candidate_ids, log_counts = _inputs(offset)
    temperature = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    t = temperature if learned_temperature else 0.3
    args = (queries, table[candidate_ids], candidate_ids, POSITIVES, offset, t)
    counts = log_counts if log_q else None
    loss = in_batch_softmax_loss(*args, counts, similarity)
    reference = reference_in_batch_loss(*args, counts, similarity)
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    wrt = [queries, table, temperature] if learned_temperature else [queries, table]
    for got, expected in zip(
        torch.autograd.grad(loss, wrt, retain_graph=True),
        torch.autograd.grad(reference, wrt, retain_graph=True),
        strict=True,
    ):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # the checks can fail: without the masking or with log-Q flipped the loss differs
    other = in_batch_softmax_loss(*args, None if log_q else log_counts, similarity)
    assert not torch.allclose(other, reference)


def test_accidental_hits_leave_the_own_column_only():
    logits = torch.zeros(3, 4)
    ids = torch.tensor([4, 4, 5])
    remove_accidental_hits_(logits, torch.tensor([4, 4, 5, 4]), ids)
    expected = torch.tensor(
        [[0, -math.inf, 0, -math.inf], [-math.inf, 0, 0, -math.inf], [0, 0, 0, 0]]
    )
    assert torch.equal(logits, expected)


def test_sampling_bias_correction_spares_the_own_column():
    logits = torch.zeros(2, 4)
    correct_sampling_bias_(logits, torch.tensor([1.0, 2.0, 3.0, 4.0]), offset=2)
    assert torch.equal(logits, -torch.tensor([[1.0, 2.0, 0.0, 4.0], [1.0, 2.0, 3.0, 0.0]]))


def test_a_lone_positive_costs_nothing():
    # one row, its own positive the only candidate: log softmax of a single logit is 0
    vector = torch.ones(1, 3)
    loss = in_batch_softmax_loss(vector, vector, torch.tensor([1]), torch.tensor([1]))
    assert loss.item() == 0.0


@pytest.mark.parametrize(
    ("temperature", "error"),
    [(0.0, "temperature has to be positive"), (-1.0, "temperature has to be positive")],
)
def test_bad_temperatures_are_refused(temperature, error):
    vector = torch.ones(1, 3)
    with pytest.raises(ValueError, match=error):
        in_batch_logits(vector, vector, torch.tensor([1]), torch.tensor([1]), 0, temperature)


@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean"])
def test_listwise_matching_composes_the_in_batch_loss(similarity):
    # the module's gather, log-Q inputs and mode around the same loss as the reference
    torch.manual_seed(0)
    model = ListwiseMatching(
        IDEmbeddingTower(5, 8),
        IDEmbeddingTower(9, 8),
        similarity=similarity,
        temperature=0.2,
        in_batch_negatives=True,
    )
    # the batch-level and sampler log-probabilities of the 9 items: any two will do
    batch_q, sampler_q = torch.log(torch.rand(2, 9) + 0.05)
    neg = SAMPLED.view(-1, 1)  # one sampled negative per row
    batch = {"users": torch.arange(5), "pos_items": POSITIVES, "neg_items": neg}
    batch |= {"pos_log_q": batch_q[POSITIVES], "neg_batch_log_q": batch_q[neg]}
    batch |= {"pos_sampler_log_q": sampler_q[POSITIVES], "neg_log_q": sampler_q[neg]}
    candidate_ids = torch.cat([POSITIVES, SAMPLED])
    # 4 other positives and 5 sampled negatives per row
    counts = log_expected_count(batch_q[candidate_ids], 4, sampler_q[candidate_ids], 5)
    users = model.encode_users(batch["users"])
    candidates = model.encode_items(candidate_ids)
    scores = model.similarity.on_prepared()
    reference = reference_in_batch_loss(
        users, candidates, candidate_ids, POSITIVES, 0, 0.2, counts, scores
    )
    params = list(model.parameters())
    loss = model.compute_loss(batch)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    for got, expected in zip(
        torch.autograd.grad(loss, params, retain_graph=True),
        torch.autograd.grad(reference, params),
        strict=True,
    ):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
