"""The LightningCLI of ``lit-matching``: sizes from the data, run directory, config, metrics.

:class:`MatchingCLI` fills the towers' vocabulary sizes from the data, refuses a fit that
could not be evaluated, and after a fit evaluates, prints the metrics table
(:func:`format_metrics_table`) and exports the retriever; :class:`RunConfigSaver` saves the
config in :func:`run_dir`.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import ArgumentParser, Namespace
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from lit_matching.cli.configs import _resolve_configs
from lit_matching.data.datamodule import MatchingDataModule
from lit_matching.modes.base import MatchingModule
from lit_matching.retrieval.evaluation import RetrievalEvaluator, most_popular_metrics
from lit_matching.serving.from_training import export_retriever

__all__ = ["MatchingCLI", "RunConfigSaver", "format_metrics_table", "run_cli", "run_dir"]

_DESCRIPTION = (
    "Train and evaluate two-tower retrieval models. --config NAME picks a packaged config "
    "(list them with `lit-matching configs`) or a YAML file. Other commands: "
    "`lit-matching configs [NAME]`, `lit-matching export --config CFG --ckpt_path CKPT "
    "--output DIR`, `lit-matching recommend DIR --user ID [--k 10]`."
)


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
