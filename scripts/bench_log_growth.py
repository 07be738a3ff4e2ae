"""Training batches per second as the log grows, dense against sparse embedding tables.

A synthetic power-law log (``--items`` items, Zipf exponent 1.3; one user per 20 interactions,
so the user table grows with the log) trains a list-wise ID model (d = 64, batch 1024, 8
negatives) for 220 steps; batches per second are timed over steps 20-219. Each size and kind
runs in its own process, so one run's memory does not slow the next. Usage::

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 python scripts/bench_log_growth.py \\
        --sizes 2e6 8e6 --embeddings dense sparse [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
import warnings
from typing import Any

ZIPF = 1.3  # item popularity exponent


def zipf_items(rng: Any, size: int, items: int, exponent: float = ZIPF) -> Any:
    """``size`` item ids: Zipf ranks (item 0 the most popular), the tail clipped to the last id.

    Shared with ``bench_scale.py``, whose chunked logs follow the same item popularity.
    """
    import numpy as np

    return np.minimum(rng.zipf(exponent, size) - 1, items - 1)


def measure(interactions: int, kind: str, items: int, threads: int) -> dict[str, float]:
    """Batches per second of one training run (in this process)."""
    import numpy as np
    import pandas as pd
    import pytorch_lightning as pl
    import torch
    from bench_data import bench_trainer

    from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    log = pd.DataFrame(
        {
            "user_id": rng.integers(0, interactions // 20, interactions),
            "item_id": zipf_items(rng, interactions, items),
            "timestamp": np.arange(interactions),
        }
    )
    data = MatchingDataModule(
        interactions=log,
        num_negatives=8,
        batch_size=1024,
        progress=False,
        min_user_interactions=0,
        min_item_interactions=0,
    )
    data.setup("fit")
    model = ListwiseMatching(
        IDEmbeddingTower(data.num_users, 64),
        IDEmbeddingTower(data.num_items, 64),
        sparse_embeddings=kind == "sparse",
    )
    times: dict[int, float] = {}

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, index):
            times.setdefault(index, time.perf_counter())

    trainer = bench_trainer(max_steps=220, callbacks=[Clock()])
    trainer.fit(model, data)
    return {
        "interactions": interactions,
        "users": data.num_users,
        "embeddings": kind,
        "batches_per_s": 199 / (times[219] - times[20]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[2e6, 8e6])
    parser.add_argument("--embeddings", nargs="+", default=["dense", "sparse"])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "KIND"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        size, kind = options.worker
        print(json.dumps(measure(int(float(size)), kind, options.items, options.threads)))
        return
    print(f"# {' '.join(sys.argv)}; {options.threads} threads")
    print("| interactions | users | embeddings | batches/s |\n|---:|---:|---|---:|")
    for kind in options.embeddings:
        for size in options.sizes:
            command = [
                sys.executable,
                __file__,
                "--worker",
                str(size),
                kind,
                "--items",
                str(options.items),
                "--threads",
                str(options.threads),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"| {row['interactions']:,} | {row['users']:,} | {kind} | "
                f"{row['batches_per_s']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
