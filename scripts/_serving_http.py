"""HTTP serving latency (``bench_serving.py http``): `lit-matching serve` on localhost.

For each catalogue (about 40k items with an exact Flat index, 1M items with IVF) it builds an
export of RANDOM vectors with an UNTRAINED GRU user tower (history of 50; speed does not depend
on training), starts `python -m lit_matching.cli serve DIR` in its own process, and measures
for three kinds of request, with 1 and with 8 concurrent clients (keep-alive connections):

* known: a known user id (stored vector);
* fresh: a known user id with a fresh 50-item history (the GRU tower runs);
* cold: an unknown user id and nothing else (the popular fallback).

Reported: latency p50 / p99 (ms, client side), requests per second, errors (non-200 answers or
failed connections), and the server's resident memory before and after each 8-client run.

    python scripts/bench_serving.py http --duration 60           # the real run
    python scripts/bench_serving.py http --duration 2 --items 40000   # a smoke run
"""

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from lit_matching import GRUTower
from lit_matching.data.item_sets import ItemSets
from lit_matching.serving.retriever import Retriever
from lit_matching.serving.serving_towers import ServingTower, TowerSpec
from lit_matching.serving.tower_export import export_tower, tower_input_names

HISTORY = 50
SCENARIOS = ("known", "fresh", "cold")


def build_export(directory: Path, num_items: int, num_users: int, dim: int, nprobe: int) -> Path:
    """Random user / item vectors, an untrained GRU user tower, seen items and popularity."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    items = rng.standard_normal((num_items, dim), dtype=np.float32)
    users = rng.standard_normal((num_users, dim), dtype=np.float32)
    onnx = directory.parent / f"gru_{num_items}.onnx"
    export_tower(GRUTower(num_items, dim), onnx, True, num_ids=num_users, history_pad=num_items)
    history = rng.integers(0, num_items, (num_users, HISTORY), dtype=np.int64)
    spec = TowerSpec(tower_input_names(True), HISTORY, num_items)
    stored = {"history": history, "history_length": np.full(num_users, HISTORY, np.int64)}
    tower = ServingTower(spec, onnx.read_bytes(), stored)
    seen_users = np.repeat(np.arange(num_users), 20)
    seen = ItemSets.from_pairs(seen_users, history[:, -20:].ravel(), num_users, num_items)
    ivf = num_items > 100_000
    retriever = Retriever(
        users,
        items,
        [f"u{u}" for u in range(num_users)],
        list(range(num_items)),
        similarity="dot",
        seen=seen,
        index="IVF1024,Flat" if ivf else "Flat",
        search_params={"nprobe": nprobe} if ivf else None,
        use_gpu=False,
        user_tower=tower,
        popularity=rng.zipf(1.5, num_items).astype(np.float64),
    )
    return retriever.export(directory)


def bodies(kind: str, num_items: int, num_users: int, count: int = 2000) -> list[bytes]:
    rng = random.Random(kind)
    out = []
    for n in range(count):
        user = f"u{rng.randrange(num_users)}"
        if kind == "known":
            body = {"user_id": user, "k": 10}
        elif kind == "fresh":
            body = {"user_id": user, "history": rng.sample(range(num_items), HISTORY), "k": 10}
        else:
            body = {"user_id": f"cold{n}", "k": 10}
        out.append(json.dumps(body).encode())
    return out


def start_server(directory: Path, threads: int, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "lit_matching.cli", "serve", str(directory), "--port", "0"]
    command += ["--max-wait-ms", str(max_wait_ms)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    line = server.stdout.readline()  # "Serving DIR at http://127.0.0.1:PORT"
    if " at http://" not in line:
        server.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return server, line.rsplit(" at ", 1)[1].strip()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def client(url: str, payloads: list[bytes], stop_at: float, out: list, start: int) -> None:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    latencies, errors, n = [], 0, start
    while time.perf_counter() < stop_at:
        body = payloads[n % len(payloads)]
        n += 1
        began = time.perf_counter()
        try:
            connection.request("POST", "/recommend", body, headers)
            answer = connection.getresponse()
            answer.read()
            ok = answer.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            connection.close()
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
        latencies.append(time.perf_counter() - began)
        errors += not ok
    connection.close()
    out.append((latencies, errors))


def load(url: str, payloads: list[bytes], clients: int, duration: float) -> dict:
    results: list = []
    stop_at = time.perf_counter() + duration
    workers = [
        threading.Thread(target=client, args=(url, payloads, stop_at, results, 250 * c))
        for c in range(clients)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    latencies = np.concatenate([np.asarray(found) for found, _ in results]) * 1000
    return {
        "requests": len(latencies),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "rps": len(latencies) / duration,
        "errors": sum(errors for _, errors in results),
    }


def bench_catalogue(options, num_items: int, work: Path) -> list[dict]:
    began = time.perf_counter()
    directory = build_export(
        work / f"export_{num_items}", num_items, options.users, options.dim, options.nprobe
    )
    print(f"# {num_items} items exported in {time.perf_counter() - began:.0f} s", flush=True)
    server, url = start_server(directory, options.server_threads, options.max_wait_ms)
    rows = []
    try:
        for kind in SCENARIOS:
            payloads = bodies(kind, num_items, options.users)
            load(url, payloads, 1, min(2.0, options.duration))  # warm-up
            for clients in options.clients:
                before = rss_mb(server.pid)
                row = load(url, payloads, clients, options.duration)
                row |= {
                    "items": num_items,
                    "kind": kind,
                    "clients": clients,
                    "rss_before_mb": before,
                    "rss_after_mb": rss_mb(server.pid),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| items | index | request | clients | p50 ms | p99 ms | req/s | errors "
        "| RSS before -> after (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        index = "IVF1024,Flat" if r["items"] > 100_000 else "Flat"
        lines.append(
            f"| {r['items']:,} | {index} | {r['kind']} | {r['clients']} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['rps']:.0f} | {r['errors']} | "
            f"{r['rss_before_mb']:.0f} -> {r['rss_after_mb']:.0f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the ``http`` subcommand."""
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per measurement")
    parser.add_argument("--items", type=int, nargs="+", default=[40_000, 1_000_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists searched")
    parser.add_argument("--server-threads", type=int, default=1, help="OMP_NUM_THREADS of it")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--json", type=Path, help="write the rows here")


def run(options: argparse.Namespace) -> None:
    """Measure every catalogue and print the table."""
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for num_items in options.items:
            rows += bench_catalogue(options, num_items, Path(work))
    print(table(rows))
    if options.json:
        options.json.write_text(json.dumps(rows, indent=1))
