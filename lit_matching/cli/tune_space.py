"""The search space of ``lit-matching tune``: a YAML file of dotted config keys and distributions.

Each entry maps a key of the config, as ``--key value`` would set it on the command line
(``model.init_args.learning_rate``, ``data.num_negatives``), to a distribution::

    model.init_args.learning_rate: {type: float, low: 0.001, high: 0.1, log: true}
    model.init_args.temperature: {type: float, low: 0.05, high: 0.3, step: 0.05}
    data.num_negatives: {type: int, low: 2, high: 32, log: true}
    model.init_args.similarity: {type: categorical, choices: [cosine, dot]}

``float`` and ``int`` take ``low`` and ``high`` (both included) and either ``log: true`` (a
log-uniform draw; ``low`` > 0) or a ``step``; ``categorical`` takes ``choices`` (strings,
numbers, booleans or ``null``). Whether each key is a setting of the config is checked by
:func:`lit_matching.cli.tune.check_space` before any trial runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = ["import_optuna", "load_space", "override", "sample_value", "short_key", "suggest"]

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


def load_space(path: str | Path) -> dict[str, BaseDistribution]:
    """Read a search-space file (see the module): dotted key -> Optuna distribution.

    Raises:
        ValueError: naming the file and the key, for an entry that is not a distribution.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = (Path(folder) / "space.yaml").write_text(
        ...     "model.init_args.learning_rate: {type: float, low: 0.001, high: 0.1, log: true}"
        ... )
        >>> load_space(Path(folder) / "space.yaml")["model.init_args.learning_rate"]
        FloatDistribution(high=0.1, log=True, low=0.001, step=None)
    """
    import_optuna()
    text = Path(path).read_text()
    entries = yaml.safe_load(text)
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{path}: expected a mapping of config keys to distributions")
    space = {}
    for key, spec in entries.items():
        if not isinstance(key, str) or not key or key.startswith("-"):
            raise ValueError(f"{path}: {key!r} is not a dotted config key (model.init_args.x)")
        try:
            space[key] = _distribution(key, spec)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    return space


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


def sample_value(distribution: BaseDistribution) -> Any:
    """A value the distribution can give (its low end or first choice): for checking a key."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[0]
    return distribution.low  # type: ignore[attr-defined]


def override(key: str, value: Any) -> str:
    """The command-line argument that sets ``key`` to ``value``.

    Example:
        >>> override("model.init_args.learning_rate", 0.01), override("data.x", None)
        ('--model.init_args.learning_rate=0.01', '--data.x=null')
    """
    text = value if isinstance(value, str) else json.dumps(value)
    return f"--{key}={text}"


def short_key(key: str) -> str:
    """A key without its ``init_args`` levels, for the progress lines.

    Example:
        >>> short_key("model.init_args.user_tower.init_args.embedding_dim")
        'model.user_tower.embedding_dim'
    """
    return ".".join(part for part in key.split(".") if part != "init_args")
