"""Train each packaged config (one per mode) and compare it with the most-popular baseline.

Usage: python scripts/modes_vs_popular.py [--epochs N] [--configs listwise pairwise pointwise]
                                         [-- LIGHTNING-CLI OVERRIDES...]

Each mode runs exactly as ``lit-matching fit --config MODE`` would (embedded MovieLens
ml-latest-small, chronological leave-last-out, full-catalogue ranking with seen items
excluded); the script prints the test metrics of the best checkpoint of each next to the
most-popular-unseen-items baseline, and the wall time of each run.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from lit_matching.cli import run_cli
from lit_matching.retrieval.evaluation import RetrievalEvaluator, most_popular_metrics

SHOWN = ("hit_rate@10", "hit_rate@50", "ndcg@10", "ndcg@50", "recall@20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["listwise", "pairwise", "pointwise"])
    parser.add_argument("--epochs", type=int, default=None, help="override max_epochs")
    parser.add_argument("overrides", nargs="*", help="passed to lit-matching fit (after --)")
    args = parser.parse_args()
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    rows: dict[str, dict[str, float]] = {}
    times: dict[str, float] = {}
    baseline: dict[str, float] = {}
    workdir = tempfile.mkdtemp(prefix="modes_vs_popular_")
    for name in args.configs:
        extra = [] if args.epochs is None else [f"--trainer.max_epochs={args.epochs}"]
        extra += args.overrides
        started = time.perf_counter()
        cli = run_cli(
            [
                "fit",
                "--config",
                name,
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={workdir}",
                f"--trainer.logger.init_args.save_dir={workdir}",
                *extra,
            ]
        )
        times[name] = time.perf_counter() - started
        evaluator = next(c for c in cli.trainer.callbacks if isinstance(c, RetrievalEvaluator))
        rows[name] = evaluator.results["test"]
        dm = cli.datamodule
        baseline = most_popular_metrics(dm.item_counts, dm.eval_set("test"), evaluator.ks)
    rows["most popular"] = baseline
    machine = platform.processor() or platform.machine()
    print(
        f"\nTest split, best checkpoint by val/recall@20; machine: {machine}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    header = f"{'model':<14}" + "".join(f"{m:>13}" for m in SHOWN) + f"{'wall s':>9}"
    print(header)
    for name, metrics in rows.items():
        wall = f"{times[name]:>9.1f}" if name in times else f"{'-':>9}"
        print(f"{name:<14}" + "".join(f"{metrics[m]:>13.4f}" for m in SHOWN) + wall)
    beaten = [n for n in times if rows[n]["hit_rate@50"] > baseline["hit_rate@50"]]
    print(f"HR@50 above the most-popular baseline: {beaten or 'none'}")


if __name__ == "__main__":
    main()
