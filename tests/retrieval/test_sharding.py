"""Sharded evaluation in one process: shards run in threads, reduced by a fake all-reduce."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from lit_matching.data.item_sets import EvalSet, ItemSets
from lit_matching.retrieval.evaluation import evaluate_retrieval
from lit_matching.retrieval.metrics import METRICS, metric_sums, retrieval_metrics
from lit_matching.retrieval.sharding import reduce_sums, shard_eval_set, torch_all_reduce


class ThreadAllReduce:
    """``world_size`` threads' arrays combined as torch.distributed.all_reduce would."""

    def __init__(self, world_size: int):
        self.barrier = threading.Barrier(world_size)
        self.slots: list = [None] * world_size
        self.calls = [0] * world_size

    def for_rank(self, rank: int):
        def all_reduce(values, op):
            self.calls[rank] += 1
            self.slots[rank] = np.array(values)
            self.barrier.wait()  # every rank has put its array
            combined = {"sum": np.sum, "min": np.min}[op](np.stack(self.slots), axis=0)
            self.barrier.wait()  # every rank has read them all before any overwrites its slot
            return combined

        return all_reduce


def sharded(world_size: int, user_vectors, eval_set, **kwargs) -> list[dict]:
    """:func:`evaluate_retrieval` of each rank's share, the ranks in threads."""
    reduce = ThreadAllReduce(world_size)

    def rank_metrics(rank: int) -> dict:
        rows = np.arange(rank, len(eval_set.users), world_size)
        share = shard_eval_set(eval_set, rank, world_size)
        assert share.users.tolist() == eval_set.users[rows].tolist()
        return evaluate_retrieval(
            user_vectors[rows], eval_set=share, all_reduce=reduce.for_rank(rank), **kwargs
        )

    with ThreadPoolExecutor(world_size) as pool:
        results = list(pool.map(rank_metrics, range(world_size)))
    assert len(set(reduce.calls)) == 1  # every rank made the same collective calls
    return results


def case(seed: int, users: int = 70, items: int = 90, dim: int = 6, interests: int = 0):
    """Random vectors, targets (some users without), seen items and training counts."""
    rng = np.random.default_rng(seed)
    rows = np.arange(users)
    seen = [rng.choice(items, size=rng.integers(0, 25), replace=False) for _ in rows]
    wanted = rng.integers(0, 4, size=users)  # 0: a user without a target (skipped)
    wanted[0] = 1
    targets = [
        rng.choice(np.setdiff1d(np.arange(items), s), n, False)
        for s, n in zip(seen, wanted, strict=True)
    ]
    shape = (users, interests, dim) if interests else (users, dim)
    eval_set = EvalSet(
        users=rng.permutation(users * 3)[:users],  # user ids in no particular order
        targets=ItemSets.from_pairs(np.repeat(rows, wanted), np.concatenate(targets), users, items),
        exclude=ItemSets.from_pairs(
            np.repeat(rows, [len(s) for s in seen]), np.concatenate(seen), users, items
        ),
    )
    vectors = rng.normal(size=shape).astype(np.float32)
    return vectors, rng.normal(size=(items, dim)).astype(np.float32), eval_set, rng


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("interests", [0, 3])
def test_sharded_metrics_equal_one_process(world_size, interests):
    users, items, eval_set, rng = case(world_size + interests, interests=interests)
    counts = rng.integers(0, 40, size=len(items))
    kwargs = dict(item_vectors=items, metric="ip", ks=(1, 5, 20), item_counts=counts)
    single = evaluate_retrieval(users, eval_set=eval_set, **kwargs)
    assert 0 < single["coverage@5"] < 1 and single["skipped_users"] > 0
    for got in sharded(world_size, users, eval_set, **kwargs):
        assert list(got) == list(single)
        for name, value in single.items():
            if name.startswith(("coverage@", "popularity@", "users", "skipped_users")):
                assert got[name] == value, name  # counts: exact
            else:
                assert got[name] == pytest.approx(value, abs=1e-12), name


def test_sharded_ann_recall_and_more_ranks_than_users():
    users, items, eval_set, _ = case(7, users=5, items=400, dim=4)
    kwargs = dict(item_vectors=items, metric="l2", ks=(3, 10), index="IVF8,Flat")
    kwargs |= dict(search_params={"nprobe": 1})  # misses some of the exact top k
    single = evaluate_retrieval(users, eval_set=eval_set, **kwargs)
    assert 0 < single["ann_recall@10"] < 1
    for got in sharded(8, users, eval_set, **kwargs):  # three ranks evaluate nobody
        assert got == pytest.approx(single, abs=1e-12)


def test_reduce_sums_adds_shards_and_keeps_the_best_rank():
    rng = np.random.default_rng(0)
    hits = rng.random((30, 8)) < 0.3
    num_relevant = rng.integers(0, 3, size=30)
    num_relevant[0] = 1
    top = rng.integers(-1, 25, size=(30, 8))
    counts = rng.integers(0, 9, size=25)
    ks = (2, 8, 12)
    parts = [metric_sums(hits[r::2], num_relevant[r::2], ks, top[r::2], counts) for r in (0, 1)]
    calls = []

    def two_ranks(values, op):  # both ranks' arrays, combined
        calls.append(op)
        index = len(calls) - 1
        other = [parts[1].sums, parts[1].best_rank][index]
        other = np.array(list(other.values())) if isinstance(other, dict) else other
        return values + other if op == "sum" else np.minimum(values, other)

    got = reduce_sums(parts[0], two_ranks).metrics()
    assert calls == ["sum", "min"]
    expected = retrieval_metrics(hits, num_relevant, ks, top, counts)
    assert got == pytest.approx(expected, abs=1e-12)
    assert {f"{m}@{k}" for m in METRICS for k in ks} < set(got)
    with pytest.raises(ValueError, match="no user has a relevant item"):
        metric_sums(hits[:1], np.array([0]), ks).metrics()  # a shard may hold no such user


def test_shard_eval_set_rejects_a_rank_outside_the_world():
    _, _, eval_set, _ = case(0, users=4)
    with pytest.raises(ValueError, match="rank has to lie in"):
        shard_eval_set(eval_set, 2, 2)


def test_torch_all_reduce_needs_a_process_group():
    with pytest.raises(RuntimeError, match="process group"):
        torch_all_reduce("cpu")
