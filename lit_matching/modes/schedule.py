"""Learning-rate schedules of the modes: ``lr_schedule`` and ``warmup_steps`` from the config.

The schedule is a factor on the module's ``learning_rate`` at each optimiser step ``s``
(0-based; with gradient accumulation, an optimiser step is several batches):

* a linear warm-up over the first ``warmup_steps`` steps, ``(s + 1) / (warmup_steps + 1)``
  (never 0: the first step already learns);
* then, over the remaining ``T - warmup_steps`` of the run's ``T`` steps, with
  ``p = (s - warmup_steps) / (T - warmup_steps)``: ``"constant"`` 1, ``"cosine"``
  ``(1 + cos(pi p)) / 2``, ``"linear"`` ``1 - p``.

``T`` is the trainer's ``estimated_stepping_batches`` (from ``max_steps``, or ``max_epochs``
and the batches per epoch), so a decaying schedule needs a finite run. :class:`MatchingModule`
steps it every optimiser step; the sparse embedding tables' ``SparseAdam`` takes the same
learning rate (see :class:`~lit_matching.modes.base.MatchingModule`).
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch

__all__ = ["ScheduleName", "check_schedule", "schedule_factor", "scheduler_config"]

ScheduleName = Literal["constant", "cosine", "linear"]


def check_schedule(schedule: str, warmup_steps: int) -> None:
    """Raise ``ValueError`` for an unknown schedule or a negative number of warm-up steps."""
    if schedule not in get_args(ScheduleName):
        raise ValueError(
            f"unknown lr_schedule {schedule!r}; expected one of {list(get_args(ScheduleName))}"
        )
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps has to be non-negative, got {warmup_steps}")


def schedule_factor(step: int, schedule: str, warmup_steps: int, total_steps: float) -> float:
    """The factor on the learning rate at optimiser step ``step`` (0-based).

    Example:
        >>> [round(schedule_factor(s, "cosine", 1, 5), 3) for s in range(5)]
        [0.5, 1.0, 0.854, 0.5, 0.146]
        >>> schedule_factor(3, "linear", 0, 4)
        0.25
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1.0, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def scheduler_config(
    optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: float
) -> dict[str, Any] | None:
    """Lightning's ``lr_scheduler`` entry for ``optimizer``, or ``None`` when nothing varies.

    Raises:
        ValueError: A decaying schedule for a run of unknown length (``total_steps`` inf).
    """
    if schedule == "constant" and warmup_steps == 0:
        return None
    if schedule != "constant" and math.isinf(total_steps):
        raise ValueError(
            f"lr_schedule={schedule!r} decays over the run: set trainer.max_steps or "
            "trainer.max_epochs (the run has no known length)"
        )

    def factor(step: int) -> float:
        return schedule_factor(step, schedule, warmup_steps, total_steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"scheduler": scheduler, "interval": "step", "frequency": 1}
