"""Portable towers: a trained tower as an ONNX graph, run with onnxruntime.

:func:`export_tower` writes a tower (any tower of :mod:`lit_matching.towers`, or any
``nn.Module`` with the tower contract) as an ONNX file whose inputs are the tower's features as
``int64`` arrays, named after them (``ids``, and with a history ``history`` ``(B, L)`` and
``history_length`` ``(B,)``, LEFT-padded as in training), with the batch size and the history
length left free, and whose output is ``vectors`` (``(B, d)``, or ``(B, K, d)`` for a
multi-interest tower). It is traced with ``torch.export`` (``torch.onnx.export(dynamo=True)``);
towers take their export paths while traced (e.g. the GRU without packed sequences).

:class:`~lit_matching.serving.onnx_tower.OnnxTower` runs such a file with onnxruntime alone:
no torch, no Lightning, no training code, which is what a serving process needs to compute a
user vector from a fresh history.

Towers with a recurrent layer (the GRU tower) go through the TorchScript-based exporter
(``dynamo=False``) instead: ``torch.export`` fixes the time axis of ``aten.gru`` to the
example's length in every export after a process's first, so their graphs would refuse other
history widths. Both exporters write ONNX; the parity tests cover both.

Example:
    >>> import tempfile, numpy as np
    >>> from lit_matching.serving.onnx_tower import OnnxTower
    >>> from lit_matching.towers.sequence import HistoryPoolingTower
    >>> tower = HistoryPoolingTower(num_items=20, embedding_dim=8)
    >>> path = export_tower(tower, tempfile.mkdtemp() + "/user_tower.onnx", uses_history=True)
    >>> runner = OnnxTower(path)
    >>> features = {"ids": np.array([0, 1]), "history": np.array([[20, 3], [4, 5]]),
    ...             "history_length": np.array([1, 2])}
    >>> runner(features).shape
    (2, 8)
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["HISTORY_INPUTS", "export_tower", "tower_input_names"]

#: The inputs a history tower reads besides ``ids``.
HISTORY_INPUTS = ("history", "history_length")
#: Sizes of the example batch the graph is traced with (any size runs afterwards).
_EXAMPLE_BATCH, _EXAMPLE_LENGTH = 3, 4


def tower_input_names(uses_history: bool) -> tuple[str, ...]:
    """The ONNX input names of a tower: ``("ids",)``, plus the history inputs if it reads them.

    Example:
        >>> tower_input_names(True)
        ('ids', 'history', 'history_length')
    """
    return ("ids", *HISTORY_INPUTS) if uses_history else ("ids",)


class _Inputs(nn.Module):
    """The tower with its feature dict as positional inputs (what the exporter traces)."""

    def __init__(self, tower: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.tower = tower
        self.names = names

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.tower(dict(zip(self.names, inputs, strict=True)))


def _example(num_rows: int, uses_history: bool, pad: int) -> dict[str, Tensor]:
    """Example inputs: ids ``0..B-1``; histories of lengths 0, 1, ... (left-padded)."""
    features = {"ids": torch.arange(_EXAMPLE_BATCH) % max(num_rows, 1)}
    if uses_history:
        lengths = torch.arange(_EXAMPLE_BATCH).clamp(max=_EXAMPLE_LENGTH)
        columns = torch.arange(_EXAMPLE_LENGTH).unsqueeze(0)
        real = columns >= (_EXAMPLE_LENGTH - lengths).unsqueeze(1)
        features["history"] = torch.where(real, columns, torch.full_like(columns, pad))
        features["history_length"] = lengths
    return features


def export_tower(
    tower: nn.Module,
    path: str | os.PathLike[str],
    uses_history: bool,
    num_ids: int = _EXAMPLE_BATCH,
    history_pad: int = 0,
    feature_inputs: Mapping[str, Tensor] | None = None,
) -> Path:
    """Write ``tower`` as an ONNX file at ``path`` (in eval mode; its mode is restored).

    Args:
        tower: The tower: ``tower(features) -> vectors``.
        path: The ``.onnx`` file to write (its folder must exist).
        uses_history: The tower reads ``history`` and ``history_length`` besides ``ids``.
        num_ids: Rows of the tower's id tables (the example ids stay below it).
        history_pad: The history padding index (``num_items``; never looked up).
        feature_inputs: Further inputs by name, as example tensors of batch size 3 (e.g. a
            :class:`~lit_matching.towers.feature.FeatureTower`'s ``feature.<name>`` inputs);
            their first axis is left free, the others keep the example's size.

    Returns:
        ``path``.

    Raises:
        ValueError: The tower cannot be traced for export (the exporter's reason is chained).
    """
    example = _example(num_ids, uses_history, history_pad) | dict(feature_inputs or {})
    names = (*tower_input_names(uses_history), *(feature_inputs or {}))
    wrapper = _Inputs(tower, names)
    options = _exporter_options(tower, names)
    was_training = tower.training
    tower.eval()
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                wrapper,
                tuple(example[name] for name in names),
                str(path),
                input_names=list(names),
                output_names=["vectors"],
                verbose=False,
                **options,
            )
    except Exception as error:
        raise ValueError(
            f"{type(tower).__name__} could not be exported to ONNX: {error}"
        ) from error
    finally:
        tower.train(was_training)
    return Path(path)


def _exporter_options(tower: nn.Module, names: tuple[str, ...]) -> dict[str, Any]:
    """``torch.onnx.export`` options: the free axes and the exporter.

    The batch and the history width stay free; recurrent towers go through the
    TorchScript-based exporter (see the module docstring).
    """
    if any(isinstance(module, nn.RNNBase) for module in tower.modules()):
        axes = {name: {0: "batch"} for name in (*names, "vectors")}
        if "history" in names:
            axes["history"] = {0: "batch", 1: "history_width"}
        return {"dynamo": False, "dynamic_axes": axes}
    batch = torch.export.Dim("batch", min=1)
    width = torch.export.Dim("history_width", min=1)
    shapes = tuple({0: batch, 1: width} if name == "history" else {0: batch} for name in names)
    return {
        "dynamo": True,
        "dynamic_shapes": (shapes,),  # for forward(*inputs)
        "external_data": False,  # one file (up to ONNX's 2 GB)
        "optimize": False,  # onnxscript's optimiser dropped squash's eps (NaN at 0)
    }


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines and warnings about unrelated operator sets."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
