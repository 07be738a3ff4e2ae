"""Data pipeline benchmark: lit_matching against torch-rechub on the same rows.

For each data set: time and peak memory to load the log, split it (leave-last-out) and build
one epoch of list-wise training tuples with 3 sampled negatives and a 50-item history.

* lit_matching: its readers, then ``MatchingDataModule(mode="listwise", num_negatives=3,
  history_length=50)``: ``setup`` (clean, index, split, samplers) and one pass over
  ``train_dataloader()``.
* torch-rechub (PyPI, installed into a separate virtual environment created on demand):
  ``generate_seq_feature_match(mode=2, neg_ratio=3)`` (its leave-last-out split, negatives and
  history) and ``gen_model_input(seq_max_len=50)`` (padding and model-input dict), on the same
  rows, handed over as a ``.npz`` file (its load time is not counted: it has no reader for
  these formats).

Every run is a separate process, so "peak MB" is that process's maximum resident set size
(imports included: both import torch). Usage::

    python scripts/bench_data.py [--data-dir ../shared/data] [--datasets ml-100k gowalla]
                                 [--skip-rechub] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HISTORY = 50
NEGATIVES = 3
DATASETS = ("ml-100k", "ml-1m-implicit", "gowalla")
RECHUB = "torch-rechub==0.9.0"
ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def bench_trainer(**options: Any) -> Any:
    """A CPU ``pl.Trainer`` that only trains: no validation, logger, checkpoints or bars.

    ``options`` (e.g. ``max_steps``, ``callbacks``) are added to, or replace, those settings.
    """
    import pytorch_lightning as pl

    quiet = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    return pl.Trainer(**(quiet | options))


def load_log(name: str, data_dir: Path):
    """The benchmark rows of a data set with lit_matching's readers: user_id, item_id, timestamp.

    ml-100k has timestamps; the per-user-line sets use train + valid, with the line order as
    time (as their files list each user's items).
    """
    import pandas as pd

    from lit_matching.data.readers import read_interactions, read_split_files

    if name == "ml-100k":
        frame = read_interactions(data_dir / "ml-100k" / "ml-100k.inter")
        return frame[["user_id", "item_id", "timestamp"]]
    parts = read_split_files(data_dir / name)
    frame = pd.concat([parts["train"], parts["valid"]], ignore_index=True)
    return frame[["user_id", "item_id"]].assign(timestamp=np.arange(len(frame)))


def lit_worker(name: str, data_dir: Path) -> dict[str, float]:
    from lit_matching import MatchingDataModule

    started = time.perf_counter()
    frame = load_log(name, data_dir)
    loaded = time.perf_counter()
    dm = MatchingDataModule(
        mode="listwise",
        interactions=frame,
        num_negatives=NEGATIVES,
        history_length=HISTORY,
        batch_size=1024,
    )
    dm.setup("fit")
    split = time.perf_counter()
    rows = 0
    for batch in dm.train_dataloader():
        rows += len(batch["users"])
    built = time.perf_counter()
    assert batch["history"].shape[1] == HISTORY and batch["neg_items"].shape[1] == NEGATIVES
    return {
        "load_s": loaded - started,
        "split_s": split - loaded,
        "tuples_s": built - split,
        "total_s": built - started,
        "rows": rows,
        "peak_mb": peak_mb(),
    }


def rechub_worker(npz: Path) -> dict[str, float]:
    import pandas as pd
    from torch_rechub.utils.match import gen_model_input, generate_seq_feature_match

    started = time.perf_counter()
    arrays = np.load(npz)
    frame = pd.DataFrame({key: arrays[key] for key in ("user_id", "item_id", "timestamp")})
    loaded = time.perf_counter()
    train, _ = generate_seq_feature_match(
        frame, "user_id", "item_id", time_col="timestamp", mode=2, neg_ratio=NEGATIVES
    )
    split = time.perf_counter()
    users = pd.DataFrame({"user_id": frame.user_id.unique()})
    items = pd.DataFrame({"item_id": frame.item_id.unique()})
    model_input = gen_model_input(train, users, "user_id", items, "item_id", seq_max_len=HISTORY)
    built = time.perf_counter()
    return {
        "load_s": loaded - started,
        "split_s": split - loaded,
        "tuples_s": built - split,
        "total_s": built - started,
        "rows": len(model_input["user_id"]),
        "peak_mb": peak_mb(),
    }


def rechub_python(venv: Path) -> Path | None:
    """The venv's python with torch-rechub, creating the venv on first use."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    import torch

    print(f"creating {venv} with {RECHUB} ...", flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        # The same torch as here (a CPU wheel stays a CPU wheel), then torch-rechub.
        [str(python), "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}"],
        [str(python), "-m", "pip", "install", "-q", RECHUB],
    ]
    for step in steps:
        if subprocess.run(step).returncode != 0:
            print(f"could not install torch-rechub ({' '.join(step)} failed): skipping it")
            return None
    return python


def run_worker(command: list[str], timeout: float) -> dict[str, float] | str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return f"did not finish in {timeout:.0f} s"
    if done.returncode != 0:
        return f"failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--skip-rechub", action="store_true")
    parser.add_argument("--venv", type=Path, default=ROOT / ".bench" / "rechub-venv")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--worker", choices=("lit", "rechub"), help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--npz", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "lit":
        print(json.dumps(lit_worker(args.dataset, args.data_dir)))
        return
    if args.worker == "rechub":
        print(json.dumps(rechub_worker(args.npz)))
        return

    rechub = None if args.skip_rechub else rechub_python(args.venv)
    script = str(Path(__file__).resolve())
    results: list[tuple[str, str, dict[str, float] | str]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets:
            frame = load_log(name, args.data_dir)
            npz = Path(scratch) / f"{name}.npz"
            # String ids (RecBole tokens) as a fixed-width unicode array: no pickling needed.
            columns = {col: frame[col].to_numpy() for col in frame.columns}
            np.savez(
                npz, **{k: v.astype(str) if v.dtype == object else v for k, v in columns.items()}
            )
            print(f"{name}: {len(frame):,} rows", flush=True)
            lit = run_worker(
                [
                    sys.executable,
                    script,
                    "--worker",
                    "lit",
                    "--dataset",
                    name,
                    "--data-dir",
                    str(args.data_dir),
                ],
                args.timeout,
            )
            results.append((name, "lit_matching", lit))
            print(f"  lit_matching: {lit}", flush=True)
            if rechub is not None:
                other = run_worker(
                    [str(rechub), script, "--worker", "rechub", "--npz", str(npz)], args.timeout
                )
                results.append((name, "torch-rechub", other))
                print(f"  torch-rechub: {other}", flush=True)

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs; one process per run; "
        f"list-wise tuples, {NEGATIVES} negatives, history {HISTORY}"
    )
    print(
        f"{'data set':<16}{'library':<14}{'load s':>8}{'split s':>9}{'tuples s':>10}"
        f"{'total s':>9}{'rows':>11}{'peak MB':>9}"
    )
    for name, library, result in results:
        if isinstance(result, str):
            print(f"{name:<16}{library:<14}{result}")
            continue
        print(
            f"{name:<16}{library:<14}{result['load_s']:>8.2f}{result['split_s']:>9.2f}"
            f"{result['tuples_s']:>10.2f}{result['total_s']:>9.2f}{result['rows']:>11,}"
            f"{result['peak_mb']:>9.0f}"
        )
    by_key = {(n, lib): r for n, lib, r in results}
    for name in args.datasets:
        lit, other = by_key.get((name, "lit_matching")), by_key.get((name, "torch-rechub"))
        if isinstance(lit, dict) and isinstance(other, dict):
            theirs = other["split_s"] + other["tuples_s"]
            ours = lit["split_s"] + lit["tuples_s"]
            print(
                f"{name}: split + tuples {theirs:.2f} s vs {ours:.2f} s: lit_matching "
                f"{theirs / ours:.1f}x faster; peak {other['peak_mb']:.0f} MB vs "
                f"{lit['peak_mb']:.0f} MB"
            )


if __name__ == "__main__":
    main()
