"""Evaluation benchmark: full-catalogue top-K with seen-item filtering, exact and approximate.

On the Gowalla split (train + valid items are "seen" and excluded, test items are the
targets), with Gowalla-sized embeddings (random, seeded and L2-normalised by default, or
``--embeddings DIR`` holding ``user_embeddings.npy`` and ``item_embeddings.npy``):

* lit_matching exact: ``build_index(items, "l2", "Flat")`` + ``search_top_k(..., exclude=seen)``
  (and, for reference, the same search without ``exclude``);
* lit_matching approximate: ``"HNSW32"`` (efSearch 128, 256) and ``"IVF1024,Flat"`` (nprobe 16,
  64), also with ``exclude=seen``; "vs exact" is the mean overlap of their top-K with the exact
  top-K;
* torch-rechub's evaluation approach: an Annoy index (``AnnoyIndex(d, "angular")``, 10 trees,
  the defaults of ``torch_rechub.utils.match.Annoy``) and one ``get_nns_by_vector(user, K)``
  call per user in a Python loop, without seen-item filtering. It runs in the torch-rechub
  virtual environment of ``bench_data.py`` (created on demand, ``annoy`` added), fed through
  ``.npy`` files; its top-K is compared with the exact filtered and unfiltered top-K.

Every side gets the same number of threads (``--threads``): FAISS through
``faiss.omp_set_num_threads``, Annoy's index build through ``n_jobs``; Annoy's query loop is
single-threaded, as in torch-rechub. Usage::

    python scripts/bench_eval.py [--data-dir ../shared/data] [--embeddings DIR] [--k 20]
                                 [--threads 2] [--seed 0] [--users N] [--skip-rechub]
                                 [--timeout 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from bench_data import ROOT, rechub_python, run_worker

if TYPE_CHECKING:
    from lit_matching.data.item_sets import ItemSets

DIM = 64
ANNOY_TREES = 10  # torch_rechub.utils.match.Annoy(n_trees=10, search_k=-1)
APPROXIMATE = {
    "HNSW32": ("efSearch", (128, 256)),
    "IVF1024,Flat": ("nprobe", (16, 64)),
}


@dataclass
class Row:
    """One line of the result table."""

    method: str
    build_s: float
    search_s: float
    top: np.ndarray = field(repr=False)
    vs_exact: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------- data
def load_split(data_dir: Path) -> tuple[ItemSets, ItemSets]:
    """Seen items (train + valid) and test targets of Gowalla as per-user :class:`ItemSets`."""
    import pandas as pd

    from lit_matching.data.item_sets import ItemSets
    from lit_matching.data.readers import read_split_files

    parts = read_split_files(data_dir / "gowalla")
    seen = pd.concat([parts["train"], parts.get("valid")], ignore_index=True)
    test = parts["test"]
    num_users = int(max(seen.user_id.max(), test.user_id.max())) + 1
    num_items = int(max(seen.item_id.max(), test.item_id.max())) + 1

    def sets(frame: pd.DataFrame) -> ItemSets:
        return ItemSets.from_pairs(
            frame.user_id.to_numpy(), frame.item_id.to_numpy(), num_users, num_items
        )

    return sets(seen), sets(test)


def normalised(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embeddings(
    directory: Path | None, num_users: int, num_items: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised ``(users, items)`` vectors: loaded from ``directory`` or random."""
    if directory is None:
        rng = np.random.default_rng(seed)
        users = rng.standard_normal((num_users, DIM), dtype=np.float32)
        items = rng.standard_normal((num_items, DIM), dtype=np.float32)
    else:
        users = np.load(directory / "user_embeddings.npy")
        items = np.load(directory / "item_embeddings.npy")
        if users.shape[0] != num_users or items.shape[0] != num_items:
            raise SystemExit(
                f"{directory}: {users.shape[0]} users x {items.shape[0]} items, but the split "
                f"has {num_users} x {num_items}"
            )
    return normalised(users), normalised(items)


# ---------------------------------------------------------------------------- lit_matching
def overlap(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row's exact items (``-1`` = none) that ``found`` also holds."""
    valid = exact >= 0
    shared = ((found[:, :, None] == exact[:, None, :]) & valid[:, None, :]).any(1)
    return float((shared.sum(1) / np.maximum(valid.sum(1), 1)).mean())


def exact_rows(users: np.ndarray, items: np.ndarray, seen: ItemSets, k: int) -> tuple[Row, Row]:
    """Exact top-k with and without the seen items."""
    from lit_matching.retrieval.search import build_index, search_top_k

    rows = []
    for exclude, name in ((seen, "lit exact Flat, filtered"), (None, "lit exact Flat, no filter")):
        started = time.perf_counter()
        index = build_index(items, "l2", "Flat", use_gpu=False)
        built = time.perf_counter()
        top, _ = search_top_k(index, users, k, exclude=exclude)
        rows.append(Row(name, built - started, time.perf_counter() - built, top))
    return rows[0], rows[1]


def approximate_rows(
    users: np.ndarray, items: np.ndarray, seen: ItemSets, k: int, exact: np.ndarray
) -> list[Row]:
    """One row per (index, search parameter); each index is built once per spec."""
    import faiss

    from lit_matching.retrieval.search import build_index, search_top_k

    rows = []
    for spec, (param, values) in APPROXIMATE.items():
        started = time.perf_counter()
        index = build_index(items, "l2", spec, {param: values[0]}, use_gpu=False)
        build_s = time.perf_counter() - started
        for value in values:
            faiss.ParameterSpace().set_index_parameter(index, param, value)
            started = time.perf_counter()
            top, _ = search_top_k(index, users, k, exclude=seen)
            search_s = time.perf_counter() - started
            row = Row(f"lit {spec} {param}={value}", build_s, search_s, top, overlap(top, exact))
            rows.append(row)
            print(f"  {row.method}: {search_s:.2f} s, vs exact {row.vs_exact:.4f}", flush=True)
    return rows


# ---------------------------------------------------------------------------- torch-rechub
def annoy_worker(users: Path, items: Path, out: Path, k: int, threads: int) -> dict[str, float]:
    """torch-rechub's Annoy loop: build, then one unfiltered query per user; ids to ``out``."""
    import annoy

    user_vectors, item_vectors = np.load(users), np.load(items)
    started = time.perf_counter()
    index = annoy.AnnoyIndex(item_vectors.shape[1], "angular")
    for i, vector in enumerate(item_vectors):
        index.add_item(i, vector)
    index.build(ANNOY_TREES, n_jobs=threads)
    built = time.perf_counter()
    top = np.full((len(user_vectors), k), -1, dtype=np.int64)
    for u, vector in enumerate(user_vectors):
        found = index.get_nns_by_vector(vector, k)
        top[u, : len(found)] = found
    searched = time.perf_counter()
    np.save(out, top)
    return {"build_s": built - started, "search_s": searched - built}


def annoy_python(venv: Path) -> Path | None:
    """The torch-rechub venv's python with ``annoy`` importable (installed on first use)."""
    python = rechub_python(venv)
    if python is None:
        return None
    check = [str(python), "-c", "import annoy"]
    if subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"installing annoy into {venv} ...", flush=True)
    if subprocess.run([str(python), "-m", "pip", "install", "-q", "annoy"]).returncode != 0:
        print("could not install annoy: skipping torch-rechub's Annoy loop")
        return None
    return python


def annoy_row(
    python: Path, users: np.ndarray, items: np.ndarray, args: argparse.Namespace
) -> Row | str:
    with tempfile.TemporaryDirectory() as scratch:
        paths = {name: Path(scratch) / f"{name}.npy" for name in ("users", "items", "top")}
        np.save(paths["users"], users)
        np.save(paths["items"], items)
        command = [str(python), str(Path(__file__).resolve()), "--worker"]
        command += [str(paths[name]) for name in ("users", "items", "top")]
        command += ["--k", str(args.k), "--threads", str(args.threads)]
        result = run_worker(command, args.timeout)
        if isinstance(result, str):
            return result
        top = np.load(paths["top"])
    return Row("rechub Annoy loop, no filter", result["build_s"], result["search_s"], top)


# ---------------------------------------------------------------------------- report
def print_table(rows: list[Row], k: int) -> None:
    print(
        f"{'method':<34}{'build s':>9}{'search s':>10}{'total s':>9}{'vs exact':>10}"
        f"{f'Recall@{k}':>11}{f'NDCG@{k}':>10}"
    )
    for row in rows:
        vs_exact = f"{row.vs_exact:.4f}" if row.vs_exact is not None else "-"
        print(
            f"{row.method:<34}{row.build_s:>9.2f}{row.search_s:>10.2f}"
            f"{row.build_s + row.search_s:>9.2f}{vs_exact:>10}"
            f"{row.metrics[f'recall@{k}']:>11.5f}{row.metrics[f'ndcg@{k}']:>10.5f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--embeddings", type=Path, help="folder with user/item_embeddings.npy")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="FAISS and Annoy-build threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random embeddings")
    parser.add_argument("--users", type=int, help="evaluate only the first N users (trials)")
    parser.add_argument("--skip-rechub", action="store_true")
    parser.add_argument("--venv", type=Path, default=ROOT / ".bench" / "rechub-venv")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for Annoy")
    parser.add_argument("--worker", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(annoy_worker(*args.worker, args.k, args.threads)))
        return

    import faiss

    from lit_matching.retrieval.metrics import hit_matrix, retrieval_metrics

    faiss.omp_set_num_threads(args.threads)
    seen, targets = load_split(args.data_dir)
    users, items = embeddings(args.embeddings, seen.num_rows, seen.num_items, args.seed)
    if args.users is not None:
        first = np.arange(min(args.users, len(users)))
        users, seen, targets = users[first], seen.select(first), targets.select(first)
    source = args.embeddings or f"random normal, seed {args.seed}"
    print(
        f"gowalla: {len(users):,} users x {len(items):,} items, d = {items.shape[1]} "
        f"({source}); {len(seen.indices):,} seen (train + valid), "
        f"{len(targets.indices):,} test pairs; cosine (L2-normalised, L2 index)",
        flush=True,
    )

    exact, unfiltered = exact_rows(users, items, seen, args.k)
    exact.vs_exact, unfiltered.vs_exact = 1.0, overlap(unfiltered.top, exact.top)
    print(f"  exact: {exact.build_s + exact.search_s:.2f} s", flush=True)
    rows = [exact, unfiltered, *approximate_rows(users, items, seen, args.k, exact.top)]

    python = None if args.skip_rechub else annoy_python(args.venv)
    annoy: Row | str | None = None
    if python is not None:
        annoy = annoy_row(python, users, items, args)
        if isinstance(annoy, Row):
            annoy.vs_exact = overlap(annoy.top, exact.top)
            rows.append(annoy)

    for row in rows:
        hits = hit_matrix(row.top, targets)
        row.metrics = retrieval_metrics(hits, targets.counts(), ks=[args.k])
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs; faiss {faiss.__version__}, "
        f"faiss.omp_get_max_threads() = {faiss.omp_get_max_threads()}; Annoy build "
        f"n_jobs = {args.threads}, Annoy queries single-threaded (Python loop); "
        f"vs exact = mean overlap with the exact filtered top-{args.k}"
    )
    print_table(rows, args.k)
    if isinstance(annoy, Row):
        seen_share = seen.contains(np.arange(len(annoy.top))[:, None], annoy.top).mean()
        print(
            f"rechub Annoy loop: misses {1 - annoy.vs_exact:.2%} of the exact filtered "
            f"top-{args.k} and {1 - overlap(annoy.top, unfiltered.top):.2%} of the exact "
            f"unfiltered top-{args.k}; {seen_share:.2%} of its results are seen items"
        )
    elif isinstance(annoy, str):
        print(f"rechub Annoy loop: {annoy}")


if __name__ == "__main__":
    main()
