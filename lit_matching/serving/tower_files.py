"""The tower files of a retriever export: the ONNX graphs, their stored inputs, popularity.

======================  ===========================================================================
file                    content
======================  ===========================================================================
``user_tower.onnx``     the user tower (ONNX), ending in the similarity's preparation
``user_tower.npz``      its stored inputs per known user: ``history`` / ``history_length`` (the
                        latest history, left-padded) and ``feature.<name>`` encoded features
``item_tower.onnx``     the item tower, when it reads side features (else absent)
``item_tower.npz``      its stored inputs per item (``feature.<name>``)
``item_popularity.npy`` float64 interactions per item in training: the cold-start fallback
======================  ===========================================================================

``meta.json`` describes each tower under ``towers`` (:class:`TowerSpec`: inputs, history length
and padding, feature encoders) and records the ``sha256`` of each of these files, which load
checks: an ONNX graph cannot be checked any other way. Nothing here is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np

from lit_matching.serving.export_files import check_file_sha256
from lit_matching.serving.serving_towers import HISTORY, HISTORY_LENGTH, ServingTower, TowerSpec

__all__ = ["POPULARITY", "TOWER_FILES", "read_popularity", "read_tower", "write_tower"]

#: The graph and stored-input files of each side's tower.
TOWER_FILES = {
    "user": ("user_tower.onnx", "user_tower.npz"),
    "item": ("item_tower.onnx", "item_tower.npz"),
}
POPULARITY = "item_popularity.npy"


def write_tower(path: Path, tower: ServingTower, names: tuple[str, str]) -> dict[str, Any]:
    """Write ``tower``'s graph and stored inputs as ``names`` in ``path``; return its spec."""
    (path / names[0]).write_bytes(tower.model)
    with open(path / names[1], "wb") as file:
        cast(Any, np.savez)(file, **tower.stored)  # numpy's stubs refuse keyword arrays
    return tower.spec.to_json()


def read_tower(
    path: Path, meta: dict[str, Any], side: str, names: tuple[str, str], rows: int
) -> ServingTower | None:
    """The tower of ``side`` if the export has one, its files checked against ``meta.json``.

    Args:
        path: The export.
        meta: Its ``meta.json``.
        side: ``"user"`` or ``"item"``.
        names: The tower's graph and stored-input file names.
        rows: Known entities of the side (each stored input has a row per entity).
    """
    described = (meta.get("towers") or {}).get(side)
    if described is None:
        return None
    where = f"{path / 'meta.json'} towers.{side}"
    spec = TowerSpec.from_json(described, where)
    for name in names:
        check_file_sha256(path, meta, name)
    stored = _read_stored(path / names[1], rows)
    if spec.history_length:
        _check_histories(path / names[1], stored, spec)
    try:
        return ServingTower(spec, (path / names[0]).read_bytes(), stored)
    except Exception as err:  # onnxruntime refuses a graph with its own exception types
        raise ValueError(f"{path / names[0]} is not a usable tower: {err}") from None


def _read_stored(file: Path, rows: int) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as arrays:
            stored = {name: arrays[name] for name in arrays.files}
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"{file} is not a readable .npz archive: {err}") from None
    for name, array in stored.items():
        if len(array) != rows:
            raise ValueError(f"{file}: {name!r} has {len(array)} rows, the export {rows}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"{file}: {name!r} holds values that are not finite")
    return stored


def _check_histories(file: Path, stored: dict[str, np.ndarray], spec: TowerSpec) -> None:
    if HISTORY not in stored or HISTORY_LENGTH not in stored:
        raise ValueError(f"{file} lacks the stored histories ({HISTORY!r}, {HISTORY_LENGTH!r})")
    history, lengths = stored[HISTORY], stored[HISTORY_LENGTH]
    if history.ndim != 2 or lengths.min(initial=0) < 0 or lengths.max(initial=0) > history.shape[1]:
        raise ValueError(f"{file}: histories must be (users, length) with lengths within it")
    if history.size and (history.min() < 0 or history.max() > spec.history_pad):
        raise ValueError(
            f"{file}: history items must lie in [0, {spec.history_pad}] (the padding index)"
        )


def read_popularity(path: Path, meta: dict[str, Any], name: str, num_items: int) -> np.ndarray:
    """Interactions per item (``zeros`` for an export without them)."""
    if name not in (meta.get("sha256") or {}):
        return np.zeros(num_items)
    check_file_sha256(path, meta, name)
    try:
        counts = np.load(path / name, allow_pickle=False)
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path / name} is not a readable .npy array: {err}") from None
    if counts.shape != (num_items,) or not np.isfinite(counts).all():
        raise ValueError(f"{path / name} must hold {num_items} finite counts, got {counts.shape}")
    return counts.astype(np.float64)
