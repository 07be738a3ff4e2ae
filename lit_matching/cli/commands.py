"""The commands besides LightningCLI's: ``export``, ``recommend`` and ``configs``."""

from __future__ import annotations

import argparse
import inspect
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from lit_matching.cli.configs import (
    DEFAULT_CONFIG,
    _resolve_configs,
    config_description,
    packaged_config,
    packaged_configs,
)
from lit_matching.cli.lightning import MatchingCLI, _unsafe_checkpoint
from lit_matching.data.datamodule import MatchingDataModule
from lit_matching.modes.base import MatchingModule
from lit_matching.serving.batch import (
    DEFAULT_CHUNK_SIZE,
    check_users,
    read_user_file,
    recommend_to_parquet,
)
from lit_matching.serving.from_training import export_retriever
from lit_matching.serving.retriever import Retriever

__all__ = ["configs_command", "export_command", "recommend_command"]


def _load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint on the CPU without unpickling anything but tensors and plain values.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file holds other objects (naming the file and what torch refused), or
            is no checkpoint.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _unsafe_checkpoint(path, error) from error
    except Exception as error:  # torch raises KeyError, RuntimeError... for other files
        raise ValueError(f"{path} is not a readable checkpoint ({error!r})") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


def _raw_ids(values: Sequence[str], known: Sequence[Any]) -> list[Any]:
    """Command-line strings as ids of the types the retriever holds.

    Each string becomes the first of its conversions to the types of the known ids (``int``,
    ``float``, ``str``, numpy scalars...) that is a known id; a string that is none is kept as
    given, for the lookup to name as unknown.

    Example:
        >>> _raw_ids(["1", "2.5", "x"], [1.0, 2.5])
        [1.0, 2.5, 'x']
    """
    kinds = [kind for kind in dict.fromkeys(map(type, known)) if kind is not bool]
    known_ids = set(known)
    raw: list[Any] = []
    for value in values:
        for kind in kinds:
            try:
                candidate = kind(value)
            except (TypeError, ValueError, OverflowError):
                continue
            if candidate in known_ids:
                raw.append(candidate)
                break
        else:
            raw.append(value)
    return raw


def recommend_command(args: Sequence[str]) -> None:
    """``lit-matching recommend DIR --user ID ...``: print recommendations as a table.

    With ``--all`` or ``--users-file FILE`` and ``--output FILE.parquet`` it writes the
    recommendations of every user (or of the file's users) to a Parquet file instead
    (:func:`~lit_matching.serving.batch.recommend_to_parquet`).
    """
    parser = argparse.ArgumentParser(
        prog="lit-matching recommend",
        description="Recommendations (or similar items) from an exported retriever directory: "
        "printed for --user / --item ids, or written to a Parquet file (--output) for all "
        "users (--all) or those of a file (--users-file).",
    )
    parser.add_argument("directory", help="a directory written by fit or export")
    parser.add_argument("--user", action="append", default=[], help="raw user id (repeatable)")
    parser.add_argument("--item", action="append", default=[], help="raw item id: similar items")
    parser.add_argument("--k", type=int, default=None, help="results per id (default: 10)")
    parser.add_argument("--include-seen", action="store_true", help="do not drop seen items")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--all", action="store_true", help="every user (needs --output)")
    batch.add_argument("--users-file", help="raw user ids, one per line (needs --output)")
    parser.add_argument("--output", help="Parquet file for --all / --users-file")
    parser.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="users per chunk of --output"
    )
    options = parser.parse_args(args)
    batch_run = options.all or options.users_file is not None
    if batch_run != (options.output is not None):
        parser.error("--output goes with --all or --users-file, and they need --output")
    if batch_run and (options.user or options.item):
        parser.error("--user / --item print a table; with --all or --users-file leave them out")
    if not batch_run and not options.user and not options.item:
        parser.error("give at least one --user or --item (or --all / --users-file and --output)")
    retriever = Retriever.load(options.directory)
    if batch_run:
        _recommend_to_file(retriever, options)
        return
    with pd.option_context("display.max_rows", None, "display.width", 120):
        if options.user:
            users = _raw_ids(options.user, retriever.user_ids)
            print(
                retriever.recommend(
                    users, options.k, exclude_seen=not options.include_seen
                ).to_string(index=False)
            )
        if options.item:
            items = _raw_ids(options.item, retriever.item_ids)
            print(retriever.similar_items(items, options.k).to_string(index=False))


def _recommend_to_file(retriever: Retriever, options: argparse.Namespace) -> None:
    """``recommend --all | --users-file FILE --output OUT``: write OUT, print one line."""
    users = None
    if options.users_file is not None:
        given, lines = read_user_file(options.users_file)
        users = _raw_ids(given, retriever.user_ids)
        check_users(retriever, users, lines, options.users_file)
    result = recommend_to_parquet(
        retriever,
        options.output,
        users,
        options.k,
        exclude_seen=not options.include_seen,
        chunk_size=options.chunk_size,
    )
    print(f"Wrote {result.rows:,} recommendations for {result.users:,} users to {result.path}")


class _ExportCLI(MatchingCLI):
    """The parser of a fit, which also accepts (and ignores) the subcommands' own arguments.

    A run's saved ``config.yaml`` holds them (``ckpt_path``, ``weights_only``...); export
    reads the checkpoint given on its command line.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the arguments of the ``Trainer`` methods behind the subcommands."""
        super().add_arguments_to_parser(parser)
        for name in _subcommand_arguments():
            parser.add_argument(f"--{name}", type=Any, default=None, help="ignored by export")


def _subcommand_arguments() -> list[str]:
    """Arguments LightningCLI's subcommands take from their ``Trainer`` method (not the model)."""
    names: dict[str, None] = {}
    for subcommand, skipped in LightningCLI.subcommands().items():
        parameters = inspect.signature(getattr(pl.Trainer, subcommand)).parameters
        names |= dict.fromkeys(name for name in parameters if name not in {"self", *skipped})
    return list(names)


def export_command(args: Sequence[str]) -> None:
    """``lit-matching export --config CFG --ckpt_path CKPT --output DIR [overrides]``."""
    parser = argparse.ArgumentParser(
        prog="lit-matching export",
        description="Export a checkpoint as a retriever directory (embeddings, ids, FAISS "
        "index, meta.json). Other arguments are LightningCLI overrides of the config (the "
        "config.yaml a fit saved works; its ckpt_path is ignored).",
    )
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--index", default="Flat", help="FAISS index-factory string")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    options, rest = parser.parse_known_args(args)
    # Before preparing the data: an existing output or a bad checkpoint need not wait for it.
    if Path(options.output).exists() and not options.overwrite:
        raise FileExistsError(f"{options.output} exists; pass --overwrite to replace it")
    checkpoint = _load_checkpoint(options.ckpt_path)
    cli = _ExportCLI(
        MatchingModule,
        MatchingDataModule,
        subclass_mode_model=True,
        args=_resolve_configs(["fit", *rest])[1:],  # the config of a fit, without running it
        run=False,
        auto_configure_optimizers=False,
    )
    cli.datamodule.load_state_dict(checkpoint.get("MatchingDataModule", {}))
    cli.model.load_state_dict(checkpoint["state_dict"])
    path = export_retriever(
        cli.model, cli.datamodule, options.output, index=options.index, overwrite=options.overwrite
    )
    print(f"Retriever exported to {path}")


def configs_command(args: Sequence[str]) -> None:
    """``lit-matching configs [NAME]``: list the packaged configs, or print one."""
    parser = argparse.ArgumentParser(
        prog="lit-matching configs",
        description="List the packaged configs (one line each), or print the YAML file of one.",
    )
    parser.add_argument("name", nargs="?", choices=packaged_configs(), help="config to print")
    options = parser.parse_args(args)
    if options.name:
        print(Path(packaged_config(options.name)).read_text(), end="")
        return
    names = packaged_configs()
    width = max(len(name) for name in names)
    for name in names:
        default = " (default)" if name == DEFAULT_CONFIG else ""
        print(f"{name:<{width}}  {config_description(name)}{default}")
    hints = {
        "Train one:": "lit-matching fit --config NAME",
        "Print it with every default:": "lit-matching fit --config NAME --print_config",
    }
    width = max(len(hint) for hint in hints)
    print("\n" + "\n".join(f"{hint:<{width}} {command}" for hint, command in hints.items()))
