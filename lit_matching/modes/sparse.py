"""Sparse embedding tables: which tables, their optimiser, and clipping over sparse gradients.

With ``MatchingModule(..., sparse_embeddings=True)`` every ``nn.Embedding`` of the towers
computes a sparse gradient (only the rows a batch looked up) and is updated by
:class:`torch.optim.SparseAdam`, which updates only those rows' weights and moments; the
rest of the model keeps the fused :class:`torch.optim.Adam`. A step then costs in the rows a
batch touches, not in the size of the catalogue: the dense path zeroes a ``(N, d)`` gradient
and runs Adam over all ``N`` rows every step.

A tower that reads one of its tables' ``weight`` directly (not through the module call,
which is what makes the gradient sparse) names it in a class attribute ``dense_embeddings``;
:class:`~lit_matching.towers.sequence.SelfAttentionTower` does so for its position table.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["check_sparse_gradients", "clip_gradients_", "sparse_tables"]


def sparse_tables(module: nn.Module) -> list[nn.Parameter]:
    """Switch the embedding tables of ``module`` to sparse gradients; their weights, once each.

    Every ``nn.Embedding`` below ``module`` gets ``sparse=True``, except those its parent
    names in ``dense_embeddings``. A table shared by two towers is listed once.

    Example:
        >>> from lit_matching.towers.id import IDEmbeddingTower
        >>> tower = IDEmbeddingTower(10, 4)
        >>> [tuple(p.shape) for p in sparse_tables(tower)], tower.embedding.sparse
        ([(10, 4)], True)
    """
    tables: dict[int, Tensor] = {}
    for parent in module.modules():
        keep_dense = getattr(parent, "dense_embeddings", ())
        for name, child in parent.named_children():
            if isinstance(child, nn.Embedding) and name not in keep_dense:
                child.sparse = True
                tables.setdefault(id(child.weight), child.weight)
    # A table kept dense by one parent stays dense, even if another one shares it.
    for parent in module.modules():
        for name in getattr(parent, "dense_embeddings", ()):
            table = getattr(parent, name, None)
            if isinstance(table, nn.Embedding):
                table.sparse = False
                tables.pop(id(table.weight), None)
    return [table for table in tables.values() if isinstance(table, nn.Parameter)]


def check_sparse_gradients(named_tables: Iterable[tuple[str, nn.Parameter]]) -> None:
    """Raise when a sparse table got a dense gradient (its weight was read directly).

    Example:
        >>> table = nn.Embedding(3, 2, sparse=True)
        >>> table.weight.sum().backward()  # not a lookup: a dense gradient
        >>> check_sparse_gradients([("table.weight", table.weight)])
        Traceback (most recent call last):
        ...
        ValueError: sparse_embeddings=True: table.weight got a dense gradient ...
    """
    for name, table in named_tables:
        if table.grad is not None and not table.grad.is_sparse:
            raise ValueError(
                f"sparse_embeddings=True: {name} got a dense gradient (a tower reads the "
                "table's weight directly, not through the nn.Embedding call); look it up "
                "through the module, or name the table in the tower's dense_embeddings"
            )


def clip_gradients_(parameters: Iterable[nn.Parameter], value: float, algorithm: str) -> None:
    """Clip the gradients of ``parameters``, sparse ones included, like Lightning's clipping.

    ``"norm"``: scale all gradients together so that their global 2-norm is at most
    ``value`` (as ``torch.nn.utils.clip_grad_norm_``); ``"value"``: clamp every entry to
    ``[-value, value]``. Sparse gradients are coalesced first, so that a row looked up twice
    in a batch counts once, with its summed gradient.

    Example:
        >>> table = nn.Embedding(3, 1, sparse=True)
        >>> (table(torch.tensor([0, 0])).sum() * 3).backward()  # row 0's gradient: 6
        >>> clip_gradients_([table.weight], 2.0, "norm")
        >>> round(table.weight.grad.to_dense()[0, 0].item(), 4)
        2.0
    """
    if algorithm not in ("norm", "value"):
        raise ValueError(f"gradient_clip_algorithm has to be 'norm' or 'value', got {algorithm!r}")
    grads: list[Tensor] = []
    for param in parameters:
        if param.grad is None:
            continue
        if param.grad.is_sparse:
            param.grad = param.grad.coalesce()
            grads.append(param.grad.values())  # a view: changing it changes the gradient
        else:
            grads.append(param.grad)
    if not grads:
        return
    with torch.no_grad():
        if algorithm == "value":
            for grad in grads:
                grad.clamp_(-value, value)
            return
        total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        scale = (value / (total + 1e-6)).clamp(max=1.0)
        for grad in grads:
            grad.mul_(scale.to(grad.device, grad.dtype))
