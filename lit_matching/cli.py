"""The ``lit-matching`` command: LightningCLI over the matching modules and data.

``lit-matching fit`` with no arguments trains the list-wise model on the embedded MovieLens
data with the packaged ``listwise`` config, evaluates the best checkpoint on validation and
test, prints a table of retrieval metrics next to the most-popular baseline, and exports the
model as a retriever directory (``<log dir>/retriever``). ``--config NAME`` selects a packaged
config (``lit-matching configs`` lists them) or any YAML file; every value can be overridden on
the command line (``--trainer.max_epochs 5``), and ``--print_config`` prints the result.

Besides LightningCLI's ``fit``, ``validate``, ``test`` and ``predict``:

* ``lit-matching configs`` lists the packaged configs, one line each; ``lit-matching configs
  NAME`` prints one (a starting point for your own YAML file);
* ``lit-matching export --config CFG --ckpt_path CKPT --output DIR [--overwrite]`` exports a
  checkpoint (``CFG`` may be the ``config.yaml`` a run saved; the checkpoint is read with
  ``weights_only=True``: nothing in it is unpickled but tensors and plain values);
* ``lit-matching recommend DIR --user ID [--user ID ...] [--k 10] [--include-seen]`` prints
  recommendations from an exported directory (``--item ID`` prints similar items); ids are
  read as the type of the exported ids (``--user 1.0`` for float ids).

A fit with a ``RetrievalEvaluator`` whose data holds no validation or test interaction stops
before training. A user error (a bad file, value or id, an unsafe checkpoint) prints
``lit-matching: error: MESSAGE`` to stderr and exits with status 1; set the environment
variable ``LIT_MATCHING_TRACEBACK=1`` for the full traceback. Unexpected exceptions (bugs) keep
their traceback.
"""

from __future__ import annotations

import argparse
import inspect
import os
import pickle
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from lit_matching.data.datamodule import MatchingDataModule
from lit_matching.modes.base import MatchingModule
from lit_matching.retrieval.evaluation import RetrievalEvaluator, most_popular_metrics
from lit_matching.serving.retriever import Retriever, export_retriever

__all__ = [
    "MatchingCLI",
    "RunConfigSaver",
    "config_description",
    "format_metrics_table",
    "main",
    "packaged_config",
    "packaged_configs",
    "run_cli",
    "run_dir",
]

_SUBCOMMANDS = ("fit", "validate", "test", "predict")
DEFAULT_CONFIG = "listwise"
_DESCRIPTION = (
    "Train and evaluate two-tower retrieval models. --config NAME picks a packaged config "
    "(list them with `lit-matching configs`) or a YAML file. Other commands: "
    "`lit-matching configs [NAME]`, `lit-matching export --config CFG --ckpt_path CKPT "
    "--output DIR`, `lit-matching recommend DIR --user ID [--k 10]`."
)


def packaged_configs() -> list[str]:
    """Names of the configs shipped with the package.

    Example:
        >>> packaged_configs()
        ['gowalla', 'listwise', 'ml100k-features', 'pairwise', 'pointwise', 'sequence']
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


def format_metrics_table(columns: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per metric, one column per named result.

    Example:
        >>> print(format_metrics_table({"val": {"recall@10": 0.5}, "test": {"recall@10": 0.25}}))
        metric          val      test
        recall@10    0.5000    0.2500
    """
    names = list(dict.fromkeys(name for metrics in columns.values() for name in metrics))
    width = max(len("metric"), *(len(n) for n in names))
    widths = [max(8, len(title)) for title in columns]
    lines = [
        "metric".ljust(width) + "".join(f"  {t:>{w}}" for t, w in zip(columns, widths, strict=True))
    ]
    for name in names:
        cells = [
            f"  {metrics[name]:>{w}.4f}" if name in metrics else f"  {'-':>{w}}"
            for metrics, w in zip(columns.values(), widths, strict=True)
        ]
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)


def _fill_unset(config: Any, values: dict[str, Any]) -> list[tuple[Namespace, str]]:
    """Set unset (``None``) init args named in ``values`` of a ``class_path`` config, deeply.

    Towers nested in a tower (e.g. a history tower inside a feature tower) hold items: they
    get ``num_users`` and ``num_items`` only. Returns the ``(init_args, name)`` pairs set.
    """
    if not isinstance(config, Namespace) or "class_path" not in config:
        return []
    init_args = config.get("init_args")
    if init_args is None:
        return []
    filled = []
    nested = {k: v for k, v in values.items() if k in ("num_users", "num_items")}
    for name in list(vars(init_args)):  # top-level names; keys() lists nested leaves
        value = init_args[name]
        if value is None and name in values:
            init_args[name] = values[name]
            filled.append((init_args, name))
        else:
            filled += _fill_unset(value, nested)
    return filled


def _instantiate_datamodule(data: Namespace) -> MatchingDataModule:
    """The DataModule of a parsed ``data`` config, its arguments instantiated as LightningCLI does.

    ``data.as_dict()`` alone would pass dataclass arguments (the feature specs) as plain dicts.
    """
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(MatchingDataModule, "data")
    config = parser.parse_object({"data": data.as_dict()})
    return parser.instantiate(config).data


def run_dir(trainer: pl.Trainer) -> str:
    """The directory of this run, where ``config.yaml`` and the exported retriever go.

    A CSV or TensorBoard logger's ``log_dir`` (``<save_dir>/<name>/version_N``); for other
    loggers, such as W&B's, whose ``save_dir`` every run shares, ``<save_dir>/<name>/<version>``
    (for W&B: ``<save_dir>/<project>/<run id>``), where ``ModelCheckpoint`` puts the run's
    checkpoints; without a logger, ``default_root_dir``. A collective under DDP (every rank
    gets rank 0's directory), like ``trainer.log_dir``.
    """
    if not trainer.loggers:
        directory = trainer.default_root_dir
    elif isinstance(trainer.loggers[0], (CSVLogger, TensorBoardLogger)):
        directory = trainer.loggers[0].log_dir
    else:
        logger = trainer.loggers[0]
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
        directory = os.path.join(save_dir, str(logger.name), version)
    return trainer.strategy.broadcast(directory)


@contextmanager
def _keeping_none() -> Iterator[None]:
    """Silence the deprecation of ``skip_none=False`` (Lightning's own, for jsonargparse < 4.49)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _unsafe_checkpoint(path: str | os.PathLike[str], error: Exception) -> ValueError:
    """The error for a checkpoint that ``torch.load(weights_only=True)`` refused."""
    # torch's message is advice around one line saying what the file would have run.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    what = next((line for line in lines if "global" in line.lower()), lines[-1] if lines else "")
    return ValueError(
        f"{path}: refusing to load this checkpoint: it holds Python objects other than tensors "
        f"and plain values, and loading them could run code ({what}). Checkpoints written by "
        "lit_matching never do; this one was altered or written by other code"
    )


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


class RunConfigSaver(SaveConfigCallback):
    """Saves ``config.yaml`` in :func:`run_dir` and logs the config to every ``WandbLogger``.

    Lightning's ``SaveConfigCallback`` writes to ``trainer.log_dir``, which for a W&B logger is
    the ``save_dir`` every run shares (so a second run would stop rather than overwrite it).
    W&B gets the whole config (``trainer``, ``model``, ``data``, ``seed_everything``) next to
    the model's hyper-parameters.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Write ``<run dir>/config.yaml`` (global zero), once; never over an earlier run's."""
        if self.already_saved:
            return
        path = Path(run_dir(trainer)) / self.config_filename  # a collective under DDP
        exists = trainer.strategy.broadcast(trainer.is_global_zero and path.is_file())
        if exists and not self.overwrite:
            raise RuntimeError(f"{path} exists: not overwriting the config of an earlier run")
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _keeping_none():
                self.parser.save(
                    self.config,
                    str(path),
                    skip_none=False,
                    overwrite=True,
                    multifile=self.multifile,
                )
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Log the config to every W&B logger of the trainer (global zero only)."""
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if loggers:
            with _keeping_none():
                config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            for logger in loggers:
                logger.experiment.config.update(config, allow_val_change=True)


def _check_evaluable(datamodule: MatchingDataModule) -> None:
    """Raise, naming the cause, when neither validation nor test has a user to evaluate."""
    if len(datamodule.eval_set("val").users) or len(datamodule.eval_set("test").users):
        return
    raise ValueError(
        "nothing to evaluate: the data has 0 validation and 0 test interactions after "
        f"splitting ({datamodule.num_users} users, {len(datamodule.splits.train)} training "
        f"interactions, split={datamodule.split!r}; leave_last_out holds out interactions only "
        "of users with at least 3). Hold some out (users with more interactions, another split, "
        "given test files), or train without evaluation: remove RetrievalEvaluator (and a "
        "ModelCheckpoint monitoring its metrics) from trainer.callbacks"
    )


class MatchingCLI(LightningCLI):
    """LightningCLI that fills the towers' vocabulary sizes from the data and reports metrics."""

    def instantiate_classes(self) -> None:
        """Fill the towers' unset vocabulary sizes from the data, then instantiate.

        Any tower argument named ``num_embeddings``, ``num_users``, ``num_items`` or ``table``
        (a :class:`~lit_matching.towers.feature.FeatureTower`'s side features) left unset in the
        config (``None``) gets :meth:`MatchingDataModule.tower_arguments`, for the user and
        item towers and, except ``num_embeddings`` and ``table``, towers nested in them (e.g.
        a history tower), whatever their classes. A static link could only feed one argument
        name.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        datamodule = _instantiate_datamodule(config.data)
        if datamodule.progress is None and config.trainer.get("enable_progress_bar") is False:
            datamodule.progress = False  # no data-preparation bar either
        # LightningCLI records the model's hyperparameters from a dump of the config; take it
        # now, as given: a filled-in feature table does not serialise.
        dump_config = getattr(self, "_dump_config", None)
        if dump_config is not None:
            dump_config()
        filled = [
            entry
            for side in ("user", "item")
            for entry in _fill_unset(
                config.model.init_args.get(f"{side}_tower"), datamodule.tower_arguments(side)
            )
        ]
        super().instantiate_classes()
        # The saved config.yaml stays as given (a feature table does not serialise); the
        # values are filled from the data again whenever it is used.
        for init_args, name in filled:
            init_args[name] = None
        # The filled-in sizes came from this instance; use it rather than preparing twice.
        self.datamodule = datamodule

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's reading of ``--ckpt_path`` (``weights_only``), its refusal named."""
        try:
            super()._parse_ckpt_path()
        except pickle.UnpicklingError as error:
            path = self.config[self.config.subcommand].get("ckpt_path")
            raise _unsafe_checkpoint(path, error) from error

    def before_fit(self) -> None:
        """Refuse to train what could not be evaluated; start the wall clock of the run."""
        datamodule = self.datamodule
        callbacks = self.trainer.callbacks  # type: ignore[attr-defined]
        evaluated = any(isinstance(c, RetrievalEvaluator) for c in callbacks)
        if evaluated and isinstance(datamodule, MatchingDataModule):
            _check_evaluable(datamodule)
        self._started = time.perf_counter()

    def after_fit(self) -> None:
        """Evaluate the best checkpoint on validation and test (those that hold any), print, export.

        A part without interactions (e.g. trained on train + valid, or a time cut after the
        last interaction) is not evaluated, and the baseline is that of the last part that is.
        """
        trainer, model, datamodule = self.trainer, self.model, self.datamodule
        if trainer.interrupted:
            return
        callbacks = trainer.callbacks  # type: ignore[attr-defined]
        evaluator = next((c for c in callbacks if isinstance(c, RetrievalEvaluator)), None)
        if evaluator is None:
            return
        checkpoint = trainer.checkpoint_callback
        has_best = checkpoint is not None and bool(getattr(checkpoint, "best_model_path", None))
        ckpt_path = "best" if has_best else None
        assert isinstance(datamodule, MatchingDataModule)
        stages = [s for s in ("val", "test") if len(datamodule.eval_set(s).users)]
        run = {"val": trainer.validate, "test": trainer.test}
        for stage in stages:  # before_fit made sure there is at least one
            run[stage](model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        log_dir = run_dir(trainer)  # a collective under DDP: every rank must ask
        if not trainer.is_global_zero:
            return
        baseline_stage = stages[-1]
        baseline = most_popular_metrics(
            datamodule.item_counts, datamodule.eval_set(baseline_stage), evaluator.ks
        )
        table = format_metrics_table(
            {
                name: {key: value for key, value in metrics.items() if "@" in key}
                for name, metrics in (
                    *[(stage, evaluator.results[stage]) for stage in stages],
                    (f"{baseline_stage}:popular", baseline),
                )
            }
        )
        missing = "" if "test" in stages else " (no test interactions: test not evaluated)"
        exported = export_retriever(model, datamodule, Path(log_dir) / "retriever", overwrite=True)
        elapsed = time.perf_counter() - getattr(self, "_started", time.perf_counter())
        print(
            f"\n{type(model).__name__} ({model.similarity.name}) on {datamodule.num_users} users x "
            f"{datamodule.num_items} items; full-catalogue ranking, seen items excluded; "
            f"checkpoint: {ckpt_path or 'last epoch'}\n"
            f"{table}\n"
            f"{baseline_stage}:popular = most-popular unseen items for everyone{missing}. "
            f"Wall time: {elapsed:.1f} s\n"
            f"Retriever exported to {exported}; try: lit-matching recommend {exported} "
            f"--user {datamodule.user_vocab.to_list()[0]}\n"
        )


def run_cli(args: Sequence[str] | None = None) -> MatchingCLI:
    """Parse ``args`` (default ``sys.argv[1:]``), run the subcommand and return the CLI."""
    if args is None:
        # Resolve in place: DDP launches its worker processes with this very sys.argv.
        sys.argv[1:] = _resolve_configs(sys.argv[1:])
        argv = None
    else:
        argv = _resolve_configs(list(args))
    return MatchingCLI(
        MatchingModule,
        MatchingDataModule,
        subclass_mode_model=True,
        args=argv,
        save_config_callback=RunConfigSaver,
        parser_kwargs={"description": _DESCRIPTION},
        auto_configure_optimizers=False,
    )


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
    """``lit-matching recommend DIR --user ID ...``: print recommendations as a table."""
    parser = argparse.ArgumentParser(
        prog="lit-matching recommend",
        description="Recommendations (or similar items) from an exported retriever directory.",
    )
    parser.add_argument("directory", help="a directory written by fit or export")
    parser.add_argument("--user", action="append", default=[], help="raw user id (repeatable)")
    parser.add_argument("--item", action="append", default=[], help="raw item id: similar items")
    parser.add_argument("--k", type=int, default=None, help="results per id (default: 10)")
    parser.add_argument("--include-seen", action="store_true", help="do not drop seen items")
    options = parser.parse_args(args)
    if not options.user and not options.item:
        parser.error("give at least one --user or --item")
    retriever = Retriever.load(options.directory)
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


_EXTRA_COMMANDS = {
    "configs": configs_command,
    "recommend": recommend_command,
    "export": export_command,
}


#: Errors in what the user gave (files, values, ids, checkpoints): a message, no traceback.
#: ``FloatingPointError`` is the non-finite loss guard; anything else is a bug and keeps its
#: traceback.
_USER_ERRORS = (
    ValueError,
    KeyError,
    OSError,
    FloatingPointError,
    pickle.UnpicklingError,
    MisconfigurationException,
)
_TRACEBACK_VARIABLE = "LIT_MATCHING_TRACEBACK"


def _message(error: BaseException) -> str:
    """An exception's message (``KeyError`` quotes its argument: not here)."""
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    return str(error) or type(error).__name__


def _run_command(argv: Sequence[str]) -> None:
    if argv and argv[0] in _EXTRA_COMMANDS:
        _EXTRA_COMMANDS[argv[0]](argv[1:])
        return
    # Deprecations inside Lightning's own calls (jsonargparse, torch pytree) are not the user's.
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    run_cli()


def main() -> None:
    """Entry point of the ``lit-matching`` console script.

    A user error (a bad file, value or id, an unsafe checkpoint; see ``_USER_ERRORS``) prints
    ``lit-matching: error: MESSAGE`` and exits with status 1; ``LIT_MATCHING_TRACEBACK=1``
    shows the full traceback instead. Other exceptions (bugs) keep their traceback. DDP
    worker processes run this same function, so each reports its own error the same way.
    """
    try:
        _run_command(sys.argv[1:])
    except _USER_ERRORS as error:
        if os.environ.get(_TRACEBACK_VARIABLE, "") not in ("", "0"):
            raise
        rank = os.environ.get("LOCAL_RANK", "0")
        where = f" (rank {rank})" if rank != "0" else ""
        print(
            f"lit-matching: error{where}: {_message(error)}\n"
            f"({_TRACEBACK_VARIABLE}=1 shows the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
