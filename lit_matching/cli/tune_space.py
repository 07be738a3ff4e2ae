"""The search space of ``lit-matching tune``: a YAML file of dotted config keys and distributions.

Each entry maps a key of the config, as ``--key value`` would set it on the command line
(``model.init_args.learning_rate``, ``data.num_negatives``), to a distribution::

    model.init_args.learning_rate: {type: float, low: 0.001, high: 0.1, log: true}
    model.init_args.temperature: {type: float, low: 0.05, high: 0.3, step: 0.05}
    data.num_negatives: {type: int, low: 2, high: 32, log: true}
    model.init_args.similarity: {type: categorical, choices: [cosine, dot]}

``float`` and ``int`` take ``low`` and ``high`` (both included) and either ``log: true`` (a
log-uniform draw; ``low`` > 0) or a ``step``; ``categorical`` takes ``choices`` (strings,
numbers, booleans or ``null``).

An entry may also set other keys to the value it draws, ``also: [key, ...]``: settings that
have to agree, such as the two towers' sizes::

    model.init_args.user_tower.init_args.embedding_dim:
      type: categorical
      choices: [32, 64, 128]
      also: [model.init_args.item_tower.init_args.embedding_dim]

The trial records the entry's own key only (its Optuna parameter); its config, and the best
config written, set the linked keys too. A key is set by one entry only: as an entry's key or
in one ``also``. Whether each key, linked ones included, is a setting of the config that takes
the distribution's values (its ends, or every choice) is checked by
:func:`lit_matching.cli.tune.check_space` before any trial runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = [
    "SearchSpace",
    "check_values",
    "import_optuna",
    "load_space",
    "override",
    "overrides",
    "short_key",
    "suggest",
]

_FIELDS = {
    "float": {"low", "high", "log", "step"},
    "int": {"low", "high", "log", "step"},
    "categorical": {"choices"},
}


def import_optuna() -> Any:
    """The ``optuna`` module, or an exit naming the extra that installs it."""
    try:
        import optuna
    except ModuleNotFoundError as error:
        raise SystemExit(
            "lit-matching tune needs Optuna: pip install 'lit-matching[tune]'"
        ) from error
    return optuna


def _number(key: str, spec: dict[str, Any], field: str, kind: str) -> float | int:
    value = spec.get(field)
    wanted = int if kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise ValueError(f"{key}: {kind} needs a number {field!r}, got {value!r}")
    return value


def _distribution(key: str, spec: Any) -> BaseDistribution:
    """The Optuna distribution of one entry; errors name the key."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in _FIELDS:
        raise ValueError(
            f"{key}: expected a mapping with type float, int or categorical, got {spec!r}"
        )
    unknown = set(spec) - _FIELDS[kind] - {"type"}
    if unknown:
        raise ValueError(f"{key}: unknown field(s) {sorted(unknown)} for type {kind}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(
                f"{key}: categorical needs a non-empty list 'choices', got {choices!r}"
            )
        odd = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
        if odd:
            raise ValueError(f"{key}: choices must be strings, numbers, booleans or null: {odd}")
        return CategoricalDistribution(choices)
    low, high = _number(key, spec, "low", kind), _number(key, spec, "high", kind)
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise ValueError(f"{key}: 'log' must be true or false, got {log!r}")
    if step is not None:
        step = _number(key, spec, "step", kind)
    try:
        if kind == "int":
            return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
        return FloatDistribution(float(low), float(high), log=log, step=step)
    except ValueError as error:  # Optuna's checks: low <= high, log with low > 0, ...
        raise ValueError(f"{key}: {error}") from error


@dataclass(frozen=True)
class SearchSpace:
    """A search space read by :func:`load_space`.

    Attributes:
        distributions: Each entry's key and its Optuna distribution.
        links: An entry's key -> the other keys its ``also`` sets to the same value (entries
            without ``also`` are not in it).
    """

    distributions: dict[str, BaseDistribution]
    links: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _is_key(key: Any) -> bool:
    return isinstance(key, str) and bool(key) and not key.startswith("-")


def _split_also(key: str, spec: Any) -> tuple[Any, tuple[str, ...]]:
    """The entry's distribution fields and its ``also`` keys (checked: a list of keys)."""
    if not isinstance(spec, dict) or "also" not in spec:
        return spec, ()
    also = spec["also"]
    if not isinstance(also, list) or not also or not all(_is_key(k) for k in also):
        raise ValueError(
            f"{key}: 'also' must be a non-empty list of dotted config keys, got {also!r}"
        )
    return {k: v for k, v in spec.items() if k != "also"}, tuple(also)


def _check_set_once(path: str | Path, links: dict[str, tuple[str, ...]]) -> None:
    """Raise, naming the key, if a key is set by two entries (or twice by one)."""
    setter = {key: key for key in links}  # each key -> the entry that sets it
    for key, also in links.items():
        for linked in also:
            if linked in setter:
                first = setter[linked]
                why = (
                    "an entry's own key"
                    if first == linked
                    else f"set by {first!r} already" + (" (listed twice)" if first == key else "")
                )
                raise ValueError(
                    f"{path}: {linked!r}, in the 'also' of {key!r}, is {why}: each key may be "
                    "set by one entry only"
                )
            setter[linked] = key


def load_space(path: str | Path) -> SearchSpace:
    """Read a search-space file (see the module): distributions and linked keys.

    Raises:
        ValueError: naming the file and the key, for an entry that is not a distribution, an
            ``also`` that is not a list of keys, or a key set by two entries.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = (Path(folder) / "space.yaml").write_text(
        ...     "model.init_args.user_tower.init_args.embedding_dim: {type: categorical, "
        ...     "choices: [32, 64], also: [model.init_args.item_tower.init_args.embedding_dim]}"
        ... )
        >>> space = load_space(Path(folder) / "space.yaml")
        >>> space.distributions["model.init_args.user_tower.init_args.embedding_dim"]
        CategoricalDistribution(choices=(32, 64))
        >>> [(short_key(k), [short_key(x) for x in also]) for k, also in space.links.items()]
        [('model.user_tower.embedding_dim', ['model.item_tower.embedding_dim'])]
    """
    import_optuna()
    entries = yaml.safe_load(Path(path).read_text())
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{path}: expected a mapping of config keys to distributions")
    distributions, links = {}, {}
    for key, spec in entries.items():
        if not _is_key(key):
            raise ValueError(f"{path}: {key!r} is not a dotted config key (model.init_args.x)")
        try:
            spec, links[key] = _split_also(key, spec)
            distributions[key] = _distribution(key, spec)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    _check_set_once(path, links)
    return SearchSpace(distributions, {key: also for key, also in links.items() if also})


def suggest(trial: optuna.trial.Trial, space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """The trial's value of every key of ``space`` (recorded in the trial as its params)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    values: dict[str, Any] = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            values[key] = trial.suggest_categorical(key, d.choices)
        elif isinstance(d, IntDistribution):
            values[key] = trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
        else:
            low, high = d.low, d.high  # type: ignore[attr-defined]
            step, log = d.step, d.log  # type: ignore[attr-defined]
            values[key] = trial.suggest_float(key, low, high, step=step, log=log)
    return values


def check_values(distribution: BaseDistribution) -> list[Any]:
    """The values to check a key with: every choice, or both ends of a range.

    Example:
        >>> from optuna.distributions import CategoricalDistribution, IntDistribution
        >>> check_values(IntDistribution(2, 16)), check_values(CategoricalDistribution([1, "a"]))
        ([2, 16], [1, 'a'])
    """
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    low, high = distribution.low, distribution.high  # type: ignore[attr-defined]
    return [low] if low == high else [low, high]


def override(key: str, value: Any) -> str:
    """The command-line argument that sets ``key`` to ``value``.

    Example:
        >>> override("model.init_args.learning_rate", 0.01), override("data.x", None)
        ('--model.init_args.learning_rate=0.01', '--data.x=null')
    """
    text = value if isinstance(value, str) else json.dumps(value)
    return f"--{key}={text}"


def overrides(
    values: Mapping[str, Any], links: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """The arguments that set each key of ``values``, and the keys linked to it, to its value.

    Example:
        >>> overrides({"model.init_args.user_tower.init_args.embedding_dim": 32},
        ...           {"model.init_args.user_tower.init_args.embedding_dim": ["data.x"]})
        ['--model.init_args.user_tower.init_args.embedding_dim=32', '--data.x=32']
    """
    links = links or {}
    return [
        override(linked, value)
        for key, value in values.items()
        for linked in (key, *links.get(key, ()))
    ]


def short_key(key: str) -> str:
    """A key without its ``init_args`` levels, for the progress lines.

    Example:
        >>> short_key("model.init_args.user_tower.init_args.embedding_dim")
        'model.user_tower.embedding_dim'
    """
    return ".".join(part for part in key.split(".") if part != "init_args")
