"""ml-1m-implicit, LightGCN protocol: the three training modes against the most-popular baseline.

Two-tower matrix factorisation (``IDEmbeddingTower`` on both sides, d = 64, cosine) trained
point-wise (BCE), pair-wise (BPR) and list-wise (softmax) on the fixed split of
``ml-1m-implicit`` (``train.txt`` / ``valid.txt`` / ``test.txt``, one line per user; 6,039
users, 3,628 items): full-catalogue ranking, each user's training items excluded (for test:
training and validation items), Recall and NDCG at 10, 20 and 50 averaged over test users.
Every epoch is validated (``RetrievalEvaluator``); the state of the best epoch by
``val/recall@20`` is kept in memory and evaluated once on test. The most-popular row recommends
the most-trained unseen items to everyone. Each run's wall time covers data preparation,
training with per-epoch validation, and the test evaluation. Usage::

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_ml1m.py [--data-dir ../shared/data]
        [--threads 2] [--epochs N] [--modes pointwise pairwise listwise]

``--modes`` also accepts ``listwise-uniform`` (list-wise with 8 uniform negatives, the
packaged ``listwise`` config's choice, shown for comparison). ``--epochs`` overrides every
run's epoch count (for smoke runs). The whole default run took 11.5 minutes with 1 thread
on a shared 2-core machine.

Settings start from the packaged configs (``lit_matching/configs/<mode>.yaml``: point-wise
4 negatives, tau 0.2; pair-wise 1 negative, tau 0.1; list-wise tau 0.1; Adam lr 0.05) and
``gowalla.yaml`` (in-batch negatives + 1 uniform, batch 2048; lr 0.005 when tuning began),
with batch size, epochs and learning rate adapted so that each run takes at most about 5
minutes on 2 cores.
Tuning used the validation split only (val/recall@20 of the best epoch; 1 torch thread, on a
machine shared with other jobs), a few short runs per mode:

=======================================  ======  =======================================  ======
run                                      epochs  val recall@20 by epoch                   best
=======================================  ======  =======================================  ======
point-wise, lr 0.05, tau 0.2             8       .148 .187 .201 .209 .213 .215 .220 .221  0.2213
point-wise, lr 0.01, tau 0.2 *           8       .131 .181 .196 .208 .212 .216 .221 .223  0.2225
point-wise, lr 0.01, tau 0.1             8       .109 .160 .187 .198 .208 .212 .218 .220  0.2198
pair-wise, lr 0.05, tau 0.1              8       .083 .115 .136 .143 .153 .161 .168 .170  0.1697
pair-wise, lr 0.01, tau 0.1              8       .076 .112 .131 .146 .156 .163 .170 .172  0.1719
pair-wise, lr 0.01, tau 0.1, batch 1024  8       .087 .114 .131 .146 .157 .160 .166 .175  0.1746
pair-wise, lr 0.01, tau 0.05             8       .055 .076 .092 .104 .110 .119 .123 .126  0.1260
pair-wise, lr 0.01, tau 0.2 *            8       .106 .144 .165 .175 .182 .190 .193 .196  0.1958
pair-wise, lr 0.01, tau 0.5              8       .109 .133 .137 .142 .147 .151 .153 .153  0.1532
list-wise 8 uniform, lr 0.05             6       .154 .189 .201 .208 .212 .216            0.2155
list-wise 8 uniform, lr 0.01             6       .146 .184 .197 .207 .211 .215            0.2150
in-batch + 1 uniform, b 1024, lr 0.01 *  3       .176 .214 .227                           0.2270
in-batch + 1 uniform, b 2048, lr 0.01    3       .169 .208 .223                           0.2231
in-batch + 1 uniform, b 512, lr 0.01     3       .179 .218 .227                           0.2266
in-batch + 1 uniform, b 1024, lr 0.005   3       .161 .204 .220                           0.2204
=======================================  ======  =======================================  ======

(* = kept.) Batch 2048 for point-, pair-wise and 8 uniform; in-batch runs use log-Q
correction and tau 0.1. Point-wise: lr and temperature change little; the packaged values
(tau 0.2) with lr 0.01 are kept. Pair-wise: the temperature matters most, 0.2 beats the
packaged 0.1 clearly (0.196 against 0.172 after 8 epochs); it converges the slowest, hence
40 epochs. List-wise: in-batch negatives with log-Q correction reach 0.227 after 3 epochs
(~105 s), above 8 uniform negatives after 6 epochs (0.215, ~95 s), so they are kept; batch
2048 was no better than 1024 and took ~3x longer per epoch (the in-batch logits grow with the
batch squared), batch 512 matched 1024; lr 0.01 beat 0.005. The tuning runs were timed on a
loaded machine while the library's training step got faster (fused Adam, cheaper in-batch
scaling), so their times are rough.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import pytorch_lightning as pl
import torch
from bench_data import cpu_model
from pytorch_lightning.callbacks import Callback

from lit_matching import (
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    MatchingModule,
    PairwiseMatching,
    PointwiseMatching,
    RetrievalEvaluator,
)
from lit_matching.retrieval.evaluation import most_popular_metrics

DATASET = "ml-1m-implicit"
DIM = 64
KS = (10, 20, 50)
MONITOR = "recall@20"  # selection metric, on the validation split
SEED = 0


@dataclass(frozen=True)
class Setting:
    """One training run: the module, its data and its hyper-parameters."""

    label: str
    module: type[MatchingModule]
    mode: str
    num_negatives: int
    temperature: float
    learning_rate: float
    batch_size: int
    epochs: int
    in_batch_negatives: bool = False

    def model_arguments(self) -> dict[str, Any]:
        """Keyword arguments of the module, besides the towers."""
        extra = {"in_batch_negatives": True} if self.in_batch_negatives else {}
        return {
            "similarity": "cosine",
            "temperature": self.temperature,
            "learning_rate": self.learning_rate,
        } | extra


SETTINGS = {
    "pointwise": Setting("point-wise", PointwiseMatching, "pointwise", 4, 0.2, 0.01, 2048, 25),
    "pairwise": Setting("pair-wise", PairwiseMatching, "pairwise", 1, 0.2, 0.01, 2048, 40),
    "listwise": Setting(
        "list-wise (in-batch + 1 uniform, log-Q)",
        ListwiseMatching,
        "listwise",
        1,
        0.1,
        0.01,
        1024,
        8,
        in_batch_negatives=True,
    ),
    "listwise-uniform": Setting(
        "list-wise (8 uniform)", ListwiseMatching, "listwise", 8, 0.1, 0.01, 2048, 15
    ),
}


class KeepBest(Callback):
    """Keeps a copy of the model's state at its best validation epoch by ``MONITOR``.

    Put it after the :class:`RetrievalEvaluator` in the callback list: it reads the
    evaluator's validation results of the epoch that just ended.
    """

    def __init__(self, evaluator: RetrievalEvaluator):
        self.evaluator = evaluator
        self.best_value = float("-inf")
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] = {}
        self.history: list[float] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record this epoch's validation metric and copy the weights if it is the best."""
        if trainer.sanity_checking:
            return
        value = self.evaluator.results["val"][MONITOR]
        self.history.append(value)
        if value > self.best_value:
            self.best_value, self.best_epoch = value, trainer.current_epoch + 1
            self.best_state = copy.deepcopy(pl_module.state_dict())


@dataclass
class Result:
    """Test metrics of the best epoch, with how it was found."""

    test: dict[str, float]
    best_epoch: int
    best_val: float
    val_history: list[float]
    wall_s: float


def make_data(data_dir: Path, setting: Setting) -> MatchingDataModule:
    """The ml-1m-implicit folder as its given train / valid / test split."""
    return MatchingDataModule(
        mode=setting.mode,
        interactions=str(data_dir / DATASET),
        file_format="user-lines",
        time_col=None,
        num_negatives=setting.num_negatives,
        batch_size=setting.batch_size,
        # Only for val/loss; in-batch logits grow with its square, so keep it the batch's.
        eval_batch_size=setting.batch_size,
        seed=SEED,
        progress=False,
    )


def make_model(setting: Setting, dm: MatchingDataModule) -> MatchingModule:
    """Two ID towers (matrix factorisation) in the setting's module."""
    return setting.module(
        IDEmbeddingTower(dm.num_users, DIM),
        IDEmbeddingTower(dm.num_items, DIM),
        **setting.model_arguments(),
    )


def test_metrics(
    model: MatchingModule, dm: MatchingDataModule, evaluator: RetrievalEvaluator
) -> dict[str, float]:
    """Test-split retrieval metrics of ``model`` (training and validation items excluded)."""
    eval_set = dm.eval_set("test")
    model.eval()
    with torch.no_grad():
        return evaluator.evaluate(
            model,
            eval_set,
            model.device,
            dm.num_items,
            dm.item_counts,
            dm.user_features("test", eval_set.users),
        )


def train(setting: Setting, data_dir: Path, epochs: int) -> Result:
    """Fit one setting, validating every epoch, and test the best epoch's weights."""
    started = time.perf_counter()
    pl.seed_everything(SEED, verbose=False)
    dm = make_data(data_dir, setting)
    model = make_model(setting, dm)
    evaluator = RetrievalEvaluator(ks=KS, progress=False)
    best = KeepBest(evaluator)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[evaluator, best],
    )
    trainer.fit(model, dm)
    model.load_state_dict(best.best_state)
    test = test_metrics(model, dm, evaluator)
    wall = time.perf_counter() - started
    return Result(test, best.best_epoch, best.best_value, best.history, wall)


def popular_metrics(data_dir: Path) -> dict[str, float]:
    """Test metrics of recommending the most popular unseen items to everyone."""
    dm = make_data(data_dir, SETTINGS["pointwise"])
    eval_set = dm.eval_set("test")  # prepares the data, which sets item_counts
    return most_popular_metrics(dm.item_counts, eval_set, KS)


def table(rows: dict[str, tuple[dict[str, float], str, str]]) -> str:
    """Markdown table: one row per model, its test metrics, best epoch and wall time."""
    names = [f"{m}@{k}" for m in ("recall", "ndcg") for k in KS]
    header = ["mode", *(n.replace("recall", "Recall").replace("ndcg", "NDCG") for n in names)]
    lines = [
        "| " + " | ".join([*header, "best epoch", "wall s"]) + " |",
        "|" + "---|" * (len(header) + 2),
    ]
    for name, (metrics, epoch, wall) in rows.items():
        cells = [name, *(f"{metrics[n]:.4f}" for n in names), epoch, wall]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def footer(threads: int) -> str:
    """Machine, software, threading and the command of this run."""
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    return (
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"faiss {faiss.__version__}; {threads} torch/FAISS threads; OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.\n"
        f"Command: `{command}`"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("..") / "shared" / "data",
        help=f"folder holding {DATASET}/ (default: ../shared/data)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    parser.add_argument("--epochs", type=int, default=None, help="override every run's epochs")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["pointwise", "pairwise", "listwise"],
        choices=list(SETTINGS),
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Train every chosen mode, then print the test table and the footer."""
    args = parse_args(argv)
    for name in ("pytorch_lightning", "lightning.pytorch", "lit_matching"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rows: dict[str, tuple[dict[str, float], str, str]] = {}
    for name in args.modes:
        setting = SETTINGS[name]
        result = train(setting, args.data_dir, args.epochs or setting.epochs)
        history = " ".join(f"{v:.4f}" for v in result.val_history)
        print(
            f"{name}: best epoch {result.best_epoch} (val {MONITOR} {result.best_val:.4f}), "
            f"test {MONITOR} {result.test[MONITOR]:.4f}, {result.wall_s:.0f} s; "
            f"val {MONITOR} by epoch: {history}",
            flush=True,
        )
        epochs = f"{result.best_epoch} / {len(result.val_history)}"
        rows[setting.label] = (result.test, epochs, f"{result.wall_s:.0f}")
    rows["most popular"] = (popular_metrics(args.data_dir), "-", "-")
    print(
        f"\n{DATASET}: test split, full-catalogue ranking, training and validation items "
        f'excluded; best epoch by val/{MONITOR} ("a / b": best of b epochs).\n'
    )
    print(table(rows))
    print()
    print(footer(args.threads))


if __name__ == "__main__":
    main()
