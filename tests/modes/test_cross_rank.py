"""In-batch negatives gathered across DDP ranks: 2 ranks x B/2 rows == 1 rank x B rows."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_matching import IDEmbeddingTower, ListwiseMatching

NUM_USERS, NUM_ITEMS, DIM = 6, 12, 4
#: Module options of each compared case.
CASES = {
    "in_batch_plain": {"log_q_correction": False},
    "in_batch_log_q": {"log_q_correction": True},
    "in_batch_streamed_log_q": {"log_q_correction": True, "frequency_buckets": 64},
    "in_batch_learned_temperature": {"log_q_correction": True, "learn_temperature": True},
    "in_batch_cosine_contrastive": {
        "loss": "cosine_contrastive",
        "margin": -0.2,
        "negative_weight": 3.0,
    },
}


def make_model(**options):
    torch.manual_seed(0)
    return ListwiseMatching(
        IDEmbeddingTower(NUM_USERS, DIM),
        IDEmbeddingTower(NUM_ITEMS, DIM),
        temperature=0.2,
        in_batch_negatives=True,
        **options,
    )


def global_batch():
    """8 rows with 3 sampled negatives; item 2 is the positive of a row on each rank."""
    generator = torch.Generator().manual_seed(1)
    pos = torch.tensor([2, 5, 7, 1, 2, 9, 3, 5])
    neg = torch.randint(0, NUM_ITEMS, (8, 3), generator=generator)
    neg[neg == pos.unsqueeze(1)] = 11  # the sampler never draws the row's own positive
    neg[0, 0] = 9  # row 5's positive, sampled on rank 0 for row 0
    log_p = torch.log_softmax(torch.linspace(2, 0, NUM_ITEMS), 0)  # a "popularity" sampler
    log_freq = torch.log_softmax(torch.linspace(1, -1, NUM_ITEMS), 0)
    return {
        "users": torch.tensor([0, 1, 2, 3, 4, 5, 0, 1]),
        "pos_items": pos,
        "neg_items": neg,
        "neg_log_q": log_p[neg],
        "pos_log_q": log_freq[pos],
        "neg_batch_log_q": log_freq[neg],
        "pos_sampler_log_q": log_p[pos],
    }


def single_process(options):
    model = make_model(**options)
    loss = model.compute_loss(global_batch())
    loss.backward()
    grads = {
        key: (p.grad if p.grad is not None else torch.zeros_like(p))
        for key, p in model.named_parameters()
    }
    return loss.item(), grads


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    worker = Path(__file__).with_name("cross_rank_worker.py")
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(out), port, str(rank)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    return json.loads((out / "ranks.json").read_text())


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_equal_one_rank(two_ranks, case):
    loss, grads = single_process(CASES[case])
    assert two_ranks[case]["loss"] == pytest.approx(loss, rel=1e-5)
    assert set(two_ranks[case]["grads"]) == set(grads)
    for key, grad in grads.items():
        torch.testing.assert_close(
            torch.tensor(two_ranks[case]["grads"][key]), grad, rtol=1e-4, atol=1e-6
        )
        assert grad.abs().sum() > 0 or key == "log_temperature"


@pytest.mark.parametrize("case", ["in_batch_log_q", "in_batch_cosine_contrastive"])
def test_the_comparison_can_fail(two_ranks, case):
    # Without the gather, each rank would contrast with its own half only: a different loss.
    model = make_model(**CASES[case])
    batch = global_batch()
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    local_only = sum(model.compute_loss(half).item() for half in halves) / 2
    assert two_ranks[case]["loss"] != pytest.approx(local_only, rel=1e-3)
