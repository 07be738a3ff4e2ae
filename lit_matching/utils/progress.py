"""Progress bars for the slow work outside the training loop: data preparation and evaluation.

The functions that do the work (:func:`~lit_matching.retrieval.encoding.encode_in_batches`,
:func:`~lit_matching.retrieval.search.search_top_k`) take a plain callback,
``progress(n)`` for "``n`` more done", and print nothing themselves. The bars are made here
by :class:`ProgressBars`: tqdm bars on stderr (stdout stays for results), or, inside a
``Trainer`` that shows Lightning's Rich progress bar, extra tasks of that display; either way
they vanish when their work is done.

Whether bars are shown is decided by :func:`progress_enabled`: on rank 0 only; ``True`` or
``False`` as asked; by default (``None``) when stderr is a terminal and, inside a
``Trainer``, when the trainer shows a progress bar (``enable_progress_bar=False`` turns them
off too).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

__all__ = [
    "Progress",
    "ProgressBars",
    "progress_bar",
    "progress_bars",
    "progress_enabled",
    "progress_steps",
]

#: ``progress(n)``: ``n`` more units of work (rows, queries) are done.
Progress = Callable[[int], None]


def progress_enabled(progress: bool | None, trainer: Any = None) -> bool:
    """Whether to show progress bars in this process.

    Args:
        progress: ``True`` or ``False`` decides (except on ranks other than 0: never);
            ``None`` shows them when stderr is a terminal and, with a ``trainer``, when that
            trainer shows a progress bar.
        trainer: The ``Trainer`` the work runs in, if any (its rank and progress bar count).

    Example:
        >>> progress_enabled(False), progress_enabled(True)
        (False, True)
        >>> import pytorch_lightning as pl
        >>> progress_enabled(True, pl.Trainer(enable_progress_bar=False, logger=False))
        True
        >>> progress_enabled(None, pl.Trainer(enable_progress_bar=False, logger=False))
        False
    """
    if trainer is not None:
        rank = getattr(trainer, "global_rank", 0)
    else:
        rank = getattr(rank_zero_only, "rank", 0)
    if rank != 0 or progress is False:
        return False
    if progress:
        return True
    if trainer is not None and getattr(trainer, "progress_bar_callback", None) is None:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _logs_above_bars() -> Any:
    """Log lines (e.g. what cleaning dropped) printed above the bar instead of through it."""
    loggers = [logging.getLogger(name) for name in (None, "pytorch_lightning", "lightning.pytorch")]
    # Only loggers that print to the console: tqdm would give the others a handler.
    console = [
        logger
        for logger in loggers
        if any(
            isinstance(handler, logging.StreamHandler)
            and getattr(handler, "stream", None) in (sys.stdout, sys.stderr)
            for handler in logger.handlers
        )
    ]
    return logging_redirect_tqdm(loggers=console)


class ProgressBars:
    """Makes progress bars: ``with bars(total, "val: searching") as progress: progress(n)``.

    Bars are tqdm bars on stderr that vanish when done, or, when ``trainer`` shows Lightning's
    Rich progress display, tasks added to (and then removed from) that display, which owns
    the terminal while it runs.

    Args:
        trainer: The ``Trainer`` the work runs in, if any.
        file: Where tqdm bars go (default: stderr).

    Example:
        >>> import io
        >>> bars = ProgressBars(file=io.StringIO())
        >>> with bars(10, "counting", unit="row") as progress:
        ...     progress(4)
        ...     progress(6)
    """

    def __init__(self, trainer: Any = None, file: Any = None):
        self.trainer = trainer
        self.file = file

    def _rich(self) -> Any:
        """The trainer's live Rich ``Progress``, if it has one."""
        callback = getattr(self.trainer, "progress_bar_callback", None)
        if not isinstance(callback, RichProgressBar) or not callback.is_enabled:
            return None
        if callback.progress is None or getattr(callback, "_progress_stopped", False):
            return None
        return callback.progress

    @contextmanager
    def __call__(self, total: int, description: str, unit: str = "it") -> Iterator[Progress]:
        """A bar of ``total`` units, as a ``progress(n)`` callback."""
        rich = self._rich()
        if rich is not None:
            task = rich.add_task(description, total=total)

            def advance(n: int) -> None:
                rich.update(task, advance=n)
                rich.refresh()

            try:
                yield advance
            finally:
                rich.remove_task(task)
                rich.refresh()
            return
        with (
            _logs_above_bars(),
            tqdm(
                total=total,
                desc=description,
                unit=unit,
                leave=False,
                dynamic_ncols=True,
                file=self.file,
            ) as bar,
        ):
            yield bar.update


def progress_bars(progress: bool | None, trainer: Any = None) -> ProgressBars | None:
    """A :class:`ProgressBars` when :func:`progress_enabled` says so, else ``None``.

    Example:
        >>> progress_bars(False) is None, type(progress_bars(True)).__name__
        (True, 'ProgressBars')
    """
    return ProgressBars(trainer) if progress_enabled(progress, trainer) else None


def progress_bar(
    bars: ProgressBars | None, total: int, description: str, unit: str = "it"
) -> AbstractContextManager[Progress | None]:
    """``bars(total, description, unit)``, or a context of ``None`` without ``bars``.

    Example:
        >>> with progress_bar(None, 3, "counting") as progress:
        ...     print(progress)
        None
    """
    return bars(total, description, unit) if bars is not None else nullcontext(None)


@contextmanager
def progress_steps(
    steps: Sequence[str], description: str, enabled: bool
) -> Iterator[Callable[[str], None]]:
    """A bar over named steps: ``step(name)`` starts step ``name`` (ending the one before).

    Does nothing when not ``enabled``.

    Example:
        >>> with progress_steps(["reading", "cleaning"], "data", enabled=False) as step:
        ...     step("reading")
        ...     step("cleaning")
    """
    if not enabled:
        yield lambda name: None
        return
    with (
        _logs_above_bars(),
        tqdm(
            total=len(steps), desc=description, unit="step", leave=False, dynamic_ncols=True
        ) as bar,
    ):
        started = False

        def step(name: str) -> None:
            nonlocal started
            if started:
                bar.update(1)
            started = True
            bar.set_description_str(f"{description}: {name}")

        yield step
        bar.update(bar.total - bar.n)
