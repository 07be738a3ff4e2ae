"""What ``lit-matching tune`` shows of its study: one line per trial, the plot of the trials."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit_matching.cli.tune_space import short_key

if TYPE_CHECKING:
    import optuna

__all__ = ["plot_trials", "progress_line", "trial_curve"]


def trial_curve(study: optuna.Study) -> list[tuple[int, float, str, float | None]]:
    """``(number, value, state, best so far)`` of each trial with a value, in order.

    A pruned trial's value is its last reported one (not a candidate for the best); failed
    and running trials are left out. The best so far counts completed trials only.

    Example:
        >>> import optuna
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> study = optuna.create_study(direction="maximize")
        >>> for value in (0.2, 0.1, 0.3):
        ...     study.add_trial(optuna.trial.create_trial(value=value))
        >>> trial_curve(study)
        [(0, 0.2, 'COMPLETE', 0.2), (1, 0.1, 'COMPLETE', 0.2), (2, 0.3, 'COMPLETE', 0.3)]
    """
    maximize = study.direction.name == "MAXIMIZE"
    curve, best = [], None
    for trial in study.trials:
        state = trial.state.name
        if state == "COMPLETE" and trial.value is not None:
            value = trial.value
            better = best is None or (value > best if maximize else value < best)
            best = value if better else best
        elif state == "PRUNED" and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        else:
            continue
        curve.append((trial.number, value, state, best))
    return curve


def plot_trials(study: optuna.Study, path: Path, metric: str) -> None:
    """Write a PNG of :func:`trial_curve`: each trial's value, and the best so far."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    curve = trial_curve(study)
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        points = [(n, v) for n, v, s, _ in curve if s == state]
        if points:
            axes.scatter(*zip(*points, strict=True), marker=marker, label=state.lower())
    steps = [(n, b) for n, _, _, b in curve if b is not None]
    if steps:
        axes.step(*zip(*steps, strict=True), where="post", color="black", label="best so far")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial")
    axes.set_ylabel(metric)
    axes.set_title(f"{len(study.trials)} trials, {study.direction.name.lower()} {metric}")
    if axes.get_legend_handles_labels()[0]:  # none while every trial failed
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def progress_line(study: optuna.Study, trial: optuna.trial.FrozenTrial, metric: str) -> None:
    """One line per finished trial: number, state, value, best so far, the trial's values."""
    if trial.state.name == "COMPLETE":
        value = f"{metric} {trial.value:.4f}"
    elif trial.state.name == "PRUNED" and trial.intermediate_values:
        epoch = max(trial.intermediate_values)
        value = f"at epoch {epoch}: {metric} {trial.intermediate_values[epoch]:.4f}"
    elif trial.state.name == "FAIL":
        value = trial.user_attrs.get("error", "-")
    else:
        value = "-"
    state = f"{trial.state.name}:" if trial.state.name == "FAIL" else trial.state.name
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = (
        f"best {study.best_value:.4f} (trial {study.best_trial.number})" if completed else "best -"
    )
    params = " ".join(f"{short_key(k)}={_fmt(v)}" for k, v in trial.params.items())
    print(f"trial {trial.number} {state} {value} | {best} | {params}", flush=True)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
