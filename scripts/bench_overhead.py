"""Lightning overhead: ``ListwiseMatching`` in a ``Trainer`` against a hand-written PyTorch loop.

Both train the same list-wise model (ID towers, cosine, temperature, 8 uniform negatives, Adam)
on the same batches of the embedded MovieLens data, in the same process and thread settings:

* **lit_matching**: ``Trainer(max_epochs=E).fit(ListwiseMatching(...), MatchingDataModule(...))``
  with validation, checkpointing and the progress bar off (what is timed is the training
  loop: data loading, the step, the optimiser and Lightning's logging of ``train/loss``);
* **plain PyTorch**: a ``for`` loop over the same DataLoader doing the same maths by hand
  (``nn.Embedding`` lookups, L2 normalisation, row-wise and batched dot products,
  ``cross_entropy``), ``zero_grad`` / ``backward`` / ``step``; once with
  ``torch.optim.Adam``'s default implementation and once with ``fused=True`` (what
  ``ListwiseMatching`` uses). The ratio is taken against the faster of the two.

Each side runs ``--repeats`` times, alternating, after one warm-up epoch each; the best
steps/s of each is reported. Usage::

    python scripts/bench_overhead.py [--epochs 3] [--batch-size 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from bench_data import bench_trainer  # this script's folder is on sys.path
from torch import nn

from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule

DIM, TEMPERATURE, LR, NEGATIVES = 64, 0.1, 0.05, 8


def lit_matching_run(dm: MatchingDataModule, epochs: int) -> tuple[float, int]:
    pl.seed_everything(0, verbose=False)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, DIM),
        IDEmbeddingTower(dm.num_items, DIM),
        temperature=TEMPERATURE,
        learning_rate=LR,
    )
    trainer = bench_trainer(max_epochs=epochs)
    started = time.perf_counter()
    trainer.fit(model, dm)
    return time.perf_counter() - started, trainer.global_step


def plain_run(dm: MatchingDataModule, epochs: int, fused: bool = False) -> tuple[float, int]:
    torch.manual_seed(0)
    users = nn.Embedding(dm.num_users, DIM)
    items = nn.Embedding(dm.num_items, DIM)
    for table in (users, items):
        nn.init.normal_(table.weight, std=0.1)
    optimizer = torch.optim.Adam([*users.parameters(), *items.parameters()], lr=LR, fused=fused)
    steps = 0
    started = time.perf_counter()
    for _ in range(epochs):
        for batch in dm.train_dataloader():
            u = F.normalize(users(batch["users"]), dim=-1)
            pos = F.normalize(items(batch["pos_items"]), dim=-1)
            neg = F.normalize(items(batch["neg_items"]), dim=-1)
            logits = torch.cat(
                [(u * pos).sum(-1, keepdim=True), torch.einsum("bd,bnd->bn", u, neg)], dim=1
            )
            target = torch.zeros(len(logits), dtype=torch.long)
            loss = F.cross_entropy(logits / TEMPERATURE, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    return time.perf_counter() - started, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dm = MatchingDataModule(num_negatives=NEGATIVES, batch_size=args.batch_size)
    dm.setup("fit")
    runs = {
        "lit_matching": lit_matching_run,
        "plain, Adam": plain_run,
        "plain, fused Adam": lambda dm, epochs: plain_run(dm, epochs, fused=True),
    }
    for run in runs.values():
        run(dm, 1)  # warm-up: imports, allocator, thread pools
    best = dict.fromkeys(runs, 0.0)
    for _ in range(args.repeats):
        for name, run in runs.items():
            seconds, steps = run(dm, args.epochs)
            best[name] = max(best[name], steps / seconds)
            print(f"{name}: {steps} steps in {seconds:.2f} s = {steps / seconds:.1f} steps/s")
    print(
        f"\nembedded ml-latest-small, list-wise, batch {args.batch_size}, {NEGATIVES} negatives, "
        f"d={DIM}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}"
    )
    for name, rate in best.items():
        print(f"{name:<18}{rate:>10.1f} steps/s (best of {args.repeats})")
    plain = max(rate for name, rate in best.items() if name != "lit_matching")
    print(f"lit_matching / fastest plain loop: {best['lit_matching'] / plain:.3f}")


if __name__ == "__main__":
    main()
