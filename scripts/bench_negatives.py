"""Negatives and log-Q correction on the embedded MovieLens data: test metrics of each choice.

Every variant is the packaged list-wise config (``lit-matching fit``: ID towers, cosine,
temperature 0.1, 20 epochs, best epoch by val/recall@20) with its negatives changed:
sampled uniform or popularity negatives, in-batch negatives, or both mixed, each with and
without log-Q correction (given training frequencies or streamed estimates), plus a learned
temperature, and hard negatives mined from the model's own index every epoch from epoch 1
(:class:`~lit_matching.callbacks.hard_negatives.HardNegativeMiner`). Usage::

    python scripts/bench_negatives.py [--epochs N] [--variants NAME ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from lit_matching.cli import run_cli
from lit_matching.retrieval.evaluation import RetrievalEvaluator

SHOWN = ("hit_rate@10", "hit_rate@50", "ndcg@50", "recall@20")
M = "--model.init_args."
#: Hard negatives mined from the model's index each epoch from epoch 1 (top K, share h).
HARD = (
    '--trainer.callbacks+={{"class_path": "lit_matching.HardNegativeMiner", '
    '"init_args": {{"top_k": {}, "hard_fraction": {}}}}}'
)
#: name -> overrides of the packaged list-wise config
VARIANTS = {
    "uniform 8": [],
    "uniform 8, log-Q": [f"{M}log_q_correction=true"],
    "uniform 8, learned temperature": [f"{M}learn_temperature=true"],
    "popularity 8": ["--data.negative_sampler=popularity", f"{M}log_q_correction=false"],
    "popularity 8, log-Q": ["--data.negative_sampler=popularity", f"{M}log_q_correction=true"],
    "in-batch": [
        "--data.num_negatives=0",
        f"{M}in_batch_negatives=true",
        f"{M}log_q_correction=false",
    ],
    "in-batch, log-Q": ["--data.num_negatives=0", f"{M}in_batch_negatives=true"],
    "in-batch, streamed log-Q": [
        "--data.num_negatives=0",
        f"{M}in_batch_negatives=true",
        f"{M}frequency_buckets=16384",
    ],
    "mixed in-batch + uniform 8": [f"{M}in_batch_negatives=true", f"{M}log_q_correction=false"],
    "mixed in-batch + uniform 8, log-Q": [f"{M}in_batch_negatives=true"],
    "uniform 8 + hard (top 100, h = 0.5)": [HARD.format(100, 0.5)],
    "uniform 8 + hard (top 100, h = 0.5), log-Q": [
        HARD.format(100, 0.5),
        f"{M}log_q_correction=true",
    ],
    "uniform 8 + hard (top 20, h = 0.25)": [HARD.format(20, 0.25)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="override max_epochs")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    workdir = tempfile.mkdtemp(prefix="bench_negatives_")
    rows: dict[str, tuple[dict[str, float], float]] = {}
    for name in args.variants:
        extra = [] if args.epochs is None else [f"--trainer.max_epochs={args.epochs}"]
        started = time.perf_counter()
        cli = run_cli(
            [
                "fit",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={workdir}",
                f"--trainer.logger.init_args.save_dir={workdir}",
                *VARIANTS[name],
                *extra,
            ]
        )
        evaluator = next(c for c in cli.trainer.callbacks if isinstance(c, RetrievalEvaluator))
        rows[name] = (evaluator.results["test"], time.perf_counter() - started)
        print(f"{name}: HR@50 {rows[name][0]['hit_rate@50']:.4f}", flush=True)
    machine = platform.processor() or platform.machine()
    print(
        f"\nEmbedded ml-latest-small, test split, best checkpoint by val/recall@20; {machine}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'negatives':<36}" + "".join(f"{m:>13}" for m in SHOWN) + f"{'wall s':>9}")
    for name, (metrics, wall) in rows.items():
        print(f"{name:<36}" + "".join(f"{metrics[m]:>13.4f}" for m in SHOWN) + f"{wall:>9.1f}")


if __name__ == "__main__":
    main()
