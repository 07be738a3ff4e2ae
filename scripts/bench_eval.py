"""Evaluation benchmark: full-catalogue top-K with seen-item filtering, exact and approximate.

On the Gowalla split (train + valid items are "seen" and excluded, test items are the
targets), with Gowalla-sized embeddings (random, seeded and L2-normalised by default, or
``--embeddings DIR`` holding ``user_embeddings.npy`` and ``item_embeddings.npy``):

* lit_matching exact: ``build_index(items, metric, "Flat")`` + ``search_top_k(...,
  exclude=seen)`` (and, for reference, the same search without ``exclude``), ``--metric l2``
  (the default, L2 on the normalised vectors) or ``ip`` (what lit_matching's cosine uses);
* the matrix-product floor of exact search, measured in the same run: ``IndexFlatIP.search``
  of all users with ``k = 1`` (the same tiled BLAS product of users by items that every FAISS
  exact search computes, with the cheapest selection after it: a running maximum), and the
  same product in numpy (4,096 x 1,024 tiles into one buffer, no selection at all);
* lit_matching approximate: ``--approximate SPEC:PARAM=V1,V2 ...`` (default ``"HNSW32"`` with
  efSearch 128, 256 and ``"IVF1024,Flat"`` with nprobe 16, 64), also with ``exclude=seen``;
  "vs exact" is the mean overlap of their top-K with the exact top-K, and the fastest index
  (build + search) finding at least ``--min-overlap`` of it is compared with the Annoy loop
  (measured, or ``--annoy-seconds`` with ``--skip-rechub``);
* torch-rechub's evaluation approach: an Annoy index (``AnnoyIndex(d, "angular")``, 10 trees,
  the defaults of ``torch_rechub.utils.match.Annoy``) and one ``get_nns_by_vector(user, K)``
  call per user in a Python loop, without seen-item filtering. It runs in the torch-rechub
  virtual environment of ``bench_data.py`` (created on demand, ``annoy`` added), fed through
  ``.npy`` files; its top-K is compared with the exact filtered and unfiltered top-K.

Every side gets the same number of threads (``--threads``): FAISS through
``faiss.omp_set_num_threads``, Annoy's index build through ``n_jobs``; Annoy's query loop is
single-threaded, as in torch-rechub. Every lit_matching time is the best of ``--repeats``
runs (each approximate index is built anew in each). Usage::

    python scripts/bench_eval.py [--data-dir ../shared/data] [--embeddings DIR] [--k 20]
                                 [--metric l2|ip] [--threads 2] [--repeats 1] [--seed 0]
                                 [--users N] [--approximate SPEC:PARAM=V1,V2 ...]
                                 [--min-overlap 0.95] [--skip-rechub] [--annoy-seconds 2.12]
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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from bench_data import ROOT, rechub_python, run_worker

if TYPE_CHECKING:
    from lit_matching.data.item_sets import ItemSets

DIM = 64
ANNOY_TREES = 10  # torch_rechub.utils.match.Annoy(n_trees=10, search_k=-1)
APPROXIMATE = ["HNSW32:efSearch=128,256", "IVF1024,Flat:nprobe=16,64"]
TILE = (4096, 1024)  # FAISS's distance_compute_blas_query_bs / _database_bs


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


def best_of(repeats: int, run: Callable[[], object]) -> tuple[float, object]:
    """The shortest wall time of ``repeats`` calls of ``run`` and the last call's result."""
    best, result = float("inf"), None
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def exact_rows(
    users: np.ndarray, items: np.ndarray, seen: ItemSets, args: argparse.Namespace
) -> tuple[Row, Row]:
    """Exact top-k with and without the seen items."""
    from lit_matching.retrieval.search import build_index, search_top_k

    rows = []
    for exclude, name in ((seen, "lit exact Flat, filtered"), (None, "lit exact Flat, no filter")):
        build = partial(build_index, items, args.metric, "Flat", use_gpu=False)
        build_s, index = best_of(args.repeats, build)
        search = partial(search_top_k, index, users, args.k, exclude=exclude)
        search_s, (top, _) = best_of(args.repeats, search)
        rows.append(Row(name, build_s, search_s, top))
    return rows[0], rows[1]


def floor_times(users: np.ndarray, items: np.ndarray, repeats: int) -> dict[str, float]:
    """Seconds of the users x items inner products alone, the floor of any exact search.

    ``IndexFlatIP.search(users, 1)``: FAISS's exact search computes every score with the same
    tiled BLAS product whatever ``k``; with ``k = 1`` only a running maximum follows it. The
    numpy product fills one tile buffer after another and keeps nothing (numpy's BLAS).
    """
    import faiss

    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    block = np.empty(TILE, dtype=np.float32)

    def numpy_product() -> None:
        for start in range(0, len(users), TILE[0]):
            queries = users[start : start + TILE[0]]
            for first in range(0, len(items), TILE[1]):
                part = items[first : first + TILE[1]]
                np.matmul(queries, part.T, out=block[: len(queries), : len(part)])

    return {
        "FAISS IndexFlatIP.search, k = 1": best_of(repeats, lambda: index.search(users, 1))[0],
        "numpy users @ items.T, tiled": best_of(repeats, numpy_product)[0],
    }


def parse_approximate(spec: str) -> tuple[str, str, list[int]]:
    """``"IVF1024,Flat:nprobe=16,64"`` -> ``("IVF1024,Flat", "nprobe", [16, 64])``."""
    try:
        factory, setting = spec.rsplit(":", 1)
        param, values = setting.split("=", 1)
        return factory, param, [int(v) for v in values.split(",")]
    except ValueError:
        raise SystemExit(f"--approximate {spec!r}: expected SPEC:PARAM=V1,V2") from None


def approximate_rows(
    users: np.ndarray,
    items: np.ndarray,
    seen: ItemSets,
    exact: np.ndarray,
    args: argparse.Namespace,
) -> list[Row]:
    """One row per (index, search parameter); each index is built once per repeat."""
    import faiss

    from lit_matching.retrieval.search import build_index, search_top_k

    rows = []
    for factory, param, values in map(parse_approximate, args.approximate):
        best = {value: (float("inf"), float("inf")) for value in values}
        tops: dict[int, np.ndarray] = {}
        for _ in range(max(args.repeats, 1)):
            build = partial(build_index, items, args.metric, factory, use_gpu=False)
            build_s, index = best_of(1, build)
            for value in values:
                faiss.ParameterSpace().set_index_parameter(index, param, value)
                search = partial(search_top_k, index, users, args.k, exclude=seen)
                search_s, (tops[value], _) = best_of(1, search)
                if build_s + search_s < sum(best[value]):
                    best[value] = (build_s, search_s)
        for value in values:
            name = f"lit {factory} {param}={value}"
            row = Row(name, *best[value], tops[value], overlap(tops[value], exact))
            rows.append(row)
            print(f"  {name}: {sum(best[value]):.2f} s, vs exact {row.vs_exact:.4f}", flush=True)
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


def print_goals(
    rows: list[Row], floors: dict[str, float], annoy_s: float | None, args: argparse.Namespace
) -> None:
    """Exact search against the floors; the fastest index finding ``--min-overlap`` vs Annoy."""
    exact = rows[0].build_s + rows[0].search_s
    for name, seconds in floors.items():
        print(f"floor: {name}: {seconds:.2f} s; exact filtered / floor = {exact / seconds:.2f}")
    good = [r for r in rows[2:] if r.vs_exact is not None and r.vs_exact >= args.min_overlap]
    good = [r for r in good if not r.method.startswith("rechub")]
    if not good:
        print(f"no approximate index finds >= {args.min_overlap:.0%} of the exact top-{args.k}")
        return
    fastest = min(good, key=lambda r: r.build_s + r.search_s)
    total = fastest.build_s + fastest.search_s
    against = f"{annoy_s:.2f} s" if annoy_s is not None else "not measured"
    print(
        f"fastest index finding >= {args.min_overlap:.0%} of the exact top-{args.k}: "
        f"{fastest.method}, {total:.2f} s (build + search), vs exact {fastest.vs_exact:.4f}; "
        f"torch-rechub's Annoy loop: {against}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--embeddings", type=Path, help="folder with user/item_embeddings.npy")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--metric", choices=("l2", "ip"), default="l2", help="FAISS metric")
    parser.add_argument("--threads", type=int, default=2, help="FAISS and Annoy-build threads")
    parser.add_argument("--repeats", type=int, default=1, help="best of N lit_matching timings")
    parser.add_argument("--approximate", nargs="*", default=APPROXIMATE, metavar="SPEC")
    parser.add_argument("--min-overlap", type=float, default=0.95, help="share of exact top-K")
    parser.add_argument("--annoy-seconds", type=float, help="Annoy total when not rerun")
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
        f"{len(targets.indices):,} test pairs; cosine (L2-normalised, {args.metric} index)",
        flush=True,
    )

    exact, unfiltered = exact_rows(users, items, seen, args)
    exact.vs_exact, unfiltered.vs_exact = 1.0, overlap(unfiltered.top, exact.top)
    print(f"  exact: {exact.build_s + exact.search_s:.2f} s", flush=True)
    floors = floor_times(users, items, args.repeats)
    rows = [exact, unfiltered, *approximate_rows(users, items, seen, exact.top, args)]

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
        f"vs exact = mean overlap with the exact filtered top-{args.k}; lit_matching times: "
        f"best of {args.repeats}; load average at the end: {os.getloadavg()[0]:.2f}"
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
    annoy_s = annoy.build_s + annoy.search_s if isinstance(annoy, Row) else args.annoy_seconds
    print_goals(rows, floors, annoy_s, args)


if __name__ == "__main__":
    main()
