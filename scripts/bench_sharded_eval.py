"""Sharded evaluation benchmark: ``RetrievalEvaluator`` on 1 process against 2 CPU DDP ranks.

``trainer.test`` of a list-wise two-tower model (ID towers, d = 64, cosine, random seeded
weights: the cost of the search does not depend on them) with a :class:`RetrievalEvaluator`
(K = 20, 50, exact search, each user's training items excluded), on Gowalla (the LightGCN
split: train + valid are seen, test the targets; ``--data-dir`` holding ``gowalla/``) or, without
it, a synthetic log of Gowalla's size (29,858 users, 40,981 items, 1.03M power-law
interactions). Timed: the evaluator's work at the end of the test epoch (encoding users and
items, building the index, the search, the metrics and their all-reduce), between two barriers,
so a 2-rank time is that of the slower rank; the best of ``--repeats`` ``trainer.test`` calls.

Each world size runs in a fresh process (Lightning launches the second rank), with
``--threads`` threads per rank (``OMP_NUM_THREADS``, ``torch.set_num_threads``,
``faiss.omp_set_num_threads``), the same on both sides. Usage::

    python scripts/bench_sharded_eval.py [--data-dir ../shared/data] [--threads 1]
                                         [--repeats 3] [--ranks 1 2] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
USERS, ITEMS, INTERACTIONS = 29_858, 40_981, 1_027_370  # Gowalla's size
KS = (20, 50)


def synthetic_log(seed: int = 0) -> Any:
    """Gowalla-sized log: every item once, the rest power-law items, random users and times."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    cdf = np.cumsum(1.0 / np.arange(1, ITEMS + 1))
    popular = rng.permutation(ITEMS)[
        np.minimum(np.searchsorted(cdf, rng.random(INTERACTIONS - ITEMS) * cdf[-1]), ITEMS - 1)
    ]
    items = np.concatenate([np.arange(ITEMS), popular])
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, USERS, len(items)),
            "item_id": items,
            "timestamp": rng.integers(0, 2**31, len(items)),
        }
    )


def worker(args: argparse.Namespace) -> None:
    """One world size: ``trainer.test`` ``--repeats`` times; rank 0 writes the timings."""
    import faiss
    import pytorch_lightning as pl
    import torch

    from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule
    from lit_matching import RetrievalEvaluator as Evaluator
    from lit_matching.retrieval import evaluation

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    data = args.data_dir / "gowalla" if args.data_dir else synthetic_log()
    dm = MatchingDataModule(interactions=data, eval_batch_size=4096)
    dm.setup("test")
    pl.seed_everything(0)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 64), IDEmbeddingTower(dm.num_items, 64), similarity="cosine"
    )
    encoding: list[float] = []
    encode_catalogue = evaluation.encode_catalogue

    def timed_encoding(*a: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        out = encode_catalogue(*a, **kw)
        encoding.append(time.perf_counter() - start)
        return out

    evaluation.encode_catalogue = timed_encoding  # type: ignore[assignment]

    seconds: list[float] = []
    cpu_seconds: list[list[float]] = []  # per run, each rank's CPU time

    class TimedEvaluator(Evaluator):
        def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
            trainer.strategy.barrier()
            start, cpu = time.perf_counter(), time.process_time()
            super()._run(trainer, pl_module, stage)
            cpu = time.process_time() - cpu
            trainer.strategy.barrier()
            seconds.append(time.perf_counter() - start)
            gathered = trainer.strategy.all_gather(torch.tensor([cpu], dtype=torch.float64))
            cpu_seconds.append(gathered.reshape(-1).tolist())

    evaluator = TimedEvaluator(ks=KS, batch_size=4096, progress=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_test_batches=1,  # the test loss is not what is timed
        callbacks=[evaluator],
    )
    for _ in range(args.repeats):
        trainer.test(model, dm, verbose=False)
    if trainer.global_rank == 0:
        result = {
            "ranks": args.devices,
            "users": len(dm.eval_set("test").users),
            "items": dm.num_items,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "encoding_seconds": encoding,
            "metrics": evaluator.results["test"],
        }
        args.out.write_text(json.dumps(result))


def run(ranks: int, args: argparse.Namespace) -> dict[str, Any]:
    """The worker of one world size, in a fresh process with the thread settings."""
    env = os.environ | {name: str(args.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--worker", "--devices", str(ranks), "--out", str(out)]
        command += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
        if args.data_dir:
            command += ["--data-dir", str(args.data_dir)]
        done = subprocess.run(
            command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout
        )
        if done.returncode != 0:
            raise SystemExit(f"{ranks} rank(s) failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def report(results: list[dict[str, Any]], args: argparse.Namespace, wall: float) -> None:
    """A Markdown table: best evaluation time per world size, speed-up, equal metrics."""
    import faiss
    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_data import cpu_model

    first = results[0]
    data = "Gowalla (LightGCN split)" if args.data_dir else "synthetic, Gowalla-sized"
    print(
        f"\n{data}: {first['users']:,} test users x {first['items']:,} items, d = 64, "
        f"K = {', '.join(map(str, KS))}, {args.threads} thread(s) per rank\n"
    )
    print(
        f"| ranks | evaluation (best of {args.repeats}) | all runs | CPU time per rank "
        "| encoding (rank 0) | speed-up | recall@20 | coverage@20 | popularity@20 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    base = min(first["seconds"])
    for row in results:
        best, metrics = min(row["seconds"]), row["metrics"]
        runs = ", ".join(f"{s:.2f}" for s in row["seconds"])
        fastest = row["cpu_seconds"][int(np.argmin(row["seconds"]))]
        cpu = " / ".join(f"{s:.2f} s" for s in fastest)
        print(
            f"| {row['ranks']} | {best:.2f} s | {runs} | {cpu} "
            f"| {min(row['encoding_seconds']):.2f} s "
            f"| {base / best:.2f}x | {metrics['recall@20']:.6f} | {metrics['coverage@20']:.6f} "
            f"| {metrics['popularity@20']:.4f} |"
        )
    print(
        f"\nmachine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}, faiss "
        f"{faiss.__version__}; {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
        f"wall time {wall:.0f} s\ncommand: python {' '.join(sys.argv)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="folder holding gowalla/ (else synthetic)")
    parser.add_argument("--threads", type=int, default=1, help="threads per rank")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    start = time.perf_counter()
    results = [run(ranks, args) for ranks in args.ranks]
    report(results, args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
