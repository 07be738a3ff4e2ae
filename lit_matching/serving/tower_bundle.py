"""A trained model's towers made servable: ONNX graphs plus what turns requests into inputs.

:func:`serving_towers` exports the user tower, and the item tower when it reads side features,
with :func:`~lit_matching.serving.tower_export.export_tower` (each graph ends in the model's
``Similarity.prepare``, so its vectors are ready for the index) and gathers what serving needs
to feed them (:class:`~lit_matching.serving.serving_towers.TowerSpec`): the history length and
padding index, the encoders of the side features, and every known entity's stored inputs
(each user's latest history, each entity's encoded features).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lit_matching.data.features import MultiCategorical
from lit_matching.retrieval.encoding import eval_mode
from lit_matching.serving.feature_codes import FeatureCodec
from lit_matching.serving.serving_towers import HISTORY, HISTORY_LENGTH, ServingTower, TowerSpec
from lit_matching.serving.tower_export import export_tower, tower_input_names
from lit_matching.towers.feature import FeatureEncoder

__all__ = ["serving_towers"]

_EXAMPLE_ROWS = 3


class _Prepared(nn.Module):
    """A tower whose vectors go through the similarity's preparation (as ``encode_users``)."""

    def __init__(self, tower: nn.Module, prepare: Callable[[Tensor], Tensor]):
        super().__init__()
        self.tower = tower
        self.prepare = prepare

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        return self.prepare(self.tower(features))


def serving_towers(
    module: Any, datamodule: Any, user_features: Mapping[str, Tensor]
) -> tuple[ServingTower, ServingTower | None]:
    """The servable user tower, and item tower if it reads side features, of a trained model.

    Args:
        module: The trained :class:`~lit_matching.modes.base.MatchingModule` (its
            ``user_tower``, ``item_tower`` and ``similarity``).
        datamodule: The :class:`~lit_matching.data.datamodule.MatchingDataModule` it was
            trained on (side-feature specs, sizes).
        user_features: Every user's inputs as the export encodes them (``ids``, and with a
            history ``history`` / ``history_length``: the latest one), stored for serving.

    Returns:
        ``(user, item)``; ``item`` is ``None`` for an item tower without side features.
    """
    prepare = module.similarity.prepare
    histories = {
        name: user_features[name].numpy()
        for name in (HISTORY, HISTORY_LENGTH)
        if name in user_features
    }
    users = _side_tower(module.user_tower, prepare, datamodule, "user", histories)
    item_encoder = _feature_encoder(module.item_tower)
    items = (
        _side_tower(module.item_tower, prepare, datamodule, "item", {})
        if item_encoder is not None
        else None
    )
    return users, items


def _feature_encoder(tower: nn.Module) -> FeatureEncoder | None:
    encoders = [part for part in tower.modules() if isinstance(part, FeatureEncoder)]
    if len(encoders) > 1:
        raise ValueError(
            f"{type(tower).__name__} holds {len(encoders)} feature encoders; a served tower "
            "reads one side-feature table"
        )
    return encoders[0] if encoders else None


def _side_tower(
    tower: nn.Module,
    prepare: Callable[[Tensor], Tensor],
    datamodule: Any,
    side: str,
    histories: Mapping[str, np.ndarray],
) -> ServingTower:
    """Export one side's tower and gather its spec and stored inputs (``histories``, if any)."""
    num_items = datamodule.num_items
    num_rows = datamodule.num_users if side == "user" else num_items
    uses_history = bool(histories)
    stored: dict[str, np.ndarray] = dict(histories)
    encoder = _feature_encoder(tower)
    codecs: tuple[FeatureCodec, ...] = ()
    if encoder is not None:
        specs = (datamodule.side_features or {}).get(side, (None, (), ""))[1]
        table = getattr(datamodule, f"{side}_feature_table", None)
        if table is None:
            raise ValueError(
                f"the {side} tower reads side features, but the data has no {side} feature table"
            )
        codecs = _codecs(encoder, table, specs)
        stored |= _encoded_features(encoder)
    wrapper = _Prepared(tower, prepare)
    example = {"ids": torch.arange(_EXAMPLE_ROWS) % num_rows}
    example |= {
        name: torch.from_numpy(array[example["ids"].numpy()]) for name, array in stored.items()
    }
    feature_inputs = {name: example[name] for codec in codecs for name in codec.input_names}
    with tempfile.TemporaryDirectory() as folder:
        path = export_tower(
            wrapper, Path(folder) / "tower.onnx", uses_history, num_rows, num_items, feature_inputs
        )
        model = path.read_bytes()
    with eval_mode(wrapper), torch.no_grad():
        vectors = wrapper(example)
    spec = TowerSpec(
        inputs=(*tower_input_names(uses_history), *feature_inputs),
        history_length=datamodule.history_length if uses_history else 0,
        history_pad=num_items,
        features=codecs,
        encodes_unknown=_encodes_unknown(wrapper, example),
        interests=int(vectors.shape[1]) if vectors.dim() == 3 else None,
    )
    return ServingTower(spec, model, stored)


def _encodes_unknown(wrapper: nn.Module, example: dict[str, Tensor]) -> bool:
    """Whether the tower encodes ids ``-1`` (it does not look them up in an id table)."""
    with eval_mode(wrapper), torch.no_grad():
        try:
            vectors = wrapper(example | {"ids": torch.full_like(example["ids"], -1)})
        except (IndexError, RuntimeError):  # an id embedding refuses -1
            return False
    return bool(torch.isfinite(vectors).all())


def _codecs(encoder: FeatureEncoder, table: Any, specs: Sequence[Any]) -> tuple[FeatureCodec, ...]:
    """The encoders of ``encoder``'s features, from the data's table and specs."""
    separators = {spec.name: spec.sep for spec in specs if isinstance(spec, MultiCategorical)}
    codecs = []
    for name in encoder.names:
        column = table[name]
        codecs.append(
            FeatureCodec(
                name=name,
                kind=column.kind,
                categories=tuple(getattr(column, "categories", ())),
                mean=float(getattr(column, "mean", 0.0)),
                std=float(getattr(column, "std", 1.0)),
                sep=separators.get(name, "|"),
                width=int(column.codes.shape[1]) if column.kind == "multi_categorical" else 1,
            )
        )
    return tuple(codecs)


def _encoded_features(encoder: FeatureEncoder) -> dict[str, np.ndarray]:
    """Every row's encoded features, by input name, from the encoder's buffers."""
    arrays: dict[str, np.ndarray] = {}
    rows = torch.arange(encoder.num_rows)
    for names, part in zip(encoder.input_names().values(), encoder.lookups, strict=True):
        for name, value in zip(names, part.inputs(rows), strict=True):
            arrays[name] = value.detach().cpu().numpy()
    return arrays
