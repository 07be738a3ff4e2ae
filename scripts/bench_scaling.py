"""Scaling benchmark: training throughput, memory and retrieval time as the catalogue grows.

Synthetic data, three parts; markdown tables on stdout, two PNG plots in ``--out-dir``
(``scaling_training.png``, ``scaling_eval.png``):

1. **Training**, one subprocess per catalogue size (so that its peak RSS is that size's
   alone). The log: ``--users`` users (default 50k, uniform), one interaction per catalogue
   item (so that every item is in the vocabulary and the catalogue is exactly ``N``) plus
   ``--interactions`` more (default 1M) whose items follow a power law (Zipf, exponent
   ``ZIPF``, ranks shuffled over the ids), random timestamps; the users stay fixed so that
   only the catalogue grows. It goes through ``MatchingDataModule(interactions=frame,
   num_negatives=4)`` (cleaning, indexing, leave-last-out split) into ``ListwiseMatching``
   with ``IDEmbeddingTower`` s (d = 64, cosine, temperature 0.1, in-batch negatives plus the
   4 sampled ones, log-Q correction), batch 1024, Adam, in a plain ``pl.Trainer`` (no
   validation, checkpointing, progress bar or logger). After ``--warmup`` steps, ``--steps``
   steps are timed end to end (data loading included); "optimizer share" is the part of that
   time spent in Adam's update (from ``on_before_optimizer_step``, called inside
   ``Adam.step`` after forward and backward, to the end of the batch). The largest size then
   runs 5 more steps under ``torch.profiler`` and lists the operators of most self CPU time.
   ``--embeddings dense sparse`` runs every size with dense tables (fused Adam) and again with
   ``sparse_embeddings=True`` (sparse gradients, ``SparseAdam``; issue 16).
2. **Exact vs approximate search**: clustered unit vectors (d = 64, users and items around
   the same ``CENTRES`` centres, like trained embeddings; ``--spread`` sets how hard they are)
   for the same catalogue sizes, ``--query-users`` users (default 10k) with ~20 power-law
   seen items each, top 50 with the seen items excluded through
   ``lit_matching.retrieval.search`` (``build_index`` + ``search_top_k(exclude=seen)``, what
   the evaluator runs): exact ``"Flat"``, ``"IVF{sqrt N},Flat"`` (nprobe 8, 32) and
   ``"HNSW32"`` (efSearch 64, 128; up to ``--hnsw-max-items``, default 100k: its build
   dominates beyond), with build and search times and recall of the exact top 50
   (``overlap_at_k``).
3. **Exact search cost vs users x items**: the exact search of part 2 for every
   ``--grid-users`` count (default 1k, 10k, 100k) and catalogue size whose 2·U·I·d flops
   stay under ``--max-gflop`` (default 1000); seconds, ns per user-item pair and GFLOP/s.

Every process uses ``--threads`` threads (``torch.set_num_threads`` and
``faiss.omp_set_num_threads``). The defaults take about 11 minutes on 2 busy cores (load 5;
half of it the 1M-item training) and about 5 on idle ones; ``--quick`` (tiny sizes, plots in
``.bench/scaling-quick``) under a minute. Usage::

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_scaling.py [--items 10000 100000 1000000]
        [--steps 200] [--warmup 10] [--threads 2] [--embeddings dense sparse]
        [--quick] [--out-dir docs/img]
        [--users 50000] [--interactions 1000000] [--query-users 10000]
        [--grid-users 1000 10000 100000] [--max-gflop 1000] [--hnsw-max-items 100000]
        [--spread 1.5] [--skip-train] [--skip-eval] [--timeout 1200]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from bench_data import ROOT, bench_trainer, cpu_model, peak_mb, run_worker
from torch.profiler import ProfilerActivity, profile
from typing_extensions import override

DIM, TEMPERATURE, BATCH, NEGATIVES, LR = 64, 0.1, 1024, 4, 1e-3
ZIPF = 1.0  # power-law exponent of item popularity (interactions and seen items)
K = 50
SEEN_MEAN = 20  # mean seen items per evaluated user
CENTRES = 256  # clusters of the synthetic embeddings
PROFILE_STEPS = 5


@dataclass(frozen=True)
class Config:
    """Sizes of one run (full or ``--quick``)."""

    items: list[int]
    users: int
    interactions: int
    steps: int
    warmup: int
    query_users: int
    grid_users: list[int]
    max_gflop: float
    hnsw_max_items: int
    spread: float
    threads: int
    timeout: float


def config_from(args: argparse.Namespace) -> Config:
    if args.quick:
        sizes: dict[str, Any] = dict(
            items=[2_000, 20_000], users=2_000, interactions=50_000, steps=20, warmup=5,
            query_users=1_000, grid_users=[300, 1_000, 3_000], max_gflop=10.0,
            hnsw_max_items=20_000,
        )  # fmt: skip
    else:
        sizes = dict(
            items=[10_000, 100_000, 1_000_000], users=50_000, interactions=1_000_000,
            steps=200, warmup=10, query_users=10_000, grid_users=[1_000, 10_000, 100_000],
            max_gflop=1_000.0, hnsw_max_items=100_000,
        )  # fmt: skip
    for name in sizes:
        if getattr(args, name, None) is not None:
            sizes[name] = getattr(args, name)
    return Config(**sizes, spread=args.spread, threads=args.threads, timeout=args.timeout)


# ---------------------------------------------------------------------------- common
def set_threads(threads: int) -> None:
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def thread_settings() -> str:
    import faiss
    import torch

    return (
        f"torch.get_num_threads() = {torch.get_num_threads()}, "
        f"faiss.omp_get_max_threads() = {faiss.omp_get_max_threads()}, "
        f"OMP_WAIT_POLICY = {os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )


def power_law(num_items: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` item ids with ``P(rank r) ~ (r + 1) ** -ZIPF``, ranks shuffled over the ids."""
    cdf = np.cumsum(np.arange(1, num_items + 1, dtype=np.float64) ** -ZIPF)
    ranks = np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right")
    return rng.permutation(num_items)[np.minimum(ranks, num_items - 1)]


# ---------------------------------------------------------------------------- 1. training
def interaction_log(num_items: int, cfg: Config, seed: int = 0) -> Any:
    """One interaction per item (random user) plus ``cfg.interactions`` power-law ones."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    total = num_items + cfg.interactions
    items = np.concatenate([np.arange(num_items), power_law(num_items, cfg.interactions, rng)])
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, cfg.users, total),
            "item_id": items,
            "timestamp": rng.integers(0, 2**31, total),
        }
    )


class StepTimer(pl.Callback):
    """Times steps ``warmup + 1 .. warmup + steps`` end to end, then profiles a few more."""

    def __init__(self, warmup: int, steps: int, profile_steps: int):
        self.warmup, self.steps, self.profile_steps = warmup, steps, profile_steps
        self.started = self.elapsed = self.optimizer_s = self._before = 0.0
        self.peak_mb = 0.0  # at the end of the timed steps: the profiler's records come later
        self.profiler: Any = None

    @override
    def on_before_optimizer_step(self, trainer: pl.Trainer, *_: Any) -> None:
        # Called inside Adam.step once the closure (forward, backward) has run: what follows
        # until the batch ends is the parameter update.
        self._before = time.perf_counter()

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        now, done = time.perf_counter(), trainer.global_step
        last = self.warmup + self.steps
        if self.warmup < done <= last:
            self.optimizer_s += now - self._before
        if done == self.warmup:
            self.started = now
        elif done == last:
            self.elapsed, self.peak_mb = now - self.started, peak_mb()
            if self.profile_steps:
                self.profiler = profile(activities=[ProfilerActivity.CPU])
                self.profiler.start()
        elif done == last + self.profile_steps and self.profiler is not None:
            self.profiler.stop()


def top_operators(profiler: Any, count: int = 8) -> list[tuple[str, float, float]]:
    """``(operator, self CPU ms per step, share of all self CPU time)``, largest first."""
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        (e.key, e.self_cpu_time_total / 1e3 / PROFILE_STEPS, e.self_cpu_time_total / total)
        for e in events[:count]
    ]


def train_worker(num_items: int, cfg: Config, profile: bool, sparse: bool) -> dict[str, Any]:
    """Build the data and train for ``warmup + steps`` steps; numbers as a JSON-able dict."""
    import torch

    from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule

    set_threads(cfg.threads)
    started = time.perf_counter()
    dm = MatchingDataModule(
        interactions=interaction_log(num_items, cfg),
        num_negatives=NEGATIVES,
        batch_size=BATCH,
        progress=False,
    )
    dm.setup("fit")
    setup_s, data_mb = time.perf_counter() - started, peak_mb()
    pl.seed_everything(0, verbose=False)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, DIM),
        IDEmbeddingTower(dm.num_items, DIM),
        similarity="cosine",
        temperature=TEMPERATURE,
        in_batch_negatives=True,
        learning_rate=LR,
        sparse_embeddings=sparse,
    )
    timer = StepTimer(cfg.warmup, cfg.steps, PROFILE_STEPS if profile else 0)
    trainer = bench_trainer(
        max_steps=cfg.warmup + cfg.steps + timer.profile_steps, callbacks=[timer]
    )
    trainer.fit(model, dm)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    state = sum(
        value.numel() * value.element_size()
        for optimizer in [*trainer.optimizers, *model._extra_optimizers]
        for per_param in optimizer.state.values()
        for value in per_param.values()
        if isinstance(value, torch.Tensor)  # SparseAdam's step count is an int
    )
    return {
        "embeddings": "sparse" if sparse else "dense",
        "items": dm.num_items,
        "users": dm.num_users,
        "train_rows": len(dm.splits.train),
        "setup_s": setup_s,
        "samples_per_s": cfg.steps * BATCH / timer.elapsed,
        "step_ms": 1e3 * timer.elapsed / cfg.steps,
        "optimizer_share": timer.optimizer_s / timer.elapsed,
        "params_mb": params / 2**20,
        "adam_mb": (params + state) / 2**20,
        "data_peak_mb": data_mb,
        "peak_mb": timer.peak_mb,
        "threads": thread_settings(),
        "profile": top_operators(timer.profiler) if timer.profiler is not None else [],
    }


def run_training(cfg: Config, embeddings: list[str]) -> list[dict[str, Any]]:
    rows = []
    for kind, num_items in [(kind, n) for kind in embeddings for n in cfg.items]:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker-train", str(num_items)]
        command += ["--users", str(cfg.users), "--interactions", str(cfg.interactions)]
        command += ["--steps", str(cfg.steps), "--warmup", str(cfg.warmup)]
        command += ["--threads", str(cfg.threads), "--embeddings", kind]
        if num_items == max(cfg.items):
            command.append("--profile")
        started = time.perf_counter()
        result = run_worker(command, cfg.timeout)
        wall = time.perf_counter() - started
        if isinstance(result, str):
            print(f"  training, {kind}, {num_items:,} items: {result}", flush=True)
            continue
        result["wall_s"] = wall
        print(
            f"  training, {kind}, {num_items:,} items: {result['samples_per_s']:,.0f} samples/s, "
            f"peak {result['peak_mb']:,.0f} MB ({wall:.0f} s)",
            flush=True,
        )
        rows.append(result)
    return rows


def print_training(rows: list[dict[str, Any]], cfg: Config) -> None:
    print(
        f"\n### Training: ListwiseMatching, ID towers d={DIM}, cosine, temperature {TEMPERATURE}, "
        f"in-batch + {NEGATIVES} sampled negatives, batch {BATCH}, Adam; {cfg.steps} steps "
        f"after {cfg.warmup} warm-up\n"
    )
    print(
        "| embeddings | items | users | train rows | data setup s | samples/s | vs. smallest "
        "| ms/step | optimizer share | params MB | params + Adam MB | peak RSS after data MB "
        "| peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    smallest = {r["embeddings"]: r["samples_per_s"] for r in reversed(rows)}
    for r in rows:
        ratio = r["samples_per_s"] / smallest[r["embeddings"]]
        print(
            f"| {r['embeddings']} | {r['items']:,} | {r['users']:,} | {r['train_rows']:,} "
            f"| {r['setup_s']:.1f} | {r['samples_per_s']:,.0f} | {ratio:.2f}x "
            f"| {r['step_ms']:.1f} | {r['optimizer_share']:.0%} "
            f"| {r['params_mb']:.0f} | {r['adam_mb']:.0f} | {r['data_peak_mb']:.0f} "
            f"| {r['peak_mb']:.0f} |"
        )
    for r in [r for r in rows if r["profile"]]:
        print(
            f"\ntorch.profiler, {r['embeddings']} embeddings, {r['items']:,} items, "
            f"{PROFILE_STEPS} steps: operators of most self CPU time\n"
        )
        print("| operator | self CPU ms/step | share |")
        print("|---|---:|---:|")
        for name, ms, share in r["profile"]:
            print(f"| {name} | {ms:.1f} | {share:.0%} |")
    dense = [r for r in rows if r["embeddings"] == "dense"]
    if dense:
        print(f"\n{adam_verdict(dense)}")


def adam_verdict(rows: list[dict[str, Any]]) -> str:
    """One sentence: does the dense Adam update dominate the step at the largest catalogue?"""
    small, large = rows[0], rows[-1]
    share = large["optimizer_share"]
    verdict = "dominates" if share >= 0.5 else "does not dominate"
    return (
        f"Adam's dense update over all {large['items']:,} + {large['users']:,} embedding rows "
        f"{verdict} at {large['items']:,} items: {share:.0%} of the step "
        f"({share * large['step_ms']:.0f} of {large['step_ms']:.0f} ms), against "
        f"{small['optimizer_share']:.0%} at {small['items']:,} items; its cost grows with the "
        "table, not the batch (every row's moments are updated, touched or not)."
    )


# ---------------------------------------------------------------------------- 2./3. evaluation
def clustered(
    count: int, centres: np.ndarray, rng: np.random.Generator, spread: float
) -> np.ndarray:
    """``count`` unit vectors, each a random unit centre plus Gaussian noise of norm ~``spread``.

    A small spread gives tight, isolated clusters (approximate search finds everything), a
    large one (~3 and more at d = 64) is as hard as uniformly random vectors.
    """
    which = rng.integers(0, len(centres), count)
    noise = rng.standard_normal((count, centres.shape[1]), dtype=np.float32)
    vectors = centres[which] + noise * (spread / math.sqrt(centres.shape[1]))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def seen_items(num_users: int, num_items: int, rng: np.random.Generator) -> Any:
    """Per-user :class:`ItemSets` of ~``SEEN_MEAN`` power-law items (what search excludes)."""
    from lit_matching.data.item_sets import ItemSets

    counts = rng.poisson(SEEN_MEAN - 1, num_users) + 1
    rows = np.repeat(np.arange(num_users), counts)
    return ItemSets.from_pairs(rows, power_law(num_items, len(rows), rng), num_users, num_items)


@dataclass
class EvalResult:
    """Part 2 (one catalogue size) and the part 3 cells of that size."""

    items: int
    exact_build_s: float = 0.0
    exact_search_s: float = 0.0
    approximate: list[dict[str, Any]] = field(default_factory=list)
    grid: list[dict[str, Any]] = field(default_factory=list)


def exact_search(items: np.ndarray, users: np.ndarray, seen: Any) -> tuple[float, float, Any]:
    """``(build s, search s, top K)`` of exact search with ``seen`` excluded."""
    from lit_matching.retrieval.search import build_index, search_top_k

    started = time.perf_counter()
    index = build_index(items, "l2", "Flat", use_gpu=False)
    built = time.perf_counter()
    top, _ = search_top_k(index, users, K, exclude=seen)
    return built - started, time.perf_counter() - built, top


def approximate_specs(num_items: int, cfg: Config) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Index spec -> (search parameter, values): IVF with ~sqrt(N) lists, and HNSW32.

    HNSW's build grows as N log N and dominates the run beyond ``cfg.hnsw_max_items`` (about
    2 minutes for 300k items on 2 busy cores), so larger catalogues skip it.
    """
    nlist = max(16, round(math.sqrt(num_items)))
    specs: dict[str, tuple[str, tuple[int, ...]]] = {f"IVF{nlist},Flat": ("nprobe", (8, 32))}
    if num_items <= cfg.hnsw_max_items:
        specs["HNSW32"] = ("efSearch", (64, 128))
    return specs


def approximate_search(
    cfg: Config, items: np.ndarray, users: np.ndarray, seen: Any, exact: np.ndarray
) -> list[dict[str, Any]]:
    import faiss

    from lit_matching.retrieval.search import build_index, overlap_at_k, search_top_k

    rows = []
    for spec, (param, values) in approximate_specs(len(items), cfg).items():
        started = time.perf_counter()
        index = build_index(items, "l2", spec, {param: values[0]}, use_gpu=False)
        build_s = time.perf_counter() - started
        for value in values:
            faiss.ParameterSpace().set_index_parameter(index, param, value)
            started = time.perf_counter()
            top, _ = search_top_k(index, users, K, exclude=seen)
            search_s = time.perf_counter() - started
            recall = overlap_at_k(top, exact, K)
            family = "IVF√N" if spec.startswith("IVF") else spec  # IVF's nlist varies with N
            rows.append(
                {"index": f"{spec} {param}={value}", "family": f"{family} {param}={value}"}
                | {"build_s": build_s, "search_s": search_s, "recall": recall}
            )
            print(
                f"    {spec} {param}={value}: build {build_s:.1f} s, search {search_s:.1f} s, "
                f"recall@{K} {recall:.3f}",
                flush=True,
            )
    return rows


def gflop(users: int, items: int) -> float:
    return 2.0 * users * items * DIM / 1e9


def run_evaluation(cfg: Config, seed: int = 0) -> list[EvalResult]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    most = max(cfg.query_users, *cfg.grid_users)
    all_users = clustered(most, centres, rng, cfg.spread)
    results = []
    for num_items in cfg.items:
        print(f"  evaluation, {num_items:,} items", flush=True)
        items = clustered(num_items, centres, rng, cfg.spread)
        all_seen = seen_items(most, num_items, rng)
        result = EvalResult(num_items)
        counts = sorted({cfg.query_users, *cfg.grid_users})
        for count in counts:
            if count != cfg.query_users and gflop(count, num_items) > cfg.max_gflop:
                continue
            seen = all_seen.select(np.arange(count))
            build_s, search_s, top = exact_search(items, all_users[:count], seen)
            print(f"    exact, {count:,} users: {search_s:.1f} s", flush=True)
            if count in cfg.grid_users:
                result.grid.append({"users": count, "search_s": search_s})
            if count == cfg.query_users:
                result.exact_build_s, result.exact_search_s = build_s, search_s
                query = (all_users[:count], seen, top)
        result.approximate = approximate_search(cfg, items, *query)
        results.append(result)
    return results


def print_evaluation(results: list[EvalResult], cfg: Config) -> None:
    print(
        f"\n### Exact vs approximate top-{K} search, {cfg.query_users:,} users, d={DIM} "
        f"({CENTRES} clusters, spread {cfg.spread:g}), ~{SEEN_MEAN} seen items per user "
        "excluded\n"
    )
    print("| items | index | build s | search s | total s | recall@50 vs exact |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in results:
        total = r.exact_build_s + r.exact_search_s
        print(
            f"| {r.items:,} | Flat (exact) | {r.exact_build_s:.2f} | {r.exact_search_s:.2f} "
            f"| {total:.2f} | 1.000 |"
        )
        for a in r.approximate:
            print(
                f"| {r.items:,} | {a['index']} | {a['build_s']:.2f} | {a['search_s']:.2f} "
                f"| {a['build_s'] + a['search_s']:.2f} | {a['recall']:.3f} |"
            )
        if r.items > cfg.hnsw_max_items:
            print(f"| {r.items:,} | HNSW32 | skipped (over --hnsw-max-items) | | | |")
    print(
        f"\n### Exact search time vs users x items (cells over {cfg.max_gflop:g} GFLOP skipped)\n"
    )
    print("| users | items | U x I | search s | ns per (U x I) | GFLOP/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for cell in r.grid:
            pairs = cell["users"] * r.items
            print(
                f"| {cell['users']:,} | {r.items:,} | {pairs:.2e} | {cell['search_s']:.2f} "
                f"| {1e9 * cell['search_s'] / pairs:.3f} "
                f"| {gflop(cell['users'], r.items) / cell['search_s']:.1f} |"
            )


# ---------------------------------------------------------------------------- plots
def plot_training(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for kind in dict.fromkeys(r["embeddings"] for r in rows):
        part = [r for r in rows if r["embeddings"] == kind]
        items = [r["items"] for r in part]
        left.plot(items, [r["samples_per_s"] for r in part], "o-", label=f"{kind} embeddings")
        right.plot(items, [r["peak_mb"] for r in part], "o-", label=f"peak RSS, {kind}")
        right.plot(items, [r["adam_mb"] for r in part], "s--", label=f"params + Adam, {kind}")
    left.set(xscale="log", xlabel="catalogue size (items)", ylabel="training samples/s")
    left.set_ylim(bottom=0)
    left.legend()
    right.set(xscale="log", xlabel="catalogue size (items)", ylabel="MB")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(f"ListwiseMatching, ID towers d={DIM}, batch {BATCH}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_evaluation(results: list[EvalResult], cfg: Config, path: Path) -> None:
    import matplotlib.pyplot as plt

    items = [r.items for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    exact = [r.exact_build_s + r.exact_search_s for r in results]
    left.plot(items, exact, "o-", label="exact (Flat), build + search")
    families = dict.fromkeys(a["family"] for r in results for a in r.approximate)
    for family in families:
        points = [(r.items, a) for r in results for a in r.approximate if a["family"] == family]
        times = [a["build_s"] + a["search_s"] for _, a in points]
        left.plot([n for n, _ in points], times, ".--", label=f"{family}, build + search")
    left.set(xscale="log", yscale="log", xlabel="catalogue size (items)", ylabel="seconds")
    left.set_title(f"top-{K}, {cfg.query_users:,} users", fontsize=10)
    left.legend(fontsize=7)
    for users in sorted(cfg.grid_users):
        cells = [(r.items, c["search_s"]) for r in results for c in r.grid if c["users"] == users]
        if cells:
            sizes = [users * i for i, _ in cells]
            right.plot(sizes, [s for _, s in cells], "o-", label=f"{users:,} users")
    every = [(c["users"] * r.items, c["search_s"]) for r in results for c in r.grid]
    if every:  # a line of slope 1 through the largest cell: time proportional to U x I
        largest, seconds = max(every)
        span = np.array([min(every)[0], largest], dtype=float)
        right.plot(span, seconds * span / largest, "k:", lw=1, label="∝ U x I")
    right.set(xscale="log", yscale="log", xlabel="users x items", ylabel="exact search seconds")
    right.set_title("exact search vs U x I", fontsize=10)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------- main
def footer(wall_s: float) -> None:
    import faiss
    import torch

    print(
        f"\nmachine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"faiss {faiss.__version__}; {thread_settings()} (in every process); "
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; wall time {wall_s:.0f} s"
    )
    print(f"command: python {' '.join(sys.argv)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", help="catalogue sizes")
    parser.add_argument("--steps", type=int, help="timed training steps")
    parser.add_argument("--warmup", type=int, help="untimed training steps first")
    parser.add_argument("--users", type=int, help="users of the training log")
    parser.add_argument("--interactions", type=int, help="power-law interactions (+1 per item)")
    parser.add_argument("--query-users", type=int, help="users of the exact-vs-approximate part")
    parser.add_argument("--grid-users", type=int, nargs="+", help="user counts of the grid")
    parser.add_argument("--max-gflop", type=float, help="skip grid cells above this")
    parser.add_argument("--hnsw-max-items", type=int, help="skip HNSW32 above this catalogue")
    parser.add_argument("--spread", type=float, default=1.5, help="cluster spread of vectors")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--embeddings",
        nargs="+",
        choices=["dense", "sparse"],
        default=["dense"],
        help="embedding tables to train with: dense (fused Adam), sparse (SparseAdam), or both",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="where the PNGs go (default: docs/img; with --quick: .bench/scaling-quick)",
    )
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per training run")
    parser.add_argument("--worker-train", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = config_from(args)
    if args.worker_train is not None:
        sparse = args.embeddings == ["sparse"]
        print(json.dumps(train_worker(args.worker_train, cfg, args.profile, sparse)))
        return
    started = time.perf_counter()
    set_threads(cfg.threads)
    out_dir = args.out_dir or ROOT / (".bench/scaling-quick" if args.quick else "docs/img")
    out_dir.mkdir(parents=True, exist_ok=True)
    training = [] if args.skip_train else run_training(cfg, args.embeddings)
    evaluation = [] if args.skip_eval else run_evaluation(cfg)
    if training:
        print_training(training, cfg)
        print(f"\nworker threads: {training[0]['threads']}")
        plot_training(training, out_dir / "scaling_training.png")
    if evaluation:
        print_evaluation(evaluation, cfg)
        plot_evaluation(evaluation, cfg, out_dir / "scaling_eval.png")
    for png in sorted(out_dir.glob("scaling_*.png")):
        shown = png.relative_to(ROOT) if png.is_relative_to(ROOT) else png
        print(f"plot: {shown} ({png.stat().st_size / 1024:.0f} KB)")
    footer(time.perf_counter() - started)


if __name__ == "__main__":
    main()
