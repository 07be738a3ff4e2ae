"""Run by tests/test_cross_rank.py: list-wise loss and gradients on 2 gloo ranks, B/2 rows each."""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parents[1]))  # helpers
sys.path.insert(0, str(Path(__file__).parent))  # its test module
from test_cross_rank import CASES, global_batch, make_model


def run(rank: int, out: Path) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    results = {}
    for name, options in CASES.items():
        model = make_model(**options)
        batch = global_batch()
        half = len(batch["users"]) // 2
        local = {key: value[rank * half : (rank + 1) * half] for key, value in batch.items()}
        loss = model.compute_loss(local)
        loss.backward()
        grads = {}
        for key, param in model.named_parameters():
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            dist.all_reduce(grad)  # DDP averages parameter gradients over the ranks
            grads[key] = (grad / 2).tolist()
        total = loss.detach().clone()
        dist.all_reduce(total)
        results[name] = {"loss": total.item() / 2, "grads": grads}
    if rank == 0:
        (out / "ranks.json").write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ["MASTER_PORT"] = sys.argv[2]
    run(int(sys.argv[3]), Path(sys.argv[1]))
