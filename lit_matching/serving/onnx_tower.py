"""Run an exported tower (an ONNX graph) with onnxruntime on numpy arrays: no torch.

The graphs are written by :func:`~lit_matching.serving.tower_export.export_tower`; this module
is what a serving process needs of them, and imports neither torch nor Lightning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime

__all__ = ["OnnxTower"]


class OnnxTower:
    """A tower exported by :func:`export_tower`, run with onnxruntime on numpy arrays.

    Args:
        model: The ``.onnx`` file, or its bytes.
        threads: Intra-op threads of the session (``None``: onnxruntime's default).
    """

    def __init__(self, model: str | os.PathLike[str] | bytes, threads: int | None = None):
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: not its notes on constant folding
        if threads is not None:
            options.intra_op_num_threads = threads
        self.name = "the ONNX tower" if isinstance(model, bytes) else Path(model).name
        self.session = onnxruntime.InferenceSession(
            model if isinstance(model, bytes) else str(model),
            options,
            providers=["CPUExecutionProvider"],
        )
        self.input_names = tuple(node.name for node in self.session.get_inputs())
        self._dtypes = {
            node.name: np.float32 if node.type == "tensor(float)" else np.int64
            for node in self.session.get_inputs()
        }

    def __call__(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Vectors of ``features`` (``ids``, and ``history`` / ``history_length`` if read)."""
        missing = [name for name in self.input_names if name not in features]
        if missing:
            raise ValueError(f"{self.name} needs input(s) {missing}; got {sorted(features)}")
        inputs = {
            name: np.asarray(features[name], dtype=self._dtypes[name]) for name in self.input_names
        }
        return self.session.run(["vectors"], inputs)[0]
