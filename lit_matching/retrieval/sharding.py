"""Sharded evaluation: each process evaluates its share of the users; the metrics are reduced.

Under DDP, :class:`~lit_matching.retrieval.evaluation.RetrievalEvaluator` gives each of the
``world_size`` processes every ``world_size``-th evaluated user (:func:`shard_eval_set`), so
the user encoding and the catalogue search, the costly part, split between the ranks. Each rank
still encodes every item and builds the whole index: every user is searched against the whole
catalogue, and encoding the items is a small part of the work next to searching (sharding it
would add an all-gather of ``num_items x d`` floats per rank for little gain).

The metrics are reduced exactly: each rank's :class:`~lit_matching.retrieval.metrics.MetricSums`
(sums over its users, and the best rank of every item for ``coverage@K``) are all-reduced by
sum and by minimum (:func:`reduce_sums`), then averaged, so every rank ends with the same
metrics, those of a single process up to the order of the float64 additions (``coverage@K``,
``popularity@K`` and the user counts exactly).

The reduction goes through an :data:`AllReduce`: :func:`torch_all_reduce` for the process
group Lightning (or ``torchrun``) initialised, or any function that combines the arrays of all
shards, e.g. in a test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from lit_matching.data.item_sets import EvalSet
from lit_matching.retrieval.metrics import MetricSums

__all__ = ["AllReduce", "reduce_sums", "shard_eval_set", "torch_all_reduce"]

#: ``all_reduce(values, op)``: ``values`` (a 1-D array) combined element-wise over every
#: process, by ``"sum"`` or ``"min"``; each process calls it with its own array, in the same
#: order, and gets the same result.
AllReduce = Callable[[np.ndarray, Literal["sum", "min"]], np.ndarray]


def shard_eval_set(eval_set: EvalSet, rank: int, world_size: int) -> EvalSet:
    """The share of ``eval_set`` that process ``rank`` of ``world_size`` evaluates.

    Rows ``rank, rank + world_size, ...``: disjoint shares that together hold every user, of
    sizes that differ by at most one (whatever order the users come in).

    Example:
        >>> from lit_matching.data.item_sets import ItemSets
        >>> users = np.array([3, 5, 8, 9, 12])
        >>> rows = np.arange(5)
        >>> eval_set = EvalSet(users, ItemSets.from_pairs(rows, rows, 5, 6),
        ...                    ItemSets.from_pairs(rows, rows + 1, 5, 6))
        >>> share = shard_eval_set(eval_set, rank=1, world_size=2)
        >>> share.users, share.targets.indices, share.exclude.indices
        (array([5, 9]), array([1, 3]), array([2, 4]))
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank has to lie in [0, world_size), got {rank!r} of {world_size!r}")
    rows = np.arange(rank, len(eval_set.users), world_size)
    return EvalSet(
        users=eval_set.users[rows],
        targets=eval_set.targets.select(rows),
        exclude=eval_set.exclude.select(rows),
    )


def reduce_sums(sums: MetricSums, all_reduce: AllReduce) -> MetricSums:
    """The :class:`MetricSums` of every process's users: sums added, best ranks' minimum.

    Every process has to call it (the ``all_reduce`` calls are collective), with sums of the
    same ``ks`` and options.

    Example:
        >>> from lit_matching.retrieval.metrics import metric_sums
        >>> one = metric_sums(np.array([[True]]), np.array([1]), [1])
        >>> reduce_sums(one, lambda values, op: 2 * values).metrics()["users"]  # "2 processes"
        2.0
    """
    names = list(sums.sums)
    totals = all_reduce(np.array([sums.sums[n] for n in names], dtype=np.float64), "sum")
    best_rank = sums.best_rank
    if best_rank is not None:
        best_rank = all_reduce(best_rank, "min")
    return MetricSums(sums.ks, {n: float(v) for n, v in zip(names, totals, strict=True)}, best_rank)


def torch_all_reduce(device: torch.device | str) -> AllReduce:
    """An :data:`AllReduce` over the default ``torch.distributed`` process group.

    Args:
        device: Where the reduced tensors go: the rank's GPU for NCCL, the CPU for gloo
            (under Lightning, the module's device).

    Raises:
        RuntimeError: If no process group is initialised.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "sharded evaluation needs an initialised torch.distributed process group "
            "(as Lightning's DDP strategy or torchrun set up)"
        )
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}

    def all_reduce(values: np.ndarray, op: Literal["sum", "min"]) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(values)).to(device)
        dist.all_reduce(tensor, op=ops[op])
        return tensor.cpu().numpy()

    return all_reduce
