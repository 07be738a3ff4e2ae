"""Sequence user towers: encode a user from the items of their interaction history.

All towers here follow the tower contract: ``forward(features) -> (B, embedding_dim)`` with
``features`` a mapping holding

* ``"history"``: LongTensor ``(B, L)`` of item indices, LEFT-padded (most recent item in column
  ``L - 1``) with the padding index ``num_items``;
* ``"history_length"``: LongTensor ``(B,)``, the number of real items per row (``0..L``).

The towers only trust ``history_length``: the values in pad positions are never looked up (they
are replaced by index 0 before the embedding lookup and masked afterwards), so any garbage there,
or extra left padding, leaves the output unchanged. A shared item table may therefore have either
``num_items`` rows (e.g. the item tower's own table) or ``num_items + 1`` rows with
``padding_idx=num_items`` (what the towers build for themselves).

Empty histories (length 0) are encoded as a zero history representation which then goes through
the tower's output layers: the result is the zero vector when the tower has no output projection
or MLP, and otherwise a learned constant "empty history" vector (the projection's response to zero).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_matching.towers.id import mlp

__all__ = ["GRUTower", "HistoryPoolingTower", "SelfAttentionTower"]

_POOLINGS = ("mean", "sum", "max")


# --------------------------------------------------------------------------- shared helpers
def history_mask(lengths: Tensor, max_length: int) -> Tensor:
    """Boolean ``(B, L)`` mask of real positions of a LEFT-padded history.

    Args:
        lengths: ``(B,)`` number of real items per row.
        max_length: Number of columns ``L``.

    Returns:
        ``mask[b, j]`` is True iff column ``j`` holds a real item, i.e. ``j >= L - lengths[b]``.

    Example:
        >>> history_mask(torch.tensor([0, 2, 3]), 3).int().tolist()
        [[0, 0, 0], [0, 1, 1], [1, 1, 1]]
    """
    columns = torch.arange(max_length, device=lengths.device)
    return columns.unsqueeze(0) >= (max_length - lengths).unsqueeze(1)


def align_right(x: Tensor, lengths: Tensor) -> Tensor:
    """Move the real items of a LEFT-padded ``(B, L, ...)`` tensor to the front of each row.

    Row ``b`` is rotated so that its ``lengths[b]`` real entries occupy columns
    ``0..lengths[b]-1`` (in order) and its pad entries follow; :func:`align_left` undoes it.

    Example:
        >>> align_right(torch.tensor([[9, 9, 1, 2], [9, 9, 9, 9]]), torch.tensor([2, 0])).tolist()
        [[1, 2, 9, 9], [9, 9, 9, 9]]
    """
    return _rotate(x, x.shape[1] - lengths)


def align_left(x: Tensor, lengths: Tensor) -> Tensor:
    """Inverse of :func:`align_right`: real entries back to the last ``lengths[b]`` columns.

    Example:
        >>> align_left(torch.tensor([[1, 2, 0, 0]]), torch.tensor([2])).tolist()
        [[0, 0, 1, 2]]
    """
    return _rotate(x, lengths)


def _rotate(x: Tensor, shift: Tensor) -> Tensor:
    """``out[b, j] = x[b, (j + shift[b]) % L]`` along dim 1 (extra trailing dims kept)."""
    length = x.shape[1]
    index = torch.arange(length, device=x.device).unsqueeze(0) + shift.unsqueeze(1)
    # shift is in [0, L]: one subtraction instead of `% length`, which ONNX export cannot take
    # for a symbolic length.
    index = torch.where(index >= length, index - length, index)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def _history(
    features: Mapping[str, Tensor], max_length: int | None = None
) -> tuple[Tensor, Tensor]:
    """Checked ``(history, lengths)``; optionally keep only the last ``max_length`` items."""
    history, lengths = features["history"], features["history_length"]
    if history.dim() != 2 or lengths.shape != history.shape[:1]:
        raise ValueError(
            "expected history (B, L) and history_length (B,), "
            f"got {tuple(history.shape)} and {tuple(lengths.shape)}"
        )
    lengths = lengths.to(device=history.device, dtype=torch.long)
    if max_length is not None:  # no branch on the width: an exported graph takes any width
        history = history[:, -max_length:]
    return history, lengths.clamp(0, history.shape[1])


def masked_bag_sum(embedding: nn.Embedding, history: Tensor, mask: Tensor) -> Tensor:
    """Sum of each row's unmasked item vectors, ``(B, d)``.

    A weighted bag sum: pads weigh 0 (and look up row 0, so a shared table needs no pad row);
    no ``(B, L, d)`` tensor is built, forward or backward. Sparse gradients when the table is.
    """
    weight = embedding.weight
    return F.embedding_bag(
        history.masked_fill(~mask, 0),
        weight,
        mode="sum",
        per_sample_weights=mask.to(weight.dtype),
        sparse=embedding.sparse,
    )


def _embed(embedding: nn.Embedding, history: Tensor, mask: Tensor) -> Tensor:
    """Embed ``history`` without ever looking up pad positions; pads get zero vectors."""
    vectors = embedding(history.masked_fill(~mask, 0))
    return vectors * mask.unsqueeze(-1).to(vectors.dtype)


def _item_embedding(
    num_items: int | None, embedding_dim: int, item_embedding: nn.Embedding | None
) -> nn.Embedding:
    """The shared ``item_embedding`` (checked) or a new ``(num_items + 1, d)`` padded table."""
    if num_items is None or num_items < 1:
        raise ValueError(
            f"num_items has to be a positive integer, got {num_items!r} (the lit-matching CLI "
            "fills it from the data; in Python pass MatchingDataModule.num_items)"
        )
    if item_embedding is None:
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim has to be a positive integer, got {embedding_dim}")
        table = nn.Embedding(num_items + 1, embedding_dim, padding_idx=num_items)
        nn.init.normal_(table.weight, std=0.1)
        with torch.no_grad():
            table.weight[num_items].zero_()
        return table
    if item_embedding.num_embeddings < num_items:
        raise ValueError(
            f"item_embedding has {item_embedding.num_embeddings} rows, need at least {num_items}"
        )
    return item_embedding


class _HistoryTower(nn.Module):
    """What every history tower sets up: ``num_items``, ``embedding_dim`` and the item table."""

    def __init__(
        self, num_items: int | None, embedding_dim: int, item_embedding: nn.Embedding | None
    ):
        super().__init__()
        self.num_items = num_items
        self.embedding_dim = embedding_dim
        self.item_embedding = _item_embedding(num_items, embedding_dim, item_embedding)


def _projection(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim)


def _last_step(outputs: Tensor, lengths: Tensor) -> Tensor:
    """From right-aligned ``(B, L, d)`` outputs, the one at each row's last real item.

    Rows with no real item get zeros.
    """
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, outputs.shape[-1])
    last = outputs.gather(1, index).squeeze(1)
    return last.masked_fill((lengths == 0).unsqueeze(1), 0.0)


# --------------------------------------------------------------------------- towers
class HistoryPoolingTower(_HistoryTower):
    """YouTubeDNN-style user tower: pooled history item embeddings, then an optional MLP.

    Empty histories pool to the zero vector; with ``hidden_dims`` (or a projection, when a shared
    table's width differs from ``embedding_dim``) that becomes a learned constant vector.

    Args:
        num_items: Number of items; history pad index is ``num_items``.
        embedding_dim: Size of the output vectors (and of the own item table).
        pooling: ``"mean"``, ``"sum"`` or ``"max"`` over the real history items.
        hidden_dims: Hidden layer sizes of the MLP (ReLU) after pooling; its output layer has
            ``embedding_dim`` units. Empty: no MLP.
        dropout: Dropout before each MLP layer.
        item_embedding: Item table to share (e.g. the item tower's); ``num_items`` or
            ``num_items + 1`` rows. Default: a new ``nn.Embedding(num_items + 1, embedding_dim,
            padding_idx=num_items)``.

    Example:
        >>> tower = HistoryPoolingTower(num_items=5, embedding_dim=4, hidden_dims=(8,))
        >>> features = {"history": torch.tensor([[5, 1, 2], [5, 5, 5]]),
        ...             "history_length": torch.tensor([2, 0])}
        >>> tower(features).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        num_items: int | None = None,
        embedding_dim: int = 64,
        pooling: str = "mean",
        hidden_dims: Sequence[int] = (),
        dropout: float = 0.0,
        item_embedding: nn.Embedding | None = None,
    ):
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling has to be one of {_POOLINGS}, got {pooling!r}")
        super().__init__(num_items, embedding_dim, item_embedding)
        self.pooling = pooling
        in_dim = self.item_embedding.embedding_dim
        if hidden_dims:
            self.mlp: nn.Module = mlp(in_dim, hidden_dims, embedding_dim, dropout)
        else:
            self.mlp = _projection(in_dim, embedding_dim)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """User vectors ``(B, embedding_dim)`` from ``history`` and ``history_length``."""
        history, lengths = _history(features)
        mask = history_mask(lengths, history.shape[1])
        if self.pooling == "max":
            vectors = _embed(self.item_embedding, history, mask)
            lowest = torch.finfo(vectors.dtype).min
            pooled = vectors.masked_fill(~mask.unsqueeze(-1), lowest).amax(dim=1)
            pooled = pooled.masked_fill((lengths == 0).unsqueeze(1), 0.0)
        else:
            pooled = masked_bag_sum(self.item_embedding, history, mask)
            if self.pooling == "mean":
                pooled = pooled / lengths.clamp(min=1).unsqueeze(1).to(pooled.dtype)
        return self.mlp(pooled)


class GRUTower(_HistoryTower):
    """GRU4Rec-style user tower: a GRU over the history, read at each row's last real item.

    The left-padded history is rotated to right-aligned rows (:func:`align_right`) and packed
    with ``nn.utils.rnn.pack_padded_sequence``, so the GRU starts from a zero state at the first
    real item and never sees a pad; the user vector is the top layer's final hidden state,
    projected to ``embedding_dim`` when ``hidden_size`` differs. An empty history keeps the zero
    initial state (zero vector, or the projection's bias).

    Args:
        num_items: Number of items; history pad index is ``num_items``.
        embedding_dim: Size of the output vectors (and of the own item table).
        hidden_size: GRU state size; default ``embedding_dim``.
        num_layers: Number of stacked GRU layers.
        dropout: Dropout on the item embeddings and between GRU layers.
        item_embedding: Item table to share; see :class:`HistoryPoolingTower`.

    Example:
        An empty history (the second row) keeps the zero state: no projection, a zero vector.

        >>> tower = GRUTower(num_items=5, embedding_dim=4)
        >>> users = tower({"history": torch.tensor([[5, 1, 2], [5, 5, 5]]),
        ...                "history_length": torch.tensor([2, 0])})
        >>> users.shape, users[1].tolist()
        (torch.Size([2, 4]), [0.0, 0.0, 0.0, 0.0])
    """

    def __init__(
        self,
        num_items: int | None = None,
        embedding_dim: int = 64,
        hidden_size: int | None = None,
        num_layers: int = 1,
        dropout: float = 0.0,
        item_embedding: nn.Embedding | None = None,
    ):
        super().__init__(num_items, embedding_dim, item_embedding)
        hidden_size = embedding_dim if hidden_size is None else hidden_size
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            self.item_embedding.embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.projection = _projection(hidden_size, embedding_dim)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """User vectors ``(B, embedding_dim)`` from ``history`` and ``history_length``."""
        history, lengths = _history(features)
        batch_size = history.shape[0]
        mask = history_mask(lengths, history.shape[1])
        inputs = self.dropout(align_right(_embed(self.item_embedding, history, mask), lengths))
        if torch.compiler.is_compiling() or torch.jit.is_tracing():  # export: no data branches
            return self.projection(self._unpacked_state(inputs, lengths))
        state = inputs.new_zeros(batch_size, self.gru.hidden_size)
        non_empty = lengths > 0
        if bool(non_empty.any()):
            packed = nn.utils.rnn.pack_padded_sequence(
                inputs[non_empty], lengths[non_empty].cpu(), batch_first=True, enforce_sorted=False
            )
            _, h_n = self.gru(packed)
            state = state.index_put((non_empty,), h_n[-1])
        return self.projection(state)

    def _unpacked_state(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """The packed path's final states, from a GRU run over every (right-aligned) column.

        Real items come first in each row, so the output at column ``length - 1`` is the state
        after the row's last real item; an empty row gets the zero state. It does the work of
        the pads too (slower for training), but has no data-dependent branch, so it exports.
        """
        outputs, _ = self.gru(inputs)  # (B, L, hidden): the last layer's state at every step
        return _last_step(outputs, lengths)


class SelfAttentionTower(_HistoryTower):
    """SASRec-style user tower: causal self-attention over the history, read at the last item.

    Only the last ``max_length`` history items are used. Rows are rotated to right-aligned
    (:func:`align_right`) so that learned position ``p`` is the ``p``-th real item; a causal
    mask plus a key-padding mask keep every real position from attending to pads or later items.
    For an empty row the first key is unmasked (no all-masked softmax, hence no NaN) and its
    output is zeroed, so an empty history gives the zero vector (pad columns of
    :meth:`sequence_output` are zero as well).

    Args:
        num_items: Number of items; history pad index is ``num_items``.
        embedding_dim: Size of the output vectors (and of the own item table).
        num_heads: Attention heads; must divide the item embedding width.
        num_layers: Number of (pre-norm) transformer encoder layers.
        max_length: Number of learned positions = longest history used.
        dropout: Dropout on embeddings and inside the encoder layers.
        item_embedding: Item table to share; see :class:`HistoryPoolingTower`.

    Example:
        >>> tower = SelfAttentionTower(num_items=5, embedding_dim=4, max_length=3).eval()
        >>> features = {"history": torch.tensor([[5, 1, 2], [5, 5, 5]]),
        ...             "history_length": torch.tensor([2, 0])}
        >>> tower(features).shape, tower.sequence_output(features).shape
        (torch.Size([2, 4]), torch.Size([2, 3, 4]))
    """

    #: Tables read through ``weight`` (not looked up): kept dense under sparse embeddings.
    dense_embeddings = ("position_embedding",)

    def __init__(
        self,
        num_items: int | None = None,
        embedding_dim: int = 64,
        num_heads: int = 2,
        num_layers: int = 2,
        max_length: int = 50,
        dropout: float = 0.1,
        item_embedding: nn.Embedding | None = None,
    ):
        super().__init__(num_items, embedding_dim, item_embedding)
        self.max_length = max_length
        width = self.item_embedding.embedding_dim
        if width % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide the item width {width}")
        self.position_embedding = nn.Embedding(max_length, width)
        nn.init.normal_(self.position_embedding.weight, std=0.1)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            width, num_heads, 4 * width, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(width), enable_nested_tensor=False
        )
        self.projection = _projection(width, embedding_dim)

    def _encode(self, features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Right-aligned outputs ``(B, L', embedding_dim)`` (pads zeroed) and the lengths."""
        history, lengths = _history(features, self.max_length)
        length = history.shape[1]
        mask = history_mask(lengths, length)
        inputs = align_right(_embed(self.item_embedding, history, mask), lengths)
        inputs = inputs + self.position_embedding.weight[:length]
        real = align_right(mask, lengths)
        padding = ~real
        padding[:, 0] &= lengths > 0
        causal = torch.ones(length, length, dtype=torch.bool, device=inputs.device).triu(1)
        outputs = self.encoder(
            self.dropout(inputs), mask=causal, src_key_padding_mask=padding, is_causal=True
        )
        outputs = self.projection(outputs) * real.unsqueeze(-1).to(inputs.dtype)
        return outputs, lengths

    def sequence_output(self, features: Mapping[str, Tensor]) -> Tensor:
        """Per-position outputs ``(B, L', embedding_dim)``, LEFT-padded like the input.

        ``L' = min(L, max_length)``; column ``j`` is the encoding of the history up to and
        including the item in column ``j``; pad columns are zero.
        """
        outputs, lengths = self._encode(features)
        return align_left(outputs, lengths)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """User vectors ``(B, embedding_dim)``: the output at each row's last real item."""
        outputs, lengths = self._encode(features)
        return _last_step(outputs, lengths)
