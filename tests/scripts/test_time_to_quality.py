"""The curve arithmetic of ``bench_vs_rechub.py --time-to-quality`` (``_time_to_quality.py``)."""

import doctest
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import _time_to_quality as ttq


def first_reaching_loop(clock, metrics, targets):
    for i in range(len(clock)):
        if all(metrics[name][i] >= target for name, target in targets.items()):
            return i
    return None


@pytest.mark.parametrize("seed", range(20))
def test_first_reaching_matches_a_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    clock = np.cumsum(rng.uniform(0.0, 1.0, n))
    metrics = {"hr@10": rng.uniform(0, 0.1, n), "hr@50": rng.uniform(0, 0.3, n)}
    for targets in (
        {"hr@10": 0.05},
        {"hr@50": 0.2},
        {"hr@10": 0.05, "hr@50": 0.2},
        {"hr@10": 0.2},  # never reached
        {"hr@10": float(metrics["hr@10"][-1])},  # equal counts as reached
    ):
        assert ttq.first_reaching(clock, metrics, targets) == first_reaching_loop(
            clock, metrics, targets
        )


def first_staying_loop(metrics, targets):
    n = len(next(iter(metrics.values())))
    for i in range(n):
        later = range(i, n)
        if all(metrics[k][j] >= target for j in later for k, target in targets.items()):
            return i
    return None


@pytest.mark.parametrize("seed", range(20))
def test_first_staying_matches_a_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    # Rising noisy curves, so that both answers occur (never, and somewhere in the middle).
    metrics = {
        "hr@10": np.linspace(0, 0.1, n) + rng.normal(0, 0.02, n),
        "hr@50": np.linspace(0, 0.3, n) + rng.normal(0, 0.05, n),
    }
    for targets in ({"hr@10": 0.05}, {"hr@10": 0.05, "hr@50": 0.15}, {"hr@50": 1.0}):
        assert ttq.first_staying(metrics, targets) == first_staying_loop(metrics, targets)


def test_first_reaching_needs_both_targets_at_one_checkpoint():
    clock = np.array([1.0, 2.0, 3.0])
    metrics = {"hr@10": np.array([0.1, 0.0, 0.1]), "hr@50": np.array([0.0, 0.3, 0.3])}
    assert ttq.first_reaching(clock, metrics, {"hr@10": 0.1}) == 0
    assert ttq.first_reaching(clock, metrics, {"hr@50": 0.3}) == 1
    assert ttq.first_reaching(clock, metrics, {"hr@10": 0.1, "hr@50": 0.3}) == 2


def test_first_reaching_refuses_a_clock_going_back():
    with pytest.raises(ValueError, match="increasing"):
        ttq.first_reaching(np.array([2.0, 1.0]), {"a": np.array([0, 1])}, {"a": 1})


@pytest.mark.parametrize("seed", range(10))
def test_best_within_matches_a_loop(seed):
    rng = np.random.default_rng(seed)
    clock, values = np.cumsum(rng.uniform(0, 1, 15)), rng.uniform(0, 1, 15)
    budget = float(rng.uniform(0, clock[-1] + 1))
    inside = [v for c, v in zip(clock, values, strict=True) if c <= budget]
    assert ttq.best_within(clock, values, budget) == (max(inside) if inside else None)


@pytest.mark.parametrize(
    ("per_epoch", "max_steps"), [(97, 970), (97, 40), (1, 5), (8, 3), (500, 1)]
)
def test_checkpoint_steps(per_epoch, max_steps):
    steps = ttq.checkpoint_steps(per_epoch, max_steps)
    spacing = math.ceil(per_epoch / 8)
    assert steps[0] == 1 and steps[-1] == max_steps
    assert all(b > a for a, b in itertools.pairwise(steps))
    # Every eighth of an epoch is a checkpoint, and no gap is wider than that.
    assert set(range(spacing, max_steps + 1, spacing)) <= set(steps)
    assert all(b - a <= spacing for a, b in itertools.pairwise(steps))
    with pytest.raises(ValueError, match="positive"):
        ttq.checkpoint_steps(0, 10)


def test_docstring_examples():
    assert doctest.testmod(ttq).failed == 0
