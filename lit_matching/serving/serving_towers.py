"""Exported towers at serving time: requests (histories, feature values) to vectors, no torch.

A :class:`ServingTower` is one exported tower (an ONNX graph run by
:class:`~lit_matching.serving.tower_export.OnnxTower`) with what turns a request into its
inputs, as :class:`TowerSpec` says: how long a history it reads and its padding index, the
encoders of its side features (:class:`~lit_matching.serving.feature_codes.FeatureCodec`), and
the stored inputs of every known entity (each user's latest history, each entity's encoded
features), which fill whatever a request does not give.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lit_matching.serving.feature_codes import FeatureCodec
from lit_matching.serving.onnx_tower import OnnxTower

__all__ = ["ServingTower", "TowerSpec"]

HISTORY, HISTORY_LENGTH = "history", "history_length"


@dataclass(frozen=True)
class TowerSpec:
    """What a served tower reads, as ``meta.json`` of an export records it.

    Args:
        inputs: The ONNX graph's input names (``ids``, ``history``, ``history_length``,
            ``feature.<name>``...).
        history_length: Most recent history items the tower reads (0: no history).
        history_pad: The history padding index = the number of items the tower knows; item
            positions from it on (items added after training) cannot be in a history.
        features: The encoders of its side features, in input order.
        encodes_unknown: Whether it encodes an entity without a known id (``ids`` ``-1``):
            ``False`` for a tower that is an id embedding.
        interests: Vectors per entity of a multi-interest tower (``None``: one).
    """

    inputs: tuple[str, ...]
    history_length: int = 0
    history_pad: int = 0
    features: tuple[FeatureCodec, ...] = ()
    encodes_unknown: bool = True
    interests: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON object."""
        return {
            "inputs": list(self.inputs),
            "history_length": self.history_length,
            "history_pad": self.history_pad,
            "features": [codec.to_json() for codec in self.features],
            "encodes_unknown": self.encodes_unknown,
            "interests": self.interests,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> TowerSpec:
        """The spec of :meth:`to_json`; a ``ValueError`` names ``where`` if it is malformed."""
        try:
            return cls(
                inputs=tuple(str(name) for name in data["inputs"]),
                history_length=int(data["history_length"]),
                history_pad=int(data["history_pad"]),
                features=tuple(FeatureCodec.from_json(f, where) for f in data["features"]),
                encodes_unknown=bool(data["encodes_unknown"]),
                interests=None if data.get("interests") is None else int(data["interests"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: malformed tower description ({err})") from None

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the side features the tower reads."""
        return tuple(codec.name for codec in self.features)


class ServingTower:
    """An exported tower and the inputs it has stored for the known entities.

    Args:
        spec: What the tower reads.
        model: The ONNX graph (its bytes, as written by
            :func:`~lit_matching.serving.tower_export.export_tower`).
        stored: Inputs of the known entities by input name, row ``i`` for entity ``i``:
            ``history`` / ``history_length`` (left-padded latest histories) and the
            ``feature.<name>`` arrays.
        threads: Intra-op threads of onnxruntime (``None``: its default).
    """

    def __init__(
        self,
        spec: TowerSpec,
        model: bytes,
        stored: Mapping[str, np.ndarray],
        threads: int | None = None,
    ):
        self.spec = spec
        self.model = model
        self.stored = dict(stored)
        self.runner = OnnxTower(model, threads=threads)
        missing = [
            name for name in self.runner.input_names if name != "ids" and name not in self.stored
        ]
        if missing:
            raise ValueError(f"the tower reads input(s) {missing}, which are not stored")

    def encode(
        self,
        ids: np.ndarray,
        histories: Sequence[np.ndarray | None] | None = None,
        features: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> np.ndarray:
        """Vectors of entities: a known one's stored inputs, replaced by what is given.

        Args:
            ids: ``(B,)`` positions of known entities, ``-1`` for unknown ones.
            histories: Per row, item positions (oldest first, each below
                ``spec.history_pad``) replacing the stored history, or ``None`` to keep it
                (an unknown entity has an empty one).
            features: Per row, raw values of some side features replacing the stored ones
                (an unknown entity's other features are missing), or ``None``.

        Returns:
            ``(B, d)`` vectors (``(B, K, d)`` for a multi-interest tower), as the model
            prepares them for the index.

        Raises:
            ValueError: A feature the tower does not read, or a value it cannot encode.
        """
        return self.runner(self.inputs(ids, histories, features))

    def inputs(
        self,
        ids: np.ndarray,
        histories: Sequence[np.ndarray | None] | None = None,
        features: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> dict[str, np.ndarray]:
        """The tower's inputs for :meth:`encode` (same arguments), by input name."""
        ids = np.asarray(ids, dtype=np.int64)
        inputs: dict[str, np.ndarray] = {"ids": ids}
        if self.spec.history_length:
            inputs |= self._histories(ids, histories)
        for codec in self.spec.features:
            inputs |= self._feature(codec, ids, features)
        return inputs

    def with_rows(self, rows: np.ndarray, inputs: Mapping[str, np.ndarray]) -> ServingTower:
        """A tower whose stored inputs hold ``inputs`` at ``rows`` (rows past the end append).

        Args:
            rows: ``(B,)`` positions, each at most one past the previous end (new rows in order).
            inputs: Inputs as :meth:`inputs` returns them for those rows.
        """
        stored = {}
        for name, array in self.stored.items():
            grown = max(len(array), int(rows.max(initial=-1)) + 1)
            new = np.zeros((grown, *array.shape[1:]), dtype=array.dtype)
            new[: len(array)] = array
            new[rows] = inputs[name]
            stored[name] = new
        # The same graph: its onnxruntime session is shared, not loaded again.
        tower = copy.copy(self)
        tower.stored = stored
        return tower

    def check_features(self, given: Mapping[str, Any]) -> None:
        """Raise naming any of ``given``'s features that the tower does not read."""
        unknown = sorted(set(given) - set(self.spec.feature_names))
        if unknown:
            raise ValueError(
                f"unknown feature(s) {unknown}: the tower reads {list(self.spec.feature_names)}"
            )

    def _stored_rows(self, name: str, ids: np.ndarray) -> np.ndarray:
        """Stored input ``name`` of the rows' entities (row 0 for unknown ones, replaced later)."""
        return self.stored[name][np.maximum(ids, 0)]

    def _histories(
        self, ids: np.ndarray, histories: Sequence[np.ndarray | None] | None
    ) -> dict[str, np.ndarray]:
        length, pad = self.spec.history_length, self.spec.history_pad
        rows: list[np.ndarray] = []
        for row, user in enumerate(ids):
            given = None if histories is None else histories[row]
            if given is not None:
                rows.append(np.asarray(given, dtype=np.int64)[-length:])
            elif user >= 0:
                stored_length = int(self.stored[HISTORY_LENGTH][user])
                stored = self.stored[HISTORY][user]
                rows.append(stored[len(stored) - stored_length :] if stored_length else stored[:0])
            else:
                rows.append(np.zeros(0, dtype=np.int64))
        width = max(1, *map(len, rows))
        history = np.full((len(rows), width), pad, dtype=np.int64)
        for row, items in enumerate(rows):
            if len(items):
                history[row, width - len(items) :] = items
        lengths = np.array([len(items) for items in rows], dtype=np.int64)
        return {HISTORY: history, HISTORY_LENGTH: lengths}

    def _feature(
        self,
        codec: FeatureCodec,
        ids: np.ndarray,
        features: Sequence[Mapping[str, Any] | None] | None,
    ) -> dict[str, np.ndarray]:
        names = codec.input_names
        arrays = [self._stored_rows(name, ids).copy() for name in names]
        unknown = np.flatnonzero(ids < 0)
        for array, missing in zip(arrays, codec.missing(len(unknown)), strict=True):
            array[unknown] = missing
        rows = features or [None] * len(ids)
        given = [row for row, values in enumerate(rows) if values and codec.name in values]
        if given:
            values = [rows[row][codec.name] for row in given]  # type: ignore[index]
            for array, encoded in zip(arrays, codec.encode(values), strict=True):
                array[given] = encoded
        return dict(zip(names, arrays, strict=True))
