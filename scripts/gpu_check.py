"""Short GPU check: CUDA training (DDP when there are several GPUs), mixed precision, FAISS.

Run it whenever a GPU machine is available (it is not part of CI, which has no GPU)::

    bash scripts/gpu_check.sh          # or: python scripts/gpu_check.py [--epochs 1]

Each item prints PASS, FAIL (with the reason) or SKIP (what is missing); the exit status is 1
when any item failed. Items:

1. ``cuda``: torch sees a GPU.
2. ``fit-32`` / ``fit-16-mixed`` / ``fit-bf16-mixed``: a short list-wise fit on the embedded
   MovieLens data with in-batch negatives (gathered across ranks under DDP on all GPUs),
   log-Q correction and a learned temperature, in each precision; loss finite, validation
   metrics logged and above zero.
3. ``ddp-gather``: with 2+ GPUs, the cross-rank in-batch loss and gradients of 2 ranks x B/2 on
   NCCL equal those of 1 rank x B (the CPU test does the same on gloo).
4. ``faiss-gpu``: an index on the GPU (faiss with GPU support) returns the same top-K as the
   CPU exact search; ``faiss-torch``: searching CUDA tensors directly
   (``faiss.contrib.torch_utils``).
5. ``retriever``: ``Retriever.from_module`` on a CUDA module equals the CPU export.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lit_matching import (
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    RetrievalEvaluator,
    Retriever,
)
from lit_matching.retrieval.search import build_index, search_top_k

RESULTS: list[tuple[str, str, str]] = []


class Skip(Exception):
    """An item that cannot run on this machine."""


def item(name: str, check: Callable[[], str | None]) -> None:
    """Run one check and record PASS / FAIL / SKIP."""
    try:
        detail = check() or ""
        RESULTS.append((name, "PASS", detail))
    except Skip as why:
        RESULTS.append((name, "SKIP", str(why)))
    except Exception as err:
        traceback.print_exc()
        RESULTS.append((name, "FAIL", f"{type(err).__name__}: {err}"))
    print(f"{RESULTS[-1][1]:<5} {name}  {RESULTS[-1][2]}", flush=True)


def need_cuda(count: int = 1) -> None:
    if torch.cuda.device_count() < count:
        raise Skip(f"needs {count} CUDA device(s), found {torch.cuda.device_count()}")


def check_cuda() -> str:
    need_cuda()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{len(names)} x {names[0]}, torch {torch.__version__}"


def check_fit(precision: str, epochs: int) -> str:
    need_cuda()
    if precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
        raise Skip("this GPU has no bfloat16")
    pl.seed_everything(0, verbose=False)
    dm = MatchingDataModule(batch_size=1024, num_negatives=8)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 64),
        IDEmbeddingTower(dm.num_items, 64),
        temperature=0.1,
        learn_temperature=True,
        in_batch_negatives=True,
        learning_rate=0.01,
    )
    devices = torch.cuda.device_count()
    evaluator = RetrievalEvaluator(ks=(10, 50))
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            accelerator="gpu",
            devices=devices,
            strategy="ddp" if devices > 1 else "auto",
            precision=precision,  # type: ignore[arg-type]
            max_epochs=epochs,
            default_root_dir=root,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[evaluator],
        )
        trainer.fit(model, dm)
    loss = float(trainer.callback_metrics["train/loss"])
    hit_rate = evaluator.results["val"]["hit_rate@50"]
    if not np.isfinite(loss) or hit_rate <= 0:
        raise AssertionError(f"loss {loss}, val hit_rate@50 {hit_rate}")
    return f"{devices} GPU(s), train/loss {loss:.4f}, val hit_rate@50 {hit_rate:.4f}"


def _gather_worker(rank: int, port: str, out: str) -> None:
    import torch.distributed as dist
    from test_cross_rank import CASES, global_batch, make_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=2)
    results = {}
    for name, options in CASES.items():
        model = make_model(**options).cuda(rank)
        batch = {k: v.cuda(rank) for k, v in global_batch().items()}
        half = len(batch["users"]) // 2
        local = {k: v[rank * half : (rank + 1) * half] for k, v in batch.items()}
        loss = model.compute_loss(local)
        loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total)
        grads = {}
        for key, param in model.named_parameters():
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            dist.all_reduce(grad)
            grads[key] = (grad / 2).cpu()
        results[name] = (total.item() / 2, grads)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def check_ddp_gather() -> str:
    need_cuda(2)
    from test_cross_rank import CASES, single_process

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as root:
        out = str(Path(root) / "ranks.pt")
        mp.spawn(_gather_worker, args=(port, out), nprocs=2)
        ranks = torch.load(out)
    for name, options in CASES.items():
        loss, grads = single_process(options)
        got_loss, got_grads = ranks[name]
        if abs(got_loss - loss) > 1e-4 * abs(loss):
            raise AssertionError(f"{name}: loss {got_loss} on 2 GPUs vs {loss} on 1 process")
        for key, grad in grads.items():
            torch.testing.assert_close(got_grads[key], grad, rtol=1e-3, atol=1e-5)
    return f"{len(CASES)} cases equal"


def _vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(20000, 64)).astype(np.float32)
    users = rng.normal(size=(2000, 64)).astype(np.float32)
    return users, items


def check_faiss_gpu() -> str:
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        raise Skip("faiss has no GPU support here (faiss-cpu); install faiss-gpu to check it")
    users, items = _vectors()
    cpu = search_top_k(build_index(items, "ip", use_gpu=False), users, 50)[0]
    gpu = search_top_k(build_index(items, "ip", use_gpu=True), users, 50)[0]
    same = float((cpu == gpu).mean())
    if same < 0.999:
        raise AssertionError(f"GPU top-50 equals the CPU one in {same:.4%} of places")
    return f"GPU index top-50 = CPU exact ({same:.4%})"


def check_faiss_torch() -> str:
    need_cuda()
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        raise Skip("faiss has no GPU support here (faiss-cpu)")
    import faiss.contrib.torch_utils

    users, items = _vectors()
    index = faiss.GpuIndexFlatIP(faiss.StandardGpuResources(), items.shape[1])
    index.add(torch.from_numpy(items).cuda())
    _, found = index.search(torch.from_numpy(users).cuda(), 50)
    cpu = search_top_k(build_index(items, "ip", use_gpu=False), users, 50)[0]
    same = float((found.cpu().numpy() == cpu).mean())
    if same < 0.999:
        raise AssertionError(f"CUDA-tensor search equals the CPU one in {same:.4%} of places")
    return f"search of CUDA tensors = CPU exact ({same:.4%})"


def check_retriever() -> str:
    need_cuda()
    pl.seed_everything(0, verbose=False)
    dm = MatchingDataModule()
    model = ListwiseMatching(IDEmbeddingTower(dm.num_users, 32), IDEmbeddingTower(dm.num_items, 32))
    on_cpu = Retriever.from_module(model, dm, use_gpu=False)
    on_gpu = Retriever.from_module(model.cuda(), dm)
    np.testing.assert_allclose(on_gpu.item_embeddings, on_cpu.item_embeddings, atol=1e-5)
    users = on_cpu.user_ids[:50]
    a, b = on_cpu.recommend(users, k=10), on_gpu.recommend(users, k=10)
    same = float((a.item_id.to_numpy() == b.item_id.to_numpy()).mean())
    if same < 0.99:
        raise AssertionError(f"GPU recommendations equal the CPU ones in {same:.2%} of places")
    return f"recommendations equal in {same:.2%} of places"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each fit")
    args = parser.parse_args()
    item("cuda", check_cuda)
    for precision in ("32", "16-mixed", "bf16-mixed"):
        item(f"fit-{precision}", lambda p=precision: check_fit(p, args.epochs))
    item("ddp-gather", check_ddp_gather)
    item("faiss-gpu", check_faiss_gpu)
    item("faiss-torch", check_faiss_torch)
    item("retriever", check_retriever)
    failed = [name for name, status, _ in RESULTS if status == "FAIL"]
    print(f"\n{len(RESULTS) - len(failed)} of {len(RESULTS)} items did not fail", end="")
    print(f"; FAILED: {', '.join(failed)}" if failed else "")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
