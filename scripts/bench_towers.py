"""Towers on ml-100k, chronological leave-last-out: test HR and NDCG at 10 and 50.

Every tower trains list-wise; the feature towers (DSSM: features on both sides; YouTubeDNN:
user features + pooled history against item ids) also point- and pair-wise. Full-catalogue
ranking, training and validation items excluded, best epoch by val/recall@20. Usage::

    python scripts/bench_towers.py [--data-dir ../shared/data] [--epochs 10]
                                   [--history-epochs 4] [--towers id gru ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lit_matching import (
    Categorical,
    FeatureTower,
    GRUTower,
    HistoryPoolingTower,
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    MultiCategorical,
    MultiInterestTower,
    Numeric,
    PairwiseMatching,
    PointwiseMatching,
    RetrievalEvaluator,
    SelfAttentionTower,
)

ROOT = Path(__file__).resolve().parents[1]
DIM = 64
MODULES = {
    "pointwise": PointwiseMatching,
    "pairwise": PairwiseMatching,
    "listwise": ListwiseMatching,
}
SETTINGS = {  # per mode: negatives, temperature (as in the packaged configs)
    "pointwise": (4, 0.2),
    "pairwise": (1, 0.1),
    "listwise": (8, 0.1),
}
HISTORY_TOWERS = ("pooling", "gru", "attention", "multi_interest", "youtubednn")
RUNS = [
    (tower, "listwise")
    for tower in ("id", "pooling", "gru", "attention", "multi_interest", "dssm", "youtubednn")
]
RUNS += [(tower, mode) for tower in ("dssm", "youtubednn") for mode in ("pointwise", "pairwise")]


def data(data_dir: Path, mode: str, tower: str) -> MatchingDataModule:
    base = data_dir / "ml-100k"
    negatives, _ = SETTINGS[mode]
    return MatchingDataModule(
        mode=mode,
        interactions=str(base / "ml-100k.inter"),
        num_negatives=negatives,
        history_length=50 if tower in HISTORY_TOWERS else 0,
        user_side_features=str(base / "ml-100k.user"),
        user_feature_specs=[Categorical("gender"), Categorical("occupation"), Numeric("age")],
        item_side_features=str(base / "ml-100k.item"),
        item_feature_specs=[Categorical("release_year"), MultiCategorical("class", sep=" ")],
    )


def towers(kind: str, dm: MatchingDataModule) -> tuple[torch.nn.Module, torch.nn.Module]:
    items = IDEmbeddingTower(dm.num_items, DIM)
    shared = items.embedding
    assert dm.user_feature_table is not None and dm.item_feature_table is not None
    if kind == "id":
        return IDEmbeddingTower(dm.num_users, DIM), items
    if kind == "pooling":
        return HistoryPoolingTower(dm.num_items, DIM, item_embedding=shared), items
    if kind == "gru":
        return GRUTower(dm.num_items, DIM, item_embedding=shared), items
    if kind == "attention":
        return SelfAttentionTower(dm.num_items, DIM, item_embedding=shared), items
    if kind == "multi_interest":
        return MultiInterestTower(dm.num_items, DIM, num_interests=4, item_embedding=shared), items
    if kind == "dssm":
        return (
            FeatureTower(dm.user_feature_table, DIM, num_ids=dm.num_users),
            FeatureTower(dm.item_feature_table, DIM, num_ids=dm.num_items),
        )
    if kind == "youtubednn":
        history = HistoryPoolingTower(dm.num_items, DIM, item_embedding=shared)
        return FeatureTower(dm.user_feature_table, DIM, history_tower=history), items
    raise ValueError(kind)


def run(kind: str, mode: str, data_dir: Path, epochs: int, workdir: str) -> dict[str, float]:
    pl.seed_everything(0, verbose=False)
    dm = data(data_dir, mode, kind)
    user, item = towers(kind, dm)
    _, temperature = SETTINGS[mode]
    model = MODULES[mode](user, item, temperature=temperature, learning_rate=0.01)
    evaluator = RetrievalEvaluator(ks=(10, 20, 50))
    checkpoint = ModelCheckpoint(dirpath=workdir, monitor="val/recall@20", mode="max")
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[evaluator, checkpoint],
    )
    started = time.perf_counter()
    trainer.fit(model, dm)
    trainer.test(model, dm, ckpt_path="best", verbose=False)
    return evaluator.results["test"] | {"wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--history-epochs", type=int, default=4, help="epochs of the (slower) history towers"
    )
    parser.add_argument("--towers", nargs="+", default=None, help="only these towers")
    args = parser.parse_args()
    rows = []
    for kind, mode in RUNS:
        if args.towers and kind not in args.towers:
            continue
        epochs = args.history_epochs if kind in HISTORY_TOWERS else args.epochs
        with tempfile.TemporaryDirectory() as workdir:
            result = run(kind, mode, args.data_dir, epochs, workdir)
        rows.append((kind, mode, epochs, result))
        print(
            f"{kind} {mode}: HR@50 {result['hit_rate@50']:.4f} ({result['wall_s']:.0f} s)",
            flush=True,
        )
    print(
        f"\nml-100k leave-last-out, test split; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'tower':<15}{'mode':<11}{'epochs':>7}{'HR@10':>9}{'HR@50':>9}{'NDCG@10':>9}"
        f"{'NDCG@50':>9}{'wall s':>8}"
    )
    for kind, mode, epochs, r in rows:
        print(
            f"{kind:<15}{mode:<11}{epochs:>7}{r['hit_rate@10']:>9.4f}{r['hit_rate@50']:>9.4f}"
            f"{r['ndcg@10']:>9.4f}{r['ndcg@50']:>9.4f}{r['wall_s']:>8.0f}"
        )


if __name__ == "__main__":
    main()
