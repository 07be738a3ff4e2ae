"""Scale benchmark (issue 16): preparing, training and evaluating as the log grows.

Synthetic power-law logs (generated here, never stored in the repository): item ids Zipf 1.3
over ``--items`` (as ``bench_log_growth.py``), one user per 20 interactions whose activity
follows a bounded power law (exponent ``--user-exponent``, default 0.6: the top 1 % of users
hold about 15 % of the log, every user is active), timestamps in log order. Logs of at least
10 interactions per item also hold every item once (the first of every ``interactions //
items`` rows), so the catalogue, and with it the model, is the same at every size. Subcommands:

* ``generate``: ``DIR/log_<n>.parquet`` (int64 ``user_id``, ``item_id``, ``timestamp``),
  written chunk by chunk with ``pyarrow.parquet.ParquetWriter`` (bounded memory).
* ``prepare``: ``lit-matching prepare DIR/log_<n>.parquet --output DIR/prepared_<n>`` per size
  (``--via python``: ``prepare_shards`` called directly), each in a fresh process: wall time and
  that process's peak RSS (``os.wait4``).
* ``train``: list-wise training, each size and path in a fresh process, streaming
  (``interactions=DIR/prepared_<n>``) and in memory (the Parquet file); a
  ``HistoryPoolingTower`` (mean of the last 20 items) sharing the ``IDEmbeddingTower`` item
  table, d = 64, batch 1024, 8 negatives: nothing grows with the users. Samples/s after
  ``--warmup`` steps, RSS after ``setup``, peak RSS, bytes per interaction.
* ``catalogue``: samples/s, dense against sparse tables, at 10k / 100k / 1M items
  (``bench_scaling.py``'s training part).
* ``eval``: the evaluation's wall time with 1 and 2 CPU ranks (``bench_sharded_eval.py``).
* ``plot``: ``scale_prepare.png`` and ``scale_training.png`` from the results file.

Each subcommand appends its rows to ``--results`` (JSON) and prints a markdown table; every
process runs ``--threads`` threads (``OMP_NUM_THREADS``, ``torch.set_num_threads``). Usage::

    python scripts/bench_scale.py generate --sizes 1e6 1e7 5e7 --out DIR [--items 1000000]
        [--user-exponent 0.6] [--chunk-rows 2000000] [--seed 0]
    python scripts/bench_scale.py prepare --sizes 1e6 1e7 5e7 --data DIR [--history-length 20]
        [--via cli|python]
    python scripts/bench_scale.py train --sizes 1e6 1e7 5e7 --data DIR [--steps 300]
        [--warmup 20] [--paths streaming memory] [--embeddings sparse dense]
    python scripts/bench_scale.py catalogue [--items 10000 100000 1000000]
        [--embeddings dense sparse] [--steps 200] [--warmup 10]
    python scripts/bench_scale.py eval [--data-dir ../shared/data] [--ranks 1 2] [--repeats 3]
    python scripts/bench_scale.py plot [--out-dir docs/img]

Common options: ``--threads 1``, ``--results bench_scale_results.json`` (in the working
directory), ``--timeout 7200`` (seconds per measured process).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from bench_data import ROOT, cpu_model  # this script's folder is on sys.path
from bench_log_growth import zipf_items

USERS_PER = 20  # interactions per user
HISTORY, DIM, BATCH, NEGATIVES = 20, 64, 1024, 8
PREPARE_IN_PYTHON = (  # ``prepare --via python``: the library call without the CLI
    "import sys; from lit_matching.data.prepare import prepare_shards; "
    "prepare_shards(sys.argv[1], sys.argv[2], history_length=int(sys.argv[3]), progress=False)"
)


# ---------------------------------------------------------------------------- results
def save_rows(path: Path, bench: str, rows: Iterable[dict[str, Any]], threads: int) -> None:
    """Append ``rows`` (tagged with the subcommand, threads, date, command) to the JSON file."""
    stored = json.loads(path.read_text()) if path.exists() else []
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    command = " ".join(sys.argv)
    stored += [dict(row, bench=bench, threads=threads, date=stamp, command=command) for row in rows]
    path.write_text(json.dumps(stored, indent=1))


def footer(threads: int) -> None:
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(
        f"\nmachine: {cpu_model()}, {os.cpu_count()} cores; {threads} thread(s) per process "
        f"(OMP_NUM_THREADS, torch.set_num_threads); {stamp}\n"
        f"command: python {' '.join(sys.argv)}"
    )


def table(columns: list[tuple[str, str, str]], rows: Iterable[dict[str, Any]]) -> str:
    """A markdown table: ``columns`` are ``(header, key, format spec)``, numbers right-aligned."""
    rule = "|" + "".join("---:|" if spec else "---|" for _, _, spec in columns)
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", rule]
    for row in rows:
        lines.append("| " + " | ".join(format(row[k], spec) for _, k, spec in columns) + " |")
    return "\n".join(lines)


def growth(rows: list[dict[str, Any]], field: str) -> str:
    """Bytes per interaction and relative growth of ``field`` (MB) between the two largest logs."""
    by_size = {row["interactions"]: row[field] for row in rows}
    if len(by_size) < 2:
        return "fewer than two sizes: no growth"
    small, large = sorted(by_size)[-2:]
    extra = (by_size[large] - by_size[small]) * 2**20 / (large - small)
    change = by_size[large] / by_size[small] - 1
    return f"{small:,} -> {large:,}: {extra:,.1f} bytes per interaction, {change:+.0%}"


# ---------------------------------------------------------------------------- generate
def user_ranks(rng: np.random.Generator, size: int, users: int, exponent: float) -> np.ndarray:
    """``size`` ranks in ``[0, users)``, density ``~ (rank + 1) ** -exponent`` (inverse CDF)."""
    top = (users + 1.0) ** (1.0 - exponent)
    x = ((top - 1.0) * rng.random(size) + 1.0) ** (1.0 / (1.0 - exponent))
    return np.minimum(x.astype(np.int64) - 1, users - 1)


def write_log(path: Path, interactions: int, args: argparse.Namespace) -> dict[str, Any]:
    """One synthetic log as Parquet, ``args.chunk_rows`` rows at a time; its statistics."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(args.seed)
    users = max(interactions // USERS_PER, 1)
    # With 10+ interactions per item, every item appears once at the first of every `stride`
    # rows, so each log has the whole catalogue and the model is the same size at every size.
    stride = interactions // args.items if interactions >= 10 * args.items else 0
    catalogue = rng.permutation(args.items)
    ids = rng.permutation(users)  # the heaviest users spread over the ids
    activity = np.zeros(users, dtype=np.int64)
    schema = pa.schema([(name, pa.int64()) for name in ("user_id", "item_id", "timestamp")])
    partial = path.with_suffix(".partial")
    with pq.ParquetWriter(partial, schema) as writer:
        for start in range(0, interactions, args.chunk_rows):
            rows = min(args.chunk_rows, interactions - start)
            ranks = user_ranks(rng, rows, users, args.user_exponent)
            activity += np.bincount(ranks, minlength=users)
            items = zipf_items(rng, rows, args.items)
            if stride:
                first = -(-start // stride) * stride
                at = np.arange(first, start + rows, stride)
                at = at[at // stride < args.items]
                items[at - start] = catalogue[at // stride]
            columns = [ids[ranks], items, np.arange(start, start + rows)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
    partial.replace(path)  # a run cut short leaves no log that looks complete
    top = np.sort(activity)[-max(users // 100, 1) :]
    return {
        "interactions": interactions,
        "users": int((activity > 0).sum()),
        "max_per_user": int(activity.max()),
        "top_1pct_share": float(top.sum() / interactions),
        "megabytes": path.stat().st_size / 2**20,
    }


def generate(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        started = time.perf_counter()
        row = write_log(args.out / f"log_{size}.parquet", size, args)
        rows.append(dict(row, seconds=time.perf_counter() - started, items=args.items))
        print(f"  log_{size}.parquet: {row['megabytes']:,.0f} MB", flush=True)
    save_rows(args.results, "generate", rows, args.threads)
    columns = [("interactions", "interactions", ","), ("users", "users", ",")]
    columns += [("max per user", "max_per_user", ","), ("top 1 % share", "top_1pct_share", ".0%")]
    columns += [("MB", "megabytes", ",.0f"), ("seconds", "seconds", ".1f")]
    print(table(columns, rows))


# ---------------------------------------------------------------------------- measured processes
def run_measured(command: list[str], threads: int, timeout: float) -> dict[str, Any]:
    """Run ``command``; its wall time, its own peak RSS (``os.wait4``), exit code and output.

    The orchestrating process imports neither torch nor pandas for ``prepare`` and ``train``,
    so the child's peak (which on Linux starts from the parent's at the fork) is its own.
    """
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=ROOT)
        killer = threading.Timer(timeout, child.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            killer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        wall, peak = time.perf_counter() - started, usage.ru_maxrss / 1024  # kB on Linux
        out.seek(0)
        err.seek(0)
        done = {"returncode": child.returncode, "wall_s": wall, "peak_mb": peak}
        return dict(done, stdout=out.read(), stderr=err.read()[-3000:])


def checked(done: dict[str, Any], what: str) -> bool:
    if done["returncode"] == 0:
        return True
    print(f"  {what}: failed (exit {done['returncode']}):\n{done['stderr']}", flush=True)
    return False


# ---------------------------------------------------------------------------- prepare
def prepare(args: argparse.Namespace) -> None:
    rows = []
    for size in args.sizes:
        output = args.data / f"prepared_{size}"
        shutil.rmtree(output, ignore_errors=True)  # a fresh output every time
        log, length = str(args.data / f"log_{size}.parquet"), str(args.history_length)
        if args.via == "cli":
            command = [sys.executable, "-m", "lit_matching.cli", "prepare", log]
            command += ["--output", str(output), "--history-length", length, "--no-progress"]
        else:
            command = [sys.executable, "-c", PREPARE_IN_PYTHON, log, str(output), length]
        done = run_measured(command, args.threads, args.timeout)
        if not checked(done, f"prepare {size:,}"):
            continue
        written = sum(f.stat().st_size for f in output.rglob("*") if f.is_file()) / 2**20
        row = {"interactions": size, "seconds": done["wall_s"], "peak_mb": done["peak_mb"]}
        rows.append(dict(row, output_mb=written))
        print(f"  prepare {size:,}: {done['wall_s']:.1f} s, {done['peak_mb']:,.0f} MB", flush=True)
    save_rows(args.results, "prepare", rows, args.threads)
    how = "`lit-matching prepare`" if args.via == "cli" else "`prepare_shards`"
    print(f"\n### {how}, history length {args.history_length}\n")
    columns = [("interactions", "interactions", ","), ("wall s", "seconds", ".1f")]
    columns += [("peak RSS MB", "peak_mb", ",.0f"), ("shards MB", "output_mb", ",.0f")]
    print(table(columns, rows))
    print(f"\npeak RSS growth, {growth(rows, 'peak_mb')}")
    footer(args.threads)


# ---------------------------------------------------------------------------- train
def train_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One training run in this process (the ``train`` subcommand's child)."""
    import pytorch_lightning as pl
    import torch
    from bench_data import bench_trainer, peak_mb
    from bench_scaling import StepTimer

    import lit_matching as lm

    torch.set_num_threads(args.threads)
    size, path = args.sizes[0], args.paths[0]
    name = f"prepared_{size}" if path == "streaming" else f"log_{size}.parquet"
    started = time.perf_counter()
    data = lm.MatchingDataModule(
        mode="listwise",
        interactions=args.data / name,
        history_length=HISTORY,
        batch_size=BATCH,
        num_negatives=NEGATIVES,
        progress=False,
    )
    data.setup("fit")
    setup_s, setup_mb = time.perf_counter() - started, peak_mb()
    pl.seed_everything(0, verbose=False)
    items = lm.IDEmbeddingTower(data.num_items, DIM)
    # The user tower pools the item table: nothing in the model grows with the users.
    users = lm.HistoryPoolingTower(data.num_items, DIM, item_embedding=items.embedding)
    model = lm.ListwiseMatching(users, items, sparse_embeddings=args.embeddings == ["sparse"])
    timer = StepTimer(args.warmup, args.steps, profile_steps=0)
    trainer = bench_trainer(max_steps=args.warmup + args.steps, callbacks=[timer])
    trainer.fit(model, data)
    if not timer.elapsed:
        raise SystemExit(f"training stopped at step {trainer.global_step}, before the timed end")
    return {
        "interactions": size,
        "path": path,
        "embeddings": args.embeddings[0],
        "users": data.num_users,
        "items": data.num_items,
        "setup_s": setup_s,
        "setup_mb": setup_mb,
        "samples_per_s": args.steps * BATCH / timer.elapsed,
        "torch_threads": torch.get_num_threads(),
    }


def train(args: argparse.Namespace) -> None:
    rows = []
    runs = [(p, e, s) for p in args.paths for e in args.embeddings for s in args.sizes]
    for path, kind, size in runs:
        command = [sys.executable, str(Path(__file__).resolve()), "train-worker"]
        command += ["--sizes", str(size), "--data", str(args.data), "--paths", path]
        command += ["--embeddings", kind, "--steps", str(args.steps)]
        command += ["--warmup", str(args.warmup), "--threads", str(args.threads)]
        done = run_measured(command, args.threads, args.timeout)
        if not checked(done, f"train {path} {kind} {size:,}"):
            continue
        row = json.loads(done["stdout"].strip().splitlines()[-1])
        rows.append(dict(row, peak_mb=done["peak_mb"], wall_s=done["wall_s"]))
        print(
            f"  {path}, {kind}, {size:,}: {row['samples_per_s']:,.0f} samples/s, "
            f"peak {done['peak_mb']:,.0f} MB",
            flush=True,
        )
    save_rows(args.results, "train", rows, args.threads)
    print_training(rows, args)


def print_training(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n### Training: ListwiseMatching, HistoryPoolingTower (last {HISTORY} items, mean) "
        f"sharing the ID item tower's table, d = {DIM}, batch {BATCH}, {NEGATIVES} negatives; "
        f"{args.steps} steps timed after {args.warmup}\n"
    )
    columns = [("path", "path", ""), ("embeddings", "embeddings", "")]
    columns += [(name, name, ",") for name in ("interactions", "users", "items")]
    columns += [("setup s", "setup_s", ".1f"), ("RSS after setup MB", "setup_mb", ",.0f")]
    columns += [("peak RSS MB", "peak_mb", ",.0f"), ("samples/s", "samples_per_s", ",.0f")]
    print(table(columns, rows))
    print()
    for key, part in grouped(rows, ("path", "embeddings")).items():
        print(f"- {', '.join(key)}: peak RSS {growth(part, 'peak_mb')}")
    footer(args.threads)


def grouped(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


# ---------------------------------------------------------------------------- catalogue, eval
def catalogue(args: argparse.Namespace) -> None:
    """``bench_scaling.py``'s training part: dense against sparse tables by catalogue size."""
    import bench_scaling

    config = bench_scaling.Config(
        items=args.items, users=args.users, interactions=args.interactions, steps=args.steps,
        warmup=args.warmup, threads=args.threads, timeout=args.timeout,
        query_users=0, grid_users=[], max_gflop=0.0, hnsw_max_items=0, spread=1.5,  # no search
    )  # fmt: skip
    rows = bench_scaling.run_training(config, args.embeddings)
    save_rows(args.results, "catalogue", rows, args.threads)
    bench_scaling.print_training(rows, config)
    footer(args.threads)


def evaluate(args: argparse.Namespace) -> None:
    """``bench_sharded_eval.py``: ``RetrievalEvaluator`` with 1 and 2 CPU DDP ranks."""
    import bench_sharded_eval

    started = time.perf_counter()
    results = [bench_sharded_eval.run(ranks, args) for ranks in args.ranks]
    bench_sharded_eval.report(results, args, time.perf_counter() - started)
    save_rows(args.results, "eval", results, args.threads)


# ---------------------------------------------------------------------------- plot
def curve(axis: Any, rows: list[dict[str, Any]], field: str, best: Callable, **style: Any) -> None:
    """``field`` against log size, the best of the repeats per size."""
    sizes = sorted({row["interactions"] for row in rows})
    values = [best(r[field] for r in rows if r["interactions"] == n) for n in sizes]
    axis.plot(sizes, values, "o-", **style)


def plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stored = json.loads(args.results.read_text())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    prepared = [row for row in stored if row["bench"] == "prepare"]
    trained = [row for row in stored if row["bench"] == "train"]
    figures = []
    if prepared:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        curve(left, prepared, "seconds", min)
        curve(right, prepared, "peak_mb", min)
        left.set(ylabel="wall time, s", title="prepare: time")
        right.set(ylabel="peak RSS, MB", title="prepare: memory")
        figures.append((fig, "scale_prepare.png"))
    if trained:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        for (path, kind), part in grouped(trained, ("path", "embeddings")).items():
            curve(left, part, "peak_mb", min, label=f"{path}, {kind}")
            curve(right, part, "samples_per_s", max, label=f"{path}, {kind}")
        left.set(ylabel="peak RSS while training, MB", title="training: memory")
        right.set(ylabel="training samples/s", title="training: throughput")
        left.legend(fontsize=8)
        figures.append((fig, "scale_training.png"))
    for fig, name in figures:
        for axis in fig.axes:
            axis.set(xscale="log", xlabel="log size (interactions)")
            axis.set_ylim(bottom=0)
            axis.grid(alpha=0.3, which="both")
        fig.tight_layout()
        fig.savefig(args.out_dir / name, dpi=100)
        plt.close(fig)
        print(f"plot: {args.out_dir / name}")
    if not figures:
        raise SystemExit(f"no prepare or train rows in {args.results}")


# ---------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=1, help="threads per process")
    common.add_argument("--results", type=Path, default=Path("bench_scale_results.json"))
    common.add_argument("--timeout", type=float, default=7200.0, help="seconds per process")
    sizes = argparse.ArgumentParser(add_help=False)
    sizes.add_argument("--sizes", type=lambda s: int(float(s)), nargs="+", default=[10**6])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", parents=[common, sizes])
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--items", type=int, default=1_000_000)
    gen.add_argument("--user-exponent", type=float, default=0.6)
    gen.add_argument("--chunk-rows", type=int, default=2_000_000)
    gen.add_argument("--seed", type=int, default=0)
    prep = commands.add_parser("prepare", parents=[common, sizes])
    prep.add_argument("--data", type=Path, required=True)
    prep.add_argument("--history-length", type=int, default=HISTORY)
    prep.add_argument("--via", choices=["cli", "python"], default="cli", help="how to prepare")
    for name in ("train", "train-worker"):
        fit = commands.add_parser(name, parents=[common, sizes])
        fit.add_argument("--data", type=Path, required=True)
        fit.add_argument("--steps", type=int, default=300, help="timed steps")
        fit.add_argument("--warmup", type=int, default=20, help="untimed steps first")
        fit.add_argument("--paths", nargs="+", choices=["streaming", "memory"])
        fit.add_argument("--embeddings", nargs="+", choices=["sparse", "dense"])
        fit.set_defaults(paths=["streaming", "memory"], embeddings=["sparse"])
    cat = commands.add_parser("catalogue", parents=[common])
    cat.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    cat.add_argument("--embeddings", nargs="+", default=["dense", "sparse"])
    cat.add_argument("--users", type=int, default=50_000)
    cat.add_argument("--interactions", type=int, default=1_000_000)
    cat.add_argument("--steps", type=int, default=200)
    cat.add_argument("--warmup", type=int, default=10)
    ev = commands.add_parser("eval", parents=[common])
    ev.add_argument("--data-dir", type=Path, help="folder holding gowalla/ (else synthetic)")
    ev.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ev.add_argument("--repeats", type=int, default=3)
    show = commands.add_parser("plot", parents=[common])
    show.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    for name in ("data", "out", "data_dir", "results", "out_dir"):  # children run in ROOT
        if getattr(args, name, None) is not None:
            setattr(args, name, getattr(args, name).resolve())
    return args


def main() -> None:
    args = parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # children inherit it
    if args.command == "train-worker":
        print(json.dumps(train_worker(args)))
        return
    print(f"# {args.command}: {args.threads} thread(s) per process", flush=True)
    handlers = {"generate": generate, "prepare": prepare, "train": train}
    handlers |= {"catalogue": catalogue, "eval": evaluate, "plot": plot}
    handlers[args.command](args)


if __name__ == "__main__":
    main()
