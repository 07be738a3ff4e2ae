"""The packaged configs: their names, files and descriptions, and ``--config NAME``."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["DEFAULT_CONFIG", "config_description", "packaged_config", "packaged_configs"]

_SUBCOMMANDS = ("fit", "validate", "test", "predict")
DEFAULT_CONFIG = "listwise"


def packaged_configs() -> list[str]:
    """Names of the configs shipped with the package.

    Example:
        >>> packaged_configs()  # doctest: +NORMALIZE_WHITESPACE
        ['gowalla', 'listwise', 'ml100k-features', 'ml1m', 'pairwise', 'pointwise',
         'sequence']
    """
    folder = files("lit_matching") / "configs"
    names = (p.name for p in folder.iterdir())
    return sorted(name.removesuffix(".yaml") for name in names if name.endswith(".yaml"))


def packaged_config(name: str) -> str:
    """Path of the packaged config ``name`` (with or without ``.yaml``).

    Example:
        >>> Path(packaged_config("pairwise")).name
        'pairwise.yaml'
    """
    name = name.removesuffix(".yaml")
    if name not in packaged_configs():
        raise ValueError(f"no packaged config {name!r}; packaged: {packaged_configs()}")
    return str(files("lit_matching") / "configs" / f"{name}.yaml")


def config_description(name: str) -> str:
    """What the packaged config ``name`` trains: the first line of its header comment.

    Example:
        >>> config_description("pairwise")
        'Pair-wise two-tower MF (ID towers), embedded MovieLens ml-latest-small.'
    """
    for line in Path(packaged_config(name)).read_text().splitlines():
        if not line.startswith("#"):
            break
        if text := line.lstrip("#").strip():
            return text
    return ""


def _resolve_configs(args: list[str]) -> list[str]:
    """Map ``--config NAME`` to packaged files; add the default config to a bare subcommand."""
    resolved = list(args)
    has_config = False
    for i, arg in enumerate(resolved):
        flag, _, inline = arg.partition("=")
        if flag not in ("--config", "-c"):
            continue
        has_config = True
        value_at = i if inline else i + 1
        value = inline or (resolved[value_at] if value_at < len(resolved) else "")
        # A folder named like a config (e.g. the data folder ./gowalla) is not a config file.
        packaged = value.removesuffix(".yaml") in packaged_configs()
        if value and packaged and not Path(value).is_file():
            path = packaged_config(value)
            resolved[value_at] = f"{flag}={path}" if inline else path
    if not has_config and resolved and resolved[0] in _SUBCOMMANDS:
        resolved[1:1] = ["--config", packaged_config(DEFAULT_CONFIG)]
    return resolved
