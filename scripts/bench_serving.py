"""Serving benchmark: recommendations from a ``Retriever`` (issue 15).

Subcommands:

* ``batch``: top K for every Gowalla user written to Parquet with
  :func:`~lit_matching.serving.batch.recommend_to_parquet` (``lit-matching recommend DIR --all
  --output recs.parquet``), against one ``Retriever.recommend(user)`` call per user on a
  sample of users. The retriever holds Gowalla's 29,858 users and 40,981 items with random
  float32 vectors (d = 64, seeded, cosine, exact ``Flat`` index) and the real seen items
  (train + valid, excluded from the results): the search does the same work whatever the
  vectors hold, so training would not change the speed.
* ``http``: latency p50 / p99, requests per second, errors and server memory of
  ``lit-matching serve`` on localhost for a known user, a fresh 50-item history through a GRU
  tower and a cold user, at about 40k items (``Flat``) and 1M items (IVF), 1 and 8 clients
  (see ``scripts/_serving_http.py``).

Every subcommand sets its thread count explicitly (``--threads``: FAISS's OpenMP threads) and
prints the command, the machine and the date. Usage::

    OMP_NUM_THREADS=2 python scripts/bench_serving.py batch [--data-dir ../shared/data]
        [--k 20] [--threads 2] [--sample 2000] [--chunk-sizes 16384] [--repeats 3] [--seed 0]
    python scripts/bench_serving.py http [--duration 60] [--items 40000 1000000] [--clients 1 8]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import _serving_http  # the http subcommand (this script's folder is on sys.path)
import numpy as np
from bench_data import cpu_model  # this script's folder is on sys.path

if TYPE_CHECKING:
    from lit_matching.serving.retriever import Retriever

ROOT = Path(__file__).resolve().parents[1]
DIM = 64
#: Goals of issue 15 for the batch path.
BATCH_GOAL_S = 10.0
SPEED_UP_GOAL = 5.0


# ---------------------------------------------------------------------------- shared helpers
def set_threads(threads: int) -> None:
    """FAISS's OpenMP threads (the search); torch, if a subcommand imported it, too."""
    import faiss

    faiss.omp_set_num_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def describe_run(threads: int) -> str:
    """The command, the machine, the software, the threads and the date of this run."""
    import faiss
    import pandas as pd
    import pyarrow as pa

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    return (
        f"command: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} {command}\n"
        f"machine: {cpu_model()}, {os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.2f}; python {platform.python_version()}, faiss "
        f"{faiss.__version__}, numpy {np.__version__}, pandas {pd.__version__}, pyarrow "
        f"{pa.__version__}; FAISS threads {faiss.omp_get_max_threads()} (asked {threads})\n"
        f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    )


def timed(function: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``function``."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return seconds


def goal(met: bool, text: str) -> str:
    return f"{'met' if met else 'NOT met'}: {text}"


# ---------------------------------------------------------------------------- batch
def gowalla_retriever(data_dir: Path, seed: int) -> Retriever:
    """Gowalla's users and items, random cosine vectors, train + valid items as seen."""
    import pandas as pd

    from lit_matching.data.item_sets import ItemSets
    from lit_matching.data.readers import read_split_files
    from lit_matching.serving.retriever import Retriever

    parts = read_split_files(data_dir / "gowalla")
    seen = pd.concat([parts["train"], parts["valid"]], ignore_index=True)
    everything = pd.concat([seen, parts["test"]], ignore_index=True)
    num_users = int(everything.user_id.max()) + 1
    num_items = int(everything.item_id.max()) + 1
    rng = np.random.default_rng(seed)
    vectors = []
    for rows in (num_users, num_items):
        x = rng.standard_normal((rows, DIM), dtype=np.float32)
        vectors.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    sets = ItemSets.from_pairs(
        seen.user_id.to_numpy(), seen.item_id.to_numpy(), num_users, num_items
    )
    return Retriever(
        vectors[0],
        vectors[1],
        list(range(num_users)),
        list(range(num_items)),
        "cosine",
        sets,
        "Flat",
        use_gpu=False,
    )


def batch_command(args: argparse.Namespace) -> None:
    """All users to Parquet, against one ``recommend`` call per user on a sample."""
    import pandas as pd

    from lit_matching.serving.batch import recommend_to_parquet

    set_threads(args.threads)
    started = time.perf_counter()
    retriever = gowalla_retriever(args.data_dir, args.seed)
    seen = retriever.seen
    assert seen is not None
    print(describe_run(args.threads))
    print(
        f"gowalla: {retriever.num_users:,} users x {retriever.num_items:,} items, d = {DIM}, "
        f"random vectors (seed {args.seed}), cosine, exact Flat; {len(seen.indices):,} seen "
        f"items excluded (up to {seen.counts().max()} per user); k = {args.k}; built in "
        f"{time.perf_counter() - started:.1f} s\n",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "recs.parquet"
        batch = {}
        for chunk_size in args.chunk_sizes:
            seconds = timed(
                lambda size=chunk_size: recommend_to_parquet(
                    retriever, output, k=args.k, chunk_size=size, progress=False
                ),
                args.repeats,
            )
            batch[chunk_size] = min(seconds)
            runs = ", ".join(f"{s:.2f}" for s in seconds)
            print(f"batch, chunk size {chunk_size:,}: {runs} s", flush=True)
        written = pd.read_parquet(output)
    rng = np.random.default_rng(args.seed)
    sample = rng.choice(retriever.num_users, size=min(args.sample, retriever.num_users))
    # One query per call: FAISS's OpenMP threads cost more than they bring (wake-ups), so the
    # loop is also timed on 1 thread and the faster of the two is the one compared.
    per_call = {}
    for threads in dict.fromkeys([args.threads, 1]):
        set_threads(threads)
        started = time.perf_counter()
        frames = [retriever.recommend(int(user), k=args.k) for user in sample]
        per_call[threads] = (time.perf_counter() - started) / len(sample)
        print(
            f"one call per user, {len(sample):,} users, {threads} FAISS thread(s): "
            f"{per_call[threads] * len(sample):.2f} s",
            flush=True,
        )
    set_threads(args.threads)
    # The two paths must agree, or the comparison means nothing.
    first = written.set_index("user_id")
    for user, frame in zip(sample[:50], frames[:50], strict=True):
        assert first.loc[[int(user)], "item_id"].tolist() == frame.item_id.tolist(), user
    print()
    report_batch(batch, per_call, args.threads, retriever.num_users, len(written))


def report_batch(
    batch: dict[int, float], per_call: dict[int, float], threads: int, users: int, rows: int
) -> None:
    """The table of the ``batch`` subcommand and whether the goals are met."""
    fastest_call = min(per_call.values())
    print("| path | chunk size | FAISS threads | total s | ms per user | speed-up |")
    print("|---|---|---|---|---|---|")
    for chunk_size, seconds in batch.items():
        per_user = seconds / users
        print(
            f"| `recommend_to_parquet`, all {users:,} users ({rows:,} rows) | {chunk_size:,} "
            f"| {threads} | {seconds:.2f} | {1e3 * per_user:.3f} "
            f"| {fastest_call / per_user:.1f}x |"
        )
    for loop_threads, seconds in per_call.items():
        print(
            f"| `Retriever.recommend(user)`, one call per user | - | {loop_threads} "
            f"| {seconds * users:.1f} (projected) | {1e3 * seconds:.3f} "
            f"| {fastest_call / seconds:.2f}x |"
        )
    best = min(batch.values())
    print(goal(best < BATCH_GOAL_S, f"all {users:,} users in {best:.2f} s (< {BATCH_GOAL_S} s)"))
    ratio = fastest_call / (best / users)
    print(
        goal(
            ratio >= SPEED_UP_GOAL,
            f"{ratio:.1f}x faster per user than the faster one-call loop (>= {SPEED_UP_GOAL}x)",
        )
    )


# ---------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT.parent / "shared" / "data",
        help="folder holding gowalla/ (default: ../shared/data)",
    )
    shared.add_argument("--threads", type=int, default=2, help="FAISS threads")
    shared.add_argument("--seed", type=int, default=0, help="seed of the random vectors")
    commands = parser.add_subparsers(dest="command", required=True)
    batch = commands.add_parser(
        "batch", parents=[shared], help="all Gowalla users to Parquet vs one call per user"
    )
    batch.add_argument("--k", type=int, default=20)
    batch.add_argument("--sample", type=int, default=2000, help="users of the one-call loop")
    batch.add_argument(
        "--chunk-sizes", type=int, nargs="+", default=[16384], help="chunk sizes to time"
    )
    batch.add_argument("--repeats", type=int, default=3, help="timed runs per chunk size")
    batch.set_defaults(run=batch_command)
    http = commands.add_parser(
        "http", help="lit-matching serve on localhost: latency, requests/s, errors, memory"
    )
    _serving_http.add_arguments(http)
    http.set_defaults(run=_serving_http.run)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
