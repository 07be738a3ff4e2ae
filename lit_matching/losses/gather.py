"""Gathering a batch's tensors from every DDP rank, with gradients flowing back.

In-batch negatives are only as good as the batch: under DDP each rank would otherwise contrast
its rows with its own ``B / world_size`` items. :class:`RankGather` concatenates a tensor's
rows from all ranks in rank order (rank 0's rows first), so every rank sees the global batch
and knows where its own rows sit (:attr:`RankGather.offset`). For float tensors that need
gradients the backward pass all-reduces (sums) the gradient every rank's loss sends to the
gathered rows and hands each rank the slice of its own rows; with DDP's averaging of parameter
gradients that is exactly the gradient of the mean loss over the global batch.

Without an initialised process group (one process) everything is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["RankGather", "distributed_world_size"]


def distributed_world_size() -> int:
    """Number of processes of the default group, ``1`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _GatherWithGradient(torch.autograd.Function):
    """All-gather (equal shapes on all ranks) whose backward returns each rank its rows' sum."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        ctx.rank = dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss contributes to every rank's rows
        return grad[ctx.rank]


class RankGather:
    """Concatenates per-rank tensors along dim 0, for one step's batch.

    The ranks' batch sizes may differ (e.g. an uneven last batch): the sizes are exchanged once
    at construction, shorter tensors are padded for the collective and the padding dropped.

    Args:
        local_size: Rows of this rank's tensors in this step.
        device: Device of the tensors (the collectives run there).

    Example:
        >>> gather = RankGather(3, torch.device("cpu"))  # one process: nothing to gather
        >>> gather(torch.arange(3)).tolist(), gather.offset, gather.total
        ([0, 1, 2], 0, 3)
    """

    def __init__(self, local_size: int, device: torch.device):
        self.world_size = distributed_world_size()
        if self.world_size == 1:
            self.sizes = [local_size]
            self.rank = 0
        else:
            self.rank = dist.get_rank()
            size = torch.tensor([local_size], device=device)
            sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
            dist.all_gather(sizes, size)
            self.sizes = [int(s.item()) for s in sizes]
        #: Global row of this rank's first row.
        self.offset = sum(self.sizes[: self.rank])
        #: Rows of the gathered tensors.
        self.total = sum(self.sizes)

    def __call__(self, tensor: Tensor) -> Tensor:
        """``tensor`` of every rank, concatenated in rank order; differentiable for floats.

        Raises:
            ValueError: ``tensor`` has not ``local_size`` rows.
        """
        if len(tensor) != self.sizes[self.rank]:
            raise ValueError(
                f"RankGather was set up for {self.sizes[self.rank]} rows, got {len(tensor)}"
            )
        if self.world_size == 1:
            return tensor
        longest = max(self.sizes)
        if len(tensor) < longest:
            pad = tensor.new_zeros((longest - len(tensor), *tensor.shape[1:]))
            tensor = torch.cat([tensor, pad])
        tensor = tensor.contiguous()
        if tensor.requires_grad:
            parts = list(_GatherWithGradient.apply(tensor))
        else:
            parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
            dist.all_gather(parts, tensor)
        return torch.cat([part[:size] for part, size in zip(parts, self.sizes, strict=True)])
