"""Time to quality against torch-rechub: ``bench_vs_rechub.py --time-to-quality``.

The question a user asks: how soon do I have a model at least as good as torch-rechub's? For
each of the three models (DSSM, Facebook DSSM, YouTubeDNN on ml-100k):

* torch-rechub trains with its example's settings (``_rechub_worker.SETTINGS``: 10 epochs,
  Adam lr 1e-4, ...) one epoch at a time (``_rechub_worker.train_curve``: the same training as
  its ``MatchTrainer.fit``), its embeddings saved after every epoch. Its **targets** are the
  test HR@10 and HR@50 of its final model; its **wall time** is that of its last epoch.
* lit_matching trains the **same towers** (``bench_vs_rechub.lit_towers``: rechub's MLP
  layout with BatchNorm, the same user and item features, embeddings of 16, a 50-item mean
  history sharing the item id table) with **its own recommended training settings**
  (:data:`PRESETS`, fixed before any of these runs, never tuned on this test), its embeddings
  saved at checkpoints (:func:`checkpoint_steps`: after 1, 2, 3, 4, 5, 7, 9, ... steps, then every
  eighth of an epoch), until it has used rechub's wall time or ``--lit-epochs`` epochs,
  whichever comes first.

Clock: starts before data preparation (rechub's ``get_movielens_data`` and loaders,
lit_matching's reading, pre-split and ``MatchingDataModule.setup``), counts model and trainer
construction and training, and is paused while embeddings are encoded and saved; imports and
rechub's ``.npz`` loading are not counted (as in the end-to-end mode). Both sides restore their
random states after each pause, so the checkpoints do not change the training.

Quality: every saved checkpoint is scored afterwards by the one exact evaluator of the
end-to-end mode (``Reference.metrics``, seen items excluded). Reported per model: rechub's
final HR@10 / HR@50 and wall time; the lit_matching clock at the first checkpoint reaching the
HR@10 target, the HR@50 target, and both (:func:`first_reaching`; a checkpoint is an upper
bound of the true time); speed-up = rechub wall time / lit_matching time to both; the time
from which every later checkpoint stays at both targets (:func:`first_staying`: small targets
can be crossed by chance early on); the best HR@10 each side reaches within rechub's wall
time. The curves are in the ``--json`` output.

Presets (``--lit-preset``), both list-wise, cosine, temperature 0.1, Adam lr 0.01, batch 1024,
no weight decay, constant learning rate, 10 epochs at most:

* ``ml100k-features`` (default): the training settings of the packaged ``ml100k-features``
  config, lit_matching's recommendation for ``FeatureTower`` towers on ml-100k: 8 uniform
  negatives a positive (no log-Q correction: it changes nothing for uniform negatives).
* ``in-batch``: the README's recommendation from the negatives benchmark: in-batch negatives
  only, with log-Q correction by training counts.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from lit_matching import MatchingDataModule

LIT_EPOCHS = 10


@dataclass(frozen=True)
class Preset:
    """lit_matching's training settings for the time-to-quality runs."""

    num_negatives: int
    in_batch_negatives: bool
    log_q_correction: bool
    temperature: float = 0.1
    learning_rate: float = 0.01
    batch_size: int = 1024


PRESETS = {
    "ml100k-features": Preset(num_negatives=8, in_batch_negatives=False, log_q_correction=False),
    "in-batch": Preset(num_negatives=0, in_batch_negatives=True, log_q_correction=True),
}


# ---------------------------------------------------------------------------- curves
def checkpoint_steps(steps_per_epoch: int, max_steps: int) -> list[int]:
    """Steps after which to evaluate: dense at first (x1.4 apart), then every 1/8 epoch.

    Example:
        >>> checkpoint_steps(97, 40)
        [1, 2, 3, 4, 5, 7, 9, 12, 13, 26, 39, 40]
    """
    if steps_per_epoch < 1 or max_steps < 1:
        raise ValueError(f"need positive steps, got {steps_per_epoch=}, {max_steps=}")
    spacing = max(1, math.ceil(steps_per_epoch / 8))
    steps, step = [], 1
    while step < spacing:
        steps.append(step)
        step = max(step + 1, int(step * 1.4))
    steps += range(spacing, max_steps + 1, spacing)
    return sorted({s for s in steps if s <= max_steps} | {max_steps})


def _reached(metrics: dict[str, np.ndarray], targets: dict[str, float]) -> np.ndarray:
    """Per checkpoint: does every ``metrics[name]`` reach ``targets[name]``?"""
    reached = np.ones(len(next(iter(metrics.values()))), dtype=bool)
    for name, target in targets.items():
        reached &= np.asarray(metrics[name]) >= target
    return reached


def first_reaching(
    clock: np.ndarray, metrics: dict[str, np.ndarray], targets: dict[str, float]
) -> int | None:
    """Index of the first checkpoint whose every ``metrics[name]`` is ``>= targets[name]``.

    ``clock`` must be increasing; ``None`` if no checkpoint reaches all targets.

    Example:
        >>> hr = {"hr@10": np.array([0.01, 0.03, 0.02])}
        >>> first_reaching(np.array([1.0, 2.0, 3.0]), hr, {"hr@10": 0.02})
        1
    """
    if np.any(np.diff(clock) < 0):
        raise ValueError(f"clock has to be increasing, got {clock}")
    hits = np.flatnonzero(_reached(metrics, targets))
    return int(hits[0]) if len(hits) else None


def first_staying(metrics: dict[str, np.ndarray], targets: dict[str, float]) -> int | None:
    """Index of the first checkpoint from which every later one reaches all ``targets``.

    Stricter than :func:`first_reaching`: a noisy early checkpoint that crosses a small target
    by chance and falls back does not count. ``None`` if the last checkpoint misses a target.

    Example:
        >>> first_staying({"hr@10": np.array([0.03, 0.01, 0.02, 0.04])}, {"hr@10": 0.02})
        2
    """
    reached = _reached(metrics, targets)
    staying = np.logical_and.accumulate(reached[::-1])[::-1]  # reached here and after
    hits = np.flatnonzero(staying)
    return int(hits[0]) if len(hits) else None


def best_within(clock: np.ndarray, values: np.ndarray, budget: float) -> float | None:
    """The largest of ``values`` at checkpoints whose clock is at most ``budget``."""
    inside = np.asarray(values)[np.asarray(clock) <= budget]
    return float(inside.max()) if len(inside) else None


# ---------------------------------------------------------------------------- lit worker
class Clock:
    """Seconds since ``started`` less the paused spans."""

    def __init__(self, started: float):
        self.started, self.paused = started, 0.0

    def read(self) -> float:
        return time.perf_counter() - self.started - self.paused


def _checkpointer(clock: Clock, dm: MatchingDataModule, out: Path, budget: float) -> Any:
    """A Lightning callback saving the embeddings at :func:`checkpoint_steps`, clock paused."""
    import pytorch_lightning as pl
    import torch
    from bench_vs_rechub import save_test_vectors

    class Checkpointer(pl.Callback):
        def __init__(self) -> None:
            self.curve: list[dict[str, Any]] = []
            self.steps: set[int] = set()
            self.per_epoch = 1
            self.test_users: tuple[np.ndarray, Any] | None = None  # built at the first save

        def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self.per_epoch = int(trainer.num_training_batches)
            self.steps = set(checkpoint_steps(self.per_epoch, self.per_epoch * trainer.max_epochs))

        def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *_: Any) -> None:
            over = clock.read() >= budget
            if over:
                trainer.should_stop = True
            if over or trainer.global_step in self.steps:
                self.save(trainer, module)

        def on_train_end(self, trainer: pl.Trainer, module: Any) -> None:
            if not self.curve or self.curve[-1]["step"] != trainer.global_step:
                self.save(trainer, module)

        def save(self, trainer: pl.Trainer, module: Any) -> None:
            read_at = time.perf_counter()
            step = trainer.global_step
            point = {"step": step, "epoch": step / self.per_epoch, "clock_s": clock.read()}
            folder = out / f"step_{step}"
            folder.mkdir()
            module.eval()  # BatchNorm: running statistics
            with torch.random.fork_rng():
                if self.test_users is None:
                    users = dm.eval_set("test").users
                    self.test_users = users, dm.user_features("test", users)
                save_test_vectors(module, dm, *self.test_users, folder)
            module.train()
            self.curve.append(point | {"dir": str(folder)})
            clock.paused += time.perf_counter() - read_at

    return Checkpointer()


def lit_curve_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Train the model's towers with a preset until ``args.budget`` s; the checkpoint curve."""
    import pytorch_lightning as pl
    import torch
    from _rechub_worker import SEED, SETTINGS
    from bench_data import bench_trainer
    from bench_vs_rechub import lit_data, lit_towers

    from lit_matching import ListwiseMatching

    torch.set_num_threads(args.threads)
    s, preset = SETTINGS[args.model], PRESETS[args.lit_preset]
    pl.seed_everything(SEED, verbose=False)

    clock = Clock(time.perf_counter())
    dm = lit_data(
        args.data_dir,
        s,
        args.loader_workers,
        mode=2,
        num_negatives=preset.num_negatives,
        negative_sampler="uniform",
        batch_size=preset.batch_size,
    )
    prep_s = clock.read()
    users, items = lit_towers(s, dm)
    model = ListwiseMatching(
        users,
        items,
        similarity="cosine",
        temperature=preset.temperature,
        learning_rate=preset.learning_rate,
        in_batch_negatives=preset.in_batch_negatives,
        log_q_correction=preset.log_q_correction,
    )
    checkpointer = _checkpointer(clock, dm, args.out, args.budget)
    trainer = bench_trainer(max_epochs=args.lit_epochs, callbacks=[checkpointer])
    trainer.fit(model, datamodule=dm)
    return {
        "prep_s": prep_s,
        "steps_per_epoch": checkpointer.per_epoch,
        "preset": args.lit_preset,
        "settings": asdict(preset),
        "curve": checkpointer.curve,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------- runs
def scored(reference: Any, curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each checkpoint with HR@10 / HR@50 of the common exact evaluator (seen excluded)."""
    points = []
    for point in curve:
        metrics = reference.metrics(Path(point["dir"]), exclude_seen=True)
        hr = {f"hr@{k}": metrics[f"hit_rate@{k}"] for k in (10, 50)}
        points.append({key: value for key, value in point.items() if key != "dir"} | hr)
    return points


def run_sides(
    name: str, args: argparse.Namespace, python: Path, npz: Path, scratch: Path
) -> tuple[dict[str, Any] | str, dict[str, Any] | str]:
    """rechub's epoch curve, then lit_matching's checkpoint curve within rechub's wall time."""
    from bench_data import run_worker
    from bench_vs_rechub import KS, RECHUB_WORKER

    common = ["--model", name, "--threads", str(args.threads)]
    common += ["--loader-workers", str(args.loader_workers)]
    outs = {side: scratch / f"ttq-{name}-{side}" for side in ("rechub", "lit")}
    for out in outs.values():
        out.mkdir()
    rechub_command = [str(python), str(RECHUB_WORKER), "--npz", str(npz), "--curve"]
    rechub_command += ["--ks", *map(str, KS), "--out", str(outs["rechub"]), *common]
    rechub_command += ["--epochs", str(args.epochs)] if args.epochs else []
    rechub = run_worker(rechub_command, args.timeout)
    if isinstance(rechub, str):
        return rechub, "not run"
    for point in rechub["curve"]:
        point["clock_s"] = rechub["built_s"] + point.pop("train_s")
    budget = rechub["curve"][-1]["clock_s"]
    print(f"  {name} torch-rechub: {budget:.2f} s to train", flush=True)
    lit_command = [sys.executable, str(Path(__file__).with_name("bench_vs_rechub.py"))]
    lit_command += ["--worker", "lit-ttq", "--data-dir", str(args.data_dir), *common]
    lit_command += ["--out", str(outs["lit"]), "--budget", str(budget)]
    lit_command += ["--lit-epochs", str(args.lit_epochs), "--lit-preset", args.lit_preset]
    lit = run_worker(lit_command, args.timeout)
    if isinstance(lit, dict):
        print(f"  {name} lit_matching: {lit['curve'][-1]['clock_s']:.2f} s", flush=True)
    return rechub, lit


def summarize(name: str, rechub: dict[str, Any], lit: dict[str, Any]) -> dict[str, Any]:
    """Targets, lit_matching's times to them, the speed-up and the best HR@10 in the budget."""
    arrays = {
        side: {
            key: np.array([p[key] for p in run["curve"]]) for key in ("clock_s", "hr@10", "hr@50")
        }
        for side, run in (("rechub", rechub), ("lit", lit))
    }
    targets = {key: float(arrays["rechub"][key][-1]) for key in ("hr@10", "hr@50")}
    budget = float(arrays["rechub"]["clock_s"][-1])
    row: dict[str, Any] = {"model": name, "targets": targets, "rechub_s": budget}
    for label, wanted in (("hr@10", ["hr@10"]), ("hr@50", ["hr@50"]), ("both", list(targets))):
        for side in ("lit", "rechub"):
            a = arrays[side]
            hit = first_reaching(a["clock_s"], a, {key: targets[key] for key in wanted})
            row[f"{side}_s_to_{label}"] = None if hit is None else float(a["clock_s"][hit])
    stays = first_staying(arrays["lit"], targets)
    row["lit_s_to_both_for_good"] = (
        None if stays is None else float(arrays["lit"]["clock_s"][stays])
    )
    both = row["lit_s_to_both"]
    row["speedup"] = budget / both if both else None
    for side in ("lit", "rechub"):
        a = arrays[side]
        row[f"{side}_best_hr@10"] = best_within(a["clock_s"], a["hr@10"], budget)
    row["lit_trained_s"] = float(arrays["lit"]["clock_s"][-1])
    row["lit_epochs"] = lit["curve"][-1]["epoch"]
    return row


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown time-to-quality table."""

    def seconds(value: float | None) -> str:
        return "not reached" if value is None else f"{value:.2f}"

    lines = [
        "| model | rechub final HR@10 / HR@50 | rechub wall s | lit s to HR@10 | lit s to HR@50 "
        "| lit s to both | speed-up | lit s to both for good | best HR@10 in rechub's wall time: "
        "lit / rechub |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['error']} | | | | | | | |")
            continue
        speed = f"**{r['speedup']:.0f}x**" if r["speedup"] else "-"
        lines.append(
            f"| {r['model']} | {r['targets']['hr@10']:.4f} / {r['targets']['hr@50']:.4f} | "
            f"{r['rechub_s']:.2f} | {seconds(r['lit_s_to_hr@10'])} | "
            f"{seconds(r['lit_s_to_hr@50'])} | {seconds(r['lit_s_to_both'])} | {speed} | "
            f"{seconds(r['lit_s_to_both_for_good'])} | "
            f"{r['lit_best_hr@10']:.4f} / {r['rechub_best_hr@10']:.4f} |"
        )
    return lines


def curve_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Short curves: rechub per epoch, lit_matching at its checkpoints (s: HR@10 / HR@50)."""
    lines = []
    for r in rows:
        if "error" in r:
            continue
        lines.append(
            f"- {r['model']}: lit_matching trained {r['lit_trained_s']:.2f} s "
            f"({r['lit_epochs']:.2f} epochs of {r['lit_steps_per_epoch']} steps); torch-rechub "
            f"first reached its own final HR@10 and HR@50 at {r['rechub_s_to_both']:.2f} s"
        )
        for side in ("rechub", "lit"):
            points = r.get(f"{side}_curve", [])
            text = ", ".join(
                f"{p['clock_s']:.2f}: {p['hr@10']:.3f}/{p['hr@50']:.3f}" for p in points
            )
            lines.append(f"- {r['model']} {side} (s: HR@10/HR@50): {text}")
    return lines


def time_to_quality(
    args: argparse.Namespace, python: Path | None, npz: Path, scratch: Path, reference: Any
) -> list[dict[str, Any]]:
    """The time-to-quality rows of ``args.models`` (curves included), printed as a table."""
    rows: list[dict[str, Any]] = []
    for name in args.models:
        print(f"{name}: time to quality ...", flush=True)
        if python is None:
            rows.append({"model": name, "error": "no torch-rechub environment"})
            continue
        rechub, lit = run_sides(name, args, python, npz, scratch)
        if isinstance(rechub, str) or isinstance(lit, str):
            error = rechub if isinstance(rechub, str) else lit
            rows.append({"model": name, "error": str(error)})
            continue
        rechub["curve"], lit["curve"] = (
            scored(reference, rechub["curve"]),
            scored(reference, lit["curve"]),
        )
        row = summarize(name, rechub, lit)
        row |= {"rechub_curve": rechub["curve"], "lit_curve": lit["curve"]}
        row |= {"rechub_prep_s": rechub["prep_s"], "lit_prep_s": lit["prep_s"]}
        row |= {"lit_settings": lit["settings"], "lit_steps_per_epoch": lit["steps_per_epoch"]}
        rows.append(row)
    print("\n".join(["", *table(rows), "", *curve_lines(rows), ""]))
    return rows
