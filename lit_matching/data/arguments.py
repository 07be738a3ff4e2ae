"""Checks of :class:`~lit_matching.data.datamodule.MatchingDataModule`'s arguments.

They run when the DataModule is built, so a wrong value fails at once (naming the argument),
not after the data is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lit_matching.data.batches import MODES
from lit_matching.data.features import Categorical, FeatureSpec, MultiCategorical, Numeric
from lit_matching.data.splits import SPLITS

__all__ = ["SAMPLERS", "check_arguments", "feature_specs", "side_features"]

_MODE_NUMBERS = {0: "pointwise", 1: "pairwise", 2: "listwise"}
#: Values of ``negative_sampler``.
SAMPLERS = ("uniform", "popularity")


def check_arguments(
    mode: str | int,
    num_negatives: int | None,
    *,
    sizes: Mapping[str, Any],
    counts: Mapping[str, Any],
    negative_sampler: str,
    split: str,
    duplicates: str,
) -> tuple[str, int]:
    """The mode's name and the number of negatives (its default for ``None``), checked.

    ``sizes`` (e.g. ``batch_size``) have to be positive integers, ``counts`` (e.g.
    ``history_length``) non-negative ones; the others are names from their registries.

    Raises:
        ValueError: Naming the first argument out of range, in the order of the signature.

    Example:
        >>> check_arguments(2, None, sizes={"batch_size": 8}, counts={},
        ...                 negative_sampler="uniform", split="ratio", duplicates="last")
        ('listwise', 8)
        >>> check_arguments("pairwise", 0, sizes={}, counts={}, negative_sampler="uniform",
        ...                 split="ratio", duplicates="last")
        Traceback (most recent call last):
        ...
        ValueError: num_negatives has to be a positive integer (or 0 for list-wise in-batch ...
    """
    name = _MODE_NUMBERS.get(mode, mode) if isinstance(mode, int) else mode
    if name not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {list(MODES)} or 0, 1, 2")
    num_negatives = MODES[name][1] if num_negatives is None else num_negatives
    if name == "listwise" and num_negatives == 0:
        pass  # in-batch negatives only (ListwiseMatching(in_batch_negatives=True))
    elif not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(
            f"num_negatives has to be a positive integer (or 0 for list-wise in-batch "
            f"negatives only), got {num_negatives!r}"
        )
    for key, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} has to be a positive integer, got {value!r}")
    for key, value in counts.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} has to be a non-negative integer, got {value!r}")
    if negative_sampler not in SAMPLERS:
        raise ValueError(
            f"unknown negative_sampler {negative_sampler!r}; expected one of {list(SAMPLERS)}"
        )
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if duplicates not in ("last", "first"):
        raise ValueError(f"duplicates must be 'last' or 'first', got {duplicates!r}")
    return name, num_negatives


def feature_specs(specs: Sequence[FeatureSpec], side: str) -> tuple[FeatureSpec, ...]:
    """``specs`` as a tuple; ``TypeError`` naming the first entry that is not a spec."""
    kinds = (Categorical, Numeric, MultiCategorical)
    if isinstance(specs, (str, Mapping, *kinds)):
        raise TypeError(f"{side}_feature_specs has to be a list of feature specs, got {specs!r}")
    specs = tuple(specs)
    for position, spec in enumerate(specs):
        if not isinstance(spec, kinds):
            raise TypeError(
                f"{side}_feature_specs[{position}] is {spec!r}, not a feature spec: give "
                "Categorical(name), Numeric(name) or MultiCategorical(name, sep=...) from "
                "lit_matching (in a config: {class_path: lit_matching.Numeric, init_args: "
                "{name: age}})"
            )
    return specs


def side_features(
    user: tuple[Any, Sequence[FeatureSpec], str], item: tuple[Any, Sequence[FeatureSpec], str]
) -> dict[str, tuple[Any, tuple[FeatureSpec, ...], str]]:
    """``{side: (table, specs, id column)}``, checked: a table needs specs and specs a table.

    Example:
        >>> side_features((None, (), "user_id"), (None, [Numeric("year")], "item_id"))
        Traceback (most recent call last):
        ...
        ValueError: item_side_features and item_feature_specs go together: give both ...
    """
    checked = {
        side: (table, feature_specs(specs, side), id_col)
        for side, (table, specs, id_col) in (("user", user), ("item", item))
    }
    for side, (table, specs, _) in checked.items():
        if (table is None) != (not specs):
            raise ValueError(
                f"{side}_side_features and {side}_feature_specs go together: give both "
                "(the table and which of its columns to encode) or neither"
            )
    return checked
