"""``lit-matching tune``: search hyper-parameters with Optuna on the validation part.

``lit-matching tune --config NAME --space SPACE --trials N [--study-dir DIR] [--metric M]
[--direction maximize] [--seed S] [--pruner median|none] [--pruner-warmup E] [--key value ...]``

Each trial fits ``--config`` with the trial's values of the space's keys
(:mod:`~lit_matching.cli.tune_space`; ``--space NAME`` picks a packaged space, e.g.
``listwise``) and any other ``--key value`` given (the same for every trial, e.g.
``--trainer.max_epochs 5``). A trial trains and validates only: it never evaluates the test
part (a ``RetrievalEvaluator``'s ``test_every_n_epochs`` is switched off), logs nothing and
saves no checkpoint. Its value is the best ``--metric`` (default ``val/recall@20``) over its
epochs; it reports the metric to Optuna after every validation, and a trial the pruner
(``MedianPruner``) judges behind the others stops there, from its validation of epoch
``--pruner-warmup`` on (default 2: the first epochs mostly say how large the learning rate is,
above all under a warm-up or a decaying schedule, not how good the trial will end).

A trial that its own values break (a ``ValueError``, ``RuntimeError`` or ``ArithmeticError``
while building or fitting its model: a tower given a size the other does not take, a value a
class refuses, a diverging loss, memory) is recorded as failed, its error on its progress line
(``trial 3 FAIL: RuntimeError: ...``), and the search goes on. A problem of the setup stops at
once: the config, its data and its validation part are built and checked before trial 0, and a
``--metric`` that validation does not log stops the first trial. When the first trials all fail
(three in a row, or every trial asked for if fewer, and none of the study ever ran), the command
stops with the last error: the config or the space, not one draw, is at fault.

In ``DIR`` (default ``lit_matching_tune/<config name>``):

* ``study.db``, the Optuna study (SQLite): the same command again adds ``N`` trials to it, the
  earlier ones kept, so a stopped tune resumes;
* ``best.yaml``, the complete config of the best trial, which ``lit-matching fit --config
  DIR/best.yaml`` takes;
* ``trials.png``, the value of each trial and the best so far
  (:mod:`~lit_matching.cli.tune_report` writes it and the progress lines).

The test part is scored by that separate command, once, when tuning is over: ``fit`` trains the
best config and evaluates its best checkpoint on validation and test (and may train on more
data first, e.g. ``--data.split_files`` with train and valid together).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from jsonargparse import ArgumentError
from pytorch_lightning.callbacks import ModelCheckpoint

from lit_matching.cli import _TRACEBACK_VARIABLE
from lit_matching.cli.configs import DEFAULT_CONFIG, _resolve_configs
from lit_matching.cli.lightning import MatchingCLI, _keeping_none
from lit_matching.cli.tune_report import plot_trials, progress_line, trial_curve
from lit_matching.cli.tune_space import (
    SearchSpace,
    check_values,
    import_optuna,
    load_space,
    override,
    overrides,
    short_key,
    suggest,
)
from lit_matching.data.datamodule import MatchingDataModule
from lit_matching.modes.base import MatchingModule
from lit_matching.retrieval.evaluation import RetrievalEvaluator

if TYPE_CHECKING:
    import optuna

__all__ = [
    "SetupError",
    "TrialPruning",
    "check_setup",
    "check_space",
    "make_pruner",
    "trial_curve",
    "tune_command",
]

#: Before the user's arguments in every trial (which may override them): no logs, no summary.
_TRIAL_ARGS = ["--trainer.logger=false", "--trainer.enable_model_summary=false"]
_STUDY_NAME = "lit-matching"
#: What a trial's own values can raise while its model is built or fitted (a value a class
#: refuses, tensors of sizes that do not meet, a diverging loss, memory): that trial fails.
#: Anything else (a missing file, a bad key, a bug) stops the study.
_TRIAL_ERRORS = (ValueError, RuntimeError, ArithmeticError, ArgumentError)
#: Failed trials in a row, with none of the study run, that stop it: the setup is at fault.
_FAILURES_TO_STOP = 3


class SetupError(ValueError):
    """A problem of the tuning's setup, not of one trial's values: it stops the study at once."""


class _TrialFailed(Exception):
    """A trial's own error (:data:`_TRIAL_ERRORS`), recorded as that trial's failure."""


class _ParseOnlyCLI(MatchingCLI):
    """Parses a config and its overrides, instantiates nothing."""

    def instantiate_classes(self) -> None:
        """Nothing: only the parsed config is wanted."""


def _cli(args: Sequence[str], parse_only: bool = False) -> MatchingCLI:
    """A :class:`MatchingCLI` over ``args`` (no subcommand) that runs nothing; errors raise."""
    with _quiet_lightning(), warnings.catch_warnings():
        # sys.argv holds the tune command's own arguments, not these.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return (_ParseOnlyCLI if parse_only else MatchingCLI)(
            MatchingModule,
            MatchingDataModule,
            subclass_mode_model=True,
            args=_resolve_configs(list(args)),
            save_config_callback=None,
            parser_kwargs={"exit_on_error": False},
            auto_configure_optimizers=False,
            run=False,
        )


def check_space(args: Sequence[str], space: SearchSpace, path: str) -> None:
    """Raise, naming the key, if a key of ``space`` is not a setting of the config of ``args``.

    Each key, and each key linked to it by ``also``, is set to each of the distribution's
    :func:`~lit_matching.cli.tune_space.check_values`; the config's parser judges.
    """
    try:
        _cli(list(args), parse_only=True)
    except ArgumentError as error:
        raise ValueError(f"the config or its arguments do not parse: {error}") from error
    for key, distribution in space.distributions.items():
        for setting in (key, *space.links.get(key, ())):
            for value in check_values(distribution):
                try:
                    _cli([*args, override(setting, value)], parse_only=True)
                except ArgumentError as error:
                    linked = "" if setting == key else f" (in the 'also' of {key!r})"
                    raise ValueError(
                        f"{path}: {setting!r}{linked} is not a setting of the config that "
                        f"takes {value!r}: {error}"
                    ) from error


@dataclass
class TrialPruning(pl.Callback):
    """Reports ``monitor`` to an Optuna trial after each validation; stops a pruned trial.

    Optuna's own Lightning callback (``optuna-integration``) is written for the ``lightning``
    package, whose callbacks ``pytorch_lightning``'s trainer does not take. This one keeps the
    best value of the trial; :func:`tune_command` raises ``TrialPruned`` after ``fit`` when
    the trial was stopped (``pruned_at``, the epoch).
    """

    trial: optuna.trial.Trial
    monitor: str
    maximize: bool = True
    best: float | None = None
    pruned_at: int | None = None
    values: list[float] = field(default_factory=list)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the epoch's value; ask the pruner; stop the trainer if it says so."""
        if trainer.sanity_checking:
            return
        logged = trainer.callback_metrics.get(self.monitor)
        if logged is None:
            names = sorted(k for k in trainer.callback_metrics if k.startswith("val"))
            raise SetupError(f"--metric {self.monitor!r} was not logged; validation logs {names}")
        value = float(logged)
        epoch = trainer.current_epoch
        self.values.append(value)
        if math.isfinite(value) and (
            self.best is None or (value > self.best if self.maximize else value < self.best)
        ):
            self.best = value
        self.trial.report(value, epoch)
        print(f"  trial {self.trial.number} epoch {epoch}: {self.monitor} {value:.4f}", flush=True)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's per-fit notices (seed, devices, stop reason) off: the trial lines say enough."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _check_validation_part(datamodule: MatchingDataModule) -> None:
    if not len(datamodule.eval_set("val").users):
        raise SetupError(
            "tuning needs a validation part: the data has 0 validation interactions after "
            f"splitting (split={datamodule.split!r}, split_files={datamodule.split_files!r}); "
            "tune with a split that holds some out, e.g. --data.split_files "
            "'[train.txt, valid.txt, test.txt]' for the LightGCN files"
        )


def check_setup(args: Sequence[str]) -> None:
    """Build the config of ``args`` (``--config PATH`` first) and its data; check validation.

    Run before trial 0, so that what every trial would meet (a bad data path, a config that
    does not build, no validation part) stops the command at once.
    """
    cli = _cli([*args[:2], *_TRIAL_ARGS, *args[2:]])
    assert isinstance(cli.datamodule, MatchingDataModule)
    _check_validation_part(cli.datamodule)


def _run_trial(
    trial: optuna.trial.Trial, args: list[str], space: SearchSpace, options: Any
) -> float:
    """Fit the config with the trial's values on train, validate; the best value of the metric."""
    optuna = import_optuna()
    params = suggest(trial, space.distributions)
    trial.set_user_attr("args", args)
    if space.links:  # stored with the trial: its best config is written from what it ran
        trial.set_user_attr("links", {key: list(also) for key, also in space.links.items()})
    trial_args = [*args[:2], *_TRIAL_ARGS, *args[2:]]  # args: --config PATH, then the user's
    cli = _cli([*trial_args, *overrides(params, space.links)])
    trainer, datamodule = cli.trainer, cli.datamodule
    assert isinstance(datamodule, MatchingDataModule)
    _check_validation_part(datamodule)
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, RetrievalEvaluator):
            callback.test_every_n_epochs = 0  # trials never look at the test part
    pruning = TrialPruning(trial, options.metric, options.direction == "maximize")
    kept = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]  # type: ignore[attr-defined]
    trainer.callbacks = [*kept, pruning]  # type: ignore[attr-defined]
    with _quiet_lightning():
        trainer.fit(cli.model, datamodule=datamodule)
    if pruning.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
    if pruning.best is None:
        raise ValueError(
            f"trial {trial.number}: {options.metric} never had a finite value "
            f"(validated {len(pruning.values)} times: {pruning.values})"
        )
    return pruning.best


def _error_text(error: BaseException, limit: int = 300) -> str:
    """``Type: message`` of the error's first cause, on one line, at most ``limit`` long.

    jsonargparse reports a class that refuses a value as a ``ValueError`` over every type it
    tried; the class's own error is its cause.
    """
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _objective(
    trial: optuna.trial.Trial, args: list[str], space: SearchSpace, options: Any
) -> float:
    """:func:`_run_trial`; a trial's own error is recorded on it and fails that trial only."""
    try:
        return _run_trial(trial, args, space, options)
    except SetupError:
        raise
    except _TRIAL_ERRORS as error:
        trial.set_user_attr("error", _error_text(error))
        raise _TrialFailed(trial.user_attrs["error"]) from error


@dataclass
class _FailureGuard:
    """Stops the study when its first trials fail in a row: the setup is at fault, not a draw.

    An Optuna callback: after ``limit`` failures in a row in this run, while no trial of the
    study has completed or been pruned, it raises with the last error.
    """

    limit: int
    failures: int = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Count the trial's failure, or start again after a trial that ran."""
        self.failures = self.failures + 1 if trial.state.name == "FAIL" else 0
        ran = any(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
        if self.failures >= self.limit and not ran:
            raise ValueError(
                f"{self.failures} trials in a row failed and no trial of the study has "
                "completed: the config or the search space is at fault, not one trial's "
                f"values; trial {trial.number}'s error: {trial.user_attrs.get('error', '-')}"
            )


def write_best_config(study: optuna.Study, path: Path, metric: str) -> bool:
    """Write the best trial's complete config to ``path``; ``False`` while no trial completed."""
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not completed:
        return False
    best = study.best_trial
    links = best.user_attrs.get("links", {})
    args = [*best.user_attrs["args"], *overrides(best.params, links)]
    cli = _cli(args, parse_only=True)
    with _keeping_none():
        text = cli.parser.dump(cli.config, skip_none=False)
    params = ", ".join(f"{short_key(k)}={v!r}" for k, v in best.params.items())
    header = (
        f"# Best of {len(completed)} completed trials (lit-matching tune, {study.study_name}): "
        f"trial {best.number}, {metric} {best.value:.4f} on validation.\n# {params}\n"
        f"# Score it on test once: lit-matching fit --config {path}\n"
    )
    path.write_text(header + text)
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-matching tune",
        allow_abbrev=False,
        description="Search hyper-parameters with Optuna: each trial fits the config with "
        "its values on train and validates; the study is kept in DIR/study.db (run again to "
        "resume), the best config written to DIR/best.yaml for `lit-matching fit --config`. "
        "Other --key value arguments apply to every trial (e.g. --trainer.max_epochs 5).",
    )
    parser.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="packaged name or file")
    parser.add_argument("--space", required=True, help="search-space YAML file or packaged name")
    parser.add_argument("--trials", type=int, required=True, help="trials to run (more on resume)")
    parser.add_argument("--study-dir", help="default: lit_matching_tune/<config name>")
    parser.add_argument("--metric", default="val/recall@20", help="validation metric to optimise")
    parser.add_argument("--direction", choices=["maximize", "minimize"], default="maximize")
    parser.add_argument("--pruner", choices=["median", "none"], default="median")
    parser.add_argument(
        "--pruner-warmup", type=int, default=2, help="epochs before the pruner may stop a trial"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the sampler (plus trials so far)")
    return parser


def _packaged_space(name: str) -> str:
    """A packaged search space's path if ``name`` is one and no such file exists, else ``name``."""
    from importlib.resources import files

    packaged = files("lit_matching") / "configs" / "spaces" / f"{name.removesuffix('.yaml')}.yaml"
    return str(packaged) if not Path(name).is_file() and packaged.is_file() else name


def _open_study(optuna: Any, directory: Path, options: Any, config: str) -> optuna.Study:
    """Create ``directory/study.db``'s study, or load it, refusing another metric or config."""
    directory.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=f"sqlite:///{directory / 'study.db'}",
        study_name=_STUDY_NAME,
        direction=options.direction,
        load_if_exists=True,
    )
    wanted = {"metric": options.metric, "direction": options.direction, "config": config}
    stored = {key: study.user_attrs.get(key, value) for key, value in wanted.items()}
    if stored != wanted:
        raise ValueError(
            f"{directory / 'study.db'} holds a study of {stored}, not {wanted}: "
            "resume it with those, or give another --study-dir"
        )
    for key, value in wanted.items():
        study.set_user_attr(key, value)
    # Seeded by the number of trials so far: a resumed study does not replay its first draws.
    study.sampler = optuna.samplers.TPESampler(seed=options.seed + len(study.trials))
    study.pruner = make_pruner(optuna, options.pruner, options.pruner_warmup)
    return study


def make_pruner(optuna: Any, kind: str, warmup_epochs: int) -> optuna.pruners.BasePruner:
    """Optuna's pruner for ``--pruner``: none, or the median rule from epoch ``warmup_epochs`` on.

    Example:
        >>> import optuna
        >>> [type(make_pruner(optuna, kind, 2)).__name__ for kind in ("median", "none")]
        ['MedianPruner', 'NopPruner']
    """
    if warmup_epochs < 0:
        raise ValueError(f"--pruner-warmup has to be 0 or more epochs, got {warmup_epochs}")
    if kind == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_warmup_steps=warmup_epochs)


def tune_command(args: Sequence[str]) -> None:
    """Parse ``args`` and tune (see the module)."""
    options, extra = _parser().parse_known_args(args)
    if options.trials < 1:
        raise ValueError(f"--trials has to be at least 1, got {options.trials}")
    optuna = import_optuna()
    # The progress lines replace Optuna's logs, a failed trial's error included; its warning
    # with the traceback is kept when tracebacks are asked for.
    verbose = os.environ.get(_TRACEBACK_VARIABLE, "") not in ("", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING if verbose else optuna.logging.ERROR)
    # Deprecations inside Lightning's own calls (jsonargparse, torch pytree) are not the user's.
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    space_path = _packaged_space(options.space)
    space = load_space(space_path)
    base = _resolve_configs(["--config", options.config, *extra])
    check_space(base, space, space_path)
    check_setup(base)
    name = Path(options.config).name.removesuffix(".yaml")
    directory = Path(options.study_dir or Path("lit_matching_tune") / name)
    study = _open_study(optuna, directory, options, Path(base[1]).name)
    print(
        f"tuning {name} by {options.metric} ({options.direction}) in {directory / 'study.db'}"
        f": {len(study.trials)} trials so far, {options.trials} to run",
        flush=True,
    )
    try:
        study.optimize(
            lambda trial: _objective(trial, base, space, options),
            n_trials=options.trials,
            catch=(_TrialFailed,),
            callbacks=[
                lambda s, t: progress_line(s, t, options.metric),
                _FailureGuard(min(_FAILURES_TO_STOP, options.trials)),
            ],
        )
    finally:
        if study.trials:
            plot_trials(study, directory / "trials.png", options.metric)
        best = directory / "best.yaml"
        if write_best_config(study, best, options.metric):
            print(
                f"best: trial {study.best_trial.number}, {options.metric} {study.best_value:.4f}"
                f"; config written to {best}, plot to {directory / 'trials.png'}\n"
                f"Score it on test once, when tuning is over: lit-matching fit --config {best}",
                flush=True,
            )
