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
  read as the type of the exported ids (``--user 1.0`` for float ids);
* ``lit-matching recommend DIR --all --output recs.parquet [--k 10] [--include-seen]
  [--chunk-size N]`` writes the top K of every user to a Parquet file (``user_id``, ``rank``,
  ``item_id``, ``score``) in chunks of users, with a progress bar; ``--users-file FILE``
  instead of ``--all`` takes the users of ``FILE``, one raw id per line.
* ``lit-matching serve DIR [--host 127.0.0.1] [--port 8000]`` serves an exported directory
  over HTTP (:mod:`lit_matching.serving.http`; :mod:`~lit_matching.cli.serve`).
* ``lit-matching prepare LOG --output DIR [--history-length L] ...`` reads a log larger than
  memory chunk by chunk and writes training shards (:mod:`~lit_matching.cli.prepare`);
  ``fit --data.interactions DIR`` streams them.
* ``lit-matching tune --config NAME --space SPACE --trials N [--study-dir DIR]`` searches
  hyper-parameters with Optuna on the validation part, its study kept in ``DIR/study.db``
  (resumable), and writes ``DIR/best.yaml`` for ``fit --config`` (:mod:`~lit_matching.cli.tune`;
  needs the ``tune`` extra).

A fit with a ``RetrievalEvaluator`` whose data holds no validation or test interaction stops
before training. A user error (a bad file, value or id, an unsafe checkpoint) prints
``lit-matching: error: MESSAGE`` to stderr and exits with status 1; set the environment
variable ``LIT_MATCHING_TRACEBACK=1`` for the full traceback. Unexpected exceptions (bugs) keep
their traceback.

The package: :mod:`~lit_matching.cli.configs` (the packaged configs and ``--config NAME``),
:mod:`~lit_matching.cli.lightning` (:class:`MatchingCLI`, :class:`RunConfigSaver`,
:func:`run_cli`), :mod:`~lit_matching.cli.commands` (``export``, ``recommend``, ``configs``);
this module holds :func:`main` and its error handling. No other part of ``lit_matching``
imports it.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lit_matching.utils.errors import error_message

if TYPE_CHECKING:  # imported on first use (below): `serve` loads neither torch nor Lightning
    from lit_matching.cli.commands import configs_command, export_command, recommend_command
    from lit_matching.cli.configs import config_description, packaged_config, packaged_configs
    from lit_matching.cli.lightning import (
        MatchingCLI,
        RunConfigSaver,
        format_metrics_table,
        run_cli,
        run_dir,
    )
    from lit_matching.cli.prepare import prepare_command
    from lit_matching.cli.serve import serve_command
    from lit_matching.cli.tune import tune_command

__all__ = [
    "MatchingCLI",
    "RunConfigSaver",
    "config_description",
    "configs_command",
    "export_command",
    "format_metrics_table",
    "main",
    "packaged_config",
    "packaged_configs",
    "prepare_command",
    "recommend_command",
    "run_cli",
    "run_dir",
    "serve_command",
    "tune_command",
]

#: Where each public name lives (imported on first use, PEP 562).
_PUBLIC = {
    "MatchingCLI": "lit_matching.cli.lightning",
    "RunConfigSaver": "lit_matching.cli.lightning",
    "format_metrics_table": "lit_matching.cli.lightning",
    "run_cli": "lit_matching.cli.lightning",
    "run_dir": "lit_matching.cli.lightning",
    "config_description": "lit_matching.cli.configs",
    "packaged_config": "lit_matching.cli.configs",
    "packaged_configs": "lit_matching.cli.configs",
    "configs_command": "lit_matching.cli.commands",
    "export_command": "lit_matching.cli.commands",
    "recommend_command": "lit_matching.cli.commands",
    "serve_command": "lit_matching.cli.serve",
    "prepare_command": "lit_matching.cli.prepare",
    "tune_command": "lit_matching.cli.tune",
}
#: The commands besides LightningCLI's subcommands, by name.
_EXTRA_COMMANDS = {
    "configs": "configs_command",
    "recommend": "recommend_command",
    "export": "export_command",
    "serve": "serve_command",
    "prepare": "prepare_command",
    "tune": "tune_command",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lit_matching.cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def _public(name: str) -> Any:
    """A public name of this module: as imported already (or set), else imported now."""
    return globals()[name] if name in globals() else __getattr__(name)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors in what the user gave (files, values, ids, checkpoints): a message, no traceback.

    ``FloatingPointError`` is the non-finite loss guard; Lightning's configuration errors count
    when Lightning was loaded (every command that trains loads it; ``serve`` does not).
    Anything else is a bug and keeps its traceback.
    """
    errors: list[type[BaseException]] = [
        ValueError,
        KeyError,
        OSError,
        FloatingPointError,
        pickle.UnpicklingError,
    ]
    if "lightning_fabric" in sys.modules:
        from lightning_fabric.utilities.exceptions import MisconfigurationException

        errors.append(MisconfigurationException)
    return tuple(errors)


_TRACEBACK_VARIABLE = "LIT_MATCHING_TRACEBACK"


def _run_command(argv: Sequence[str]) -> None:
    if argv and argv[0] in _EXTRA_COMMANDS:
        command: Callable[[Sequence[str]], None] = _public(_EXTRA_COMMANDS[argv[0]])
        command(argv[1:])
        return
    run_cli = _public("run_cli")
    # Deprecations inside Lightning's own calls (jsonargparse, torch pytree) are not the user's.
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    run_cli()


def main() -> None:
    """Entry point of the ``lit-matching`` console script.

    A user error (a bad file, value or id, an unsafe checkpoint; see ``_user_errors``) prints
    ``lit-matching: error: MESSAGE`` and exits with status 1; ``LIT_MATCHING_TRACEBACK=1``
    shows the full traceback instead. Other exceptions (bugs) keep their traceback. DDP
    worker processes run this same function, so each reports its own error the same way.
    """
    try:
        _run_command(sys.argv[1:])
    except Exception as error:
        if not isinstance(error, _user_errors()):
            raise
        if os.environ.get(_TRACEBACK_VARIABLE, "") not in ("", "0"):
            raise
        rank = os.environ.get("LOCAL_RANK", "0")
        where = f" (rank {rank})" if rank != "0" else ""
        print(
            f"lit-matching: error{where}: {error_message(error)}\n"
            f"({_TRACEBACK_VARIABLE}=1 shows the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """End a DDP run's process group before the interpreter exits.

    Left to interpreter shutdown, gloo's threads are sometimes still alive when their C++
    objects are destroyed, and the process aborts (``terminate called without an active
    exception``, status -6) after a successful run.
    """
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
