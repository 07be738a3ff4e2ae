"""lit_matching against torch-rechub 0.9.0: DSSM, Facebook DSSM, YouTubeDNN on ml-100k.

Each model is trained by both libraries with the settings of torch-rechub's own MovieLens
examples, on the same rows, with the same chronological leave-last-out split, and timed end to
end: data preparation, training, evaluation. Quality is then scored for both by one exact
evaluator. Usage::

    python scripts/bench_vs_rechub.py [--models dssm facebook_dssm youtube_dnn]
        [--epochs N] [--threads 2] [--loader-workers 0] [--data-dir ../shared/data]
        [--venv .bench/rechub-venv] [--timeout 3600] [--json results.json]
        [--time-to-quality [--lit-preset ml100k-features|in-batch] [--lit-epochs 10]]

``--time-to-quality`` answers another question (``scripts/_time_to_quality.py``): how soon
lit_matching, with its own recommended settings for the same towers, reaches torch-rechub's
final test HR@10 and HR@50; ``--epochs`` then sets rechub's epochs only.

The first run creates the torch-rechub virtual environment (``bench_data.rechub_python``:
the same torch, then ``torch-rechub==0.9.0``; ``annoy`` added for its evaluation). Every run
of a library is its own process (``bench_data.run_worker``); the torch-rechub side is
``scripts/_rechub_worker.py``, run with that environment's python.

Settings (``_rechub_worker.SETTINGS``): datawhalechina/torch-rechub
``examples/matching/run_ml_dssm.py``, ``run_ml_facebook_dssm.py``, ``run_ml_youtube_dnn.py``
(argparse defaults and the calls in ``get_movielens_data`` / ``main``) and the installed
package (``torch_rechub/utils/match.py``, ``trainers/match_trainer.py``,
``models/matching/{dssm,dssm_facebook,youtube_dnn}.py``, ``basic/layers.py``)::

    setting       DSSM                 Facebook DSSM           YouTubeDNN
    mode, loss    0 point-wise, BCE    1 pair-wise, BPR        2 list-wise, softmax CE
    epochs        10                   10                      10        (--epoch)
    batch size    4096 rows            2048                    2048      (--batch_size)
    Adam lr       1e-4                 1e-4                    1e-4      (--learning_rate)
    weight decay  1e-6                 1e-6                    1e-6      (--weight_decay)
    negatives     3                    1 (3 given; mode 1      3         (neg_ratio)
                                       forces 1)
    sampler       count ** 0.75        count ** 0.75           count ** 0.75 (sample_method=1)
    temperature   1 (0.02 given,       1 (0.02 given,          0.02
                  unused)              unused)
    user MLP      256-128-64 PReLU     256-128-64-32 ReLU      128-64-16 ReLU
    item tower    MLP 256-128-64 PReLU MLP 256-128-64-32 ReLU  id embedding only

Common to all: ``embed_dim=16`` per feature, ``seq_max_len=50``, cosine similarity (both
towers L2-normalised), seed 2022. User tower input: embeddings of user id, gender, age,
occupation, zip (all categorical) and the mean of the last 50 items' embeddings (shared with
the item id table); item tower input: item id and ``cate_id`` (the first genre). rechub's MLP
puts Linear, BatchNorm1d, activation on every layer, the last one included (``MLP(...,
output_layer=False)``). The DSSMs' ``forward`` never divides by their temperature.
ml-1m's features map to ml-100k's: ``gender``, ``age`` (categorical, as rechub label-encodes
it), ``occupation``, ``zip_code``; ``cate_id`` is the first of the item's ``class`` genres.

Data: the rows of ``ml-100k.inter`` (100,000; no repeated pairs) with the ``.user`` and
``.item`` features. Split: each user's last interaction by time is the test target.
torch-rechub's ``generate_seq_feature_match`` splits by itself: it trains on every interaction
but each user's first and last (the first is only history) and tests on the last. 415 of the
943 users have several interactions at their last timestamp and rechub sorts the whole log
with pandas' unstable default sort (on the raw timestamps only 672 of its 943 test targets
are lit_matching's), so it is handed a timestamp that breaks ties by file row (the rank of
``(timestamp, row)``): the order lit_matching uses. lit_matching trains on every
interaction but the last (``MatchingDataModule(interactions={"train": ..., "test": ...})``):
its ``leave_last_out`` split would also hold out the second-to-last for validation, which
rechub trains on. The script checks that the test targets of lit_matching's
``split="leave_last_out"``, of this pre-split and of rechub are the same pairs.

lit_matching side: ``MatchingDataModule(mode=0/1/2, negative_sampler="popularity",
popularity_alpha=0.75, history_length=50)`` with ``Categorical`` user specs and
``MultiCategorical("class", sep=" ", max_length=1)`` (the first genre) for items; towers
``FeatureTower`` (feature embeddings of 16, an id embedding of 16, and for users a mean
``HistoryPoolingTower`` sharing the item id table) with the MLP replaced by rechub's layout
(``FeatureTower``'s own MLP has no BatchNorm and no activation after its last layer), and
``IDEmbeddingTower`` items for YouTubeDNN; ``PointwiseMatching`` / ``PairwiseMatching`` /
``ListwiseMatching(log_q_correction=False)``, cosine, the temperatures above, Adam with the same
learning rate and weight decay; a plain ``pl.Trainer`` without validation, checkpointing,
logger, model summary or progress bar. Point-wise ``batch_size`` counts positives, so it is
4096 / (1 + 3) = 1024 (4096 rows a step, as rechub). Settings that differ (not expressible on
one side, or rechub quirks kept as its example has them):

* negatives: rechub draws all of them once before training, from the counts of all
  interactions (test included), and they may be the user's own items; lit_matching draws
  afresh per batch from training counts and never a training positive of the user;
* rechub trains no row for each user's first interaction (943 rows fewer than lit_matching);
* rechub's history mean runs over all 50 slots, padding included (its ``SequenceFeature`` has
  no ``padding_idx``, so the mask keeps the pads); lit_matching's over real items only;
* rechub's Facebook DSSM example embeds negatives with their own tables (``neg_items``,
  ``neg_cate`` without ``shared_with``), not the positives' ones;
* embeddings start from N(0, 1e-4) in rechub, N(0, 0.1) in lit_matching.

Timed phases (imports and torch-rechub's ``.npz`` loading are not counted):

* prep: rechub ``get_movielens_data`` of the example (label encoding, profiles,
  ``generate_seq_feature_match``, ``gen_model_input`` for train and test, without its cache
  files) + ``MatchDataGenerator(...).generate_dataloader``; lit_matching reading the ``.inter``
  file, the pre-split and ``MatchingDataModule.setup`` (which reads the side features);
* train: model construction + ``MatchTrainer.fit`` / ``pl.Trainer.fit``; samples/s counts
  training rows (point-wise: positives and negatives, pair-wise: triples, list-wise: tuples);
* eval: rechub ``inference_embedding`` (users, items) + the examples' ``match_evaluation``
  (Annoy, 10 trees, one query per user, no seen-item filtering) at top ``max(K) = 100``
  instead of the example's 10, so both search the same depth; lit_matching
  ``RetrievalEvaluator.evaluate`` (encoding, exact FAISS search with seen items excluded,
  metrics).

Quality: ``lit_matching.retrieval.evaluation.evaluate_retrieval`` (exact FAISS Flat, L2 on
L2-normalised vectors: the cosine ranking) on each library's exported user and item vectors
mapped to the same indices, once with each user's training items excluded and once not
(rechub's own evaluation does not exclude them). One target per user, so recall@K equals
HR@K. rechub's own numbers (Annoy, ``topk_metrics``) get a row of their own.

Threads: ``--threads`` for both (``torch.set_num_threads`` in each worker, ``OMP_NUM_THREADS``
and ``MKL_NUM_THREADS`` for FAISS / BLAS), ``OMP_WAIT_POLICY=PASSIVE`` exported to both
workers, and ``TQDM_DISABLE=1`` (rechub's progress bars off, as lit_matching's). rechub's
example loads with ``num_workers=8`` (``generate_dataloader``'s default); ``--loader-workers``
(default 0) sets both libraries' DataLoader processes alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from _rechub_worker import SEED, SETTINGS, Settings
from _time_to_quality import LIT_EPOCHS, PRESETS, lit_curve_worker, time_to_quality
from bench_data import ROOT, bench_trainer, cpu_model, rechub_python, run_worker
from bench_eval import annoy_python

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor, nn

    from lit_matching import FeatureTower, MatchingDataModule

KS = (10, 50, 100)
MODELS = tuple(SETTINGS)
RECHUB_WORKER = Path(__file__).resolve().with_name("_rechub_worker.py")
USER_FEATURES = ("gender", "age", "occupation", "zip_code")


# ---------------------------------------------------------------------------- data
def read_log(data_dir: Path) -> pd.DataFrame:
    """``ml-100k.inter`` with lit_matching's reader: user_id, item_id, rating, timestamp."""
    from lit_matching import read_interactions

    return read_interactions(data_dir / "ml-100k" / "ml-100k.inter")


def last_out(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each user's last interaction by time (ties: the later row) as test, the rest as train."""
    ordered = frame.sort_values(["user_id", "timestamp"], kind="stable")
    earlier = ordered.user_id.duplicated(keep="last").to_numpy()
    return {"train": ordered[earlier], "test": ordered[~earlier]}


def rechub_rows(frame: pd.DataFrame, data_dir: Path) -> dict[str, np.ndarray]:
    """The log joined with the side features, in the shape of rechub's ml-1m sample csv.

    ``timestamp`` is the rank of ``(timestamp, row)``: rechub sorts with an unstable sort, so
    ties are broken here, in the order lit_matching keeps them.
    """
    from lit_matching.data.readers import read_recbole

    users = read_recbole(data_dir / "ml-100k" / "ml-100k.user", required=["user_id"])
    items = read_recbole(data_dir / "ml-100k" / "ml-100k.item", required=["item_id"])
    joined = frame.merge(users, on="user_id", how="left").merge(items, on="item_id", how="left")
    rank = np.empty(len(frame), dtype=np.int64)
    rank[np.argsort(frame.timestamp.to_numpy(), kind="stable")] = np.arange(len(frame))
    columns = {
        "user_id": joined.user_id,
        "movie_id": joined.item_id,
        "gender": joined.gender,
        "age": joined.age,
        "occupation": joined.occupation,
        "zip": joined.zip_code,
        "genres": joined["class"].str.replace(" ", "|"),
    }
    # Fixed-width unicode arrays: no pickling needed to load them.
    arrays = {key: values.to_numpy(dtype=str) for key, values in columns.items()}
    return arrays | {"rating": joined.rating.to_numpy(), "timestamp": rank}


def lit_data(
    data_dir: Path, s: Settings, loader_workers: int, **overrides: Any
) -> MatchingDataModule:
    """The lit_matching DataModule of one model: read, pre-split, set up (timed as prep).

    ``overrides`` replace ``MatchingDataModule`` arguments (mode, negatives, batch size).
    """
    from lit_matching import Categorical, MatchingDataModule, MultiCategorical

    base = data_dir / "ml-100k"
    items: dict[str, Any] = {}
    if s.item_cate:
        items = {
            "item_side_features": str(base / "ml-100k.item"),
            "item_feature_specs": [MultiCategorical("class", sep=" ", max_length=1)],
        }
    arguments = dict(
        mode=s.mode,
        num_negatives=s.neg_ratio,
        negative_sampler="popularity",
        popularity_alpha=0.75,
        history_length=s.seq_max_len,
        user_side_features=str(base / "ml-100k.user"),
        user_feature_specs=[Categorical(name) for name in USER_FEATURES],
        batch_size=s.batch_size // (1 + s.neg_ratio) if s.mode == 0 else s.batch_size,
        num_workers=loader_workers,
        seed=SEED,
        progress=False,
    )
    dm = MatchingDataModule(
        interactions=last_out(read_log(data_dir)), **(arguments | items | overrides)
    )
    dm.setup("fit")
    return dm


# ---------------------------------------------------------------------------- lit towers
def rechub_mlp(in_dim: int, dims: Sequence[int], activation: str) -> nn.Module:
    """rechub's ``MLP(output_layer=False)``: Linear, BatchNorm1d, activation on every layer."""
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    for width in dims:
        act = nn.PReLU() if activation == "prelu" else nn.ReLU()
        layers += [nn.Linear(in_dim, width), nn.BatchNorm1d(width), act]
        in_dim = width

    class FlatMLP(nn.Sequential):
        """The layers over the last dimension of inputs of any shape (BatchNorm needs 2-D)."""

        def forward(self, x: Tensor) -> Tensor:
            out = super().forward(x.reshape(-1, x.shape[-1]))
            return torch.reshape(out, (*x.shape[:-1], out.shape[-1]))

    return FlatMLP(*layers)


def feature_tower(
    table: Any,
    dims: Sequence[int],
    s: Settings,
    num_ids: int,
    history: nn.Module | None = None,
) -> FeatureTower:
    """A ``FeatureTower`` (features + id + history) with rechub's MLP layout."""
    from torch import nn

    from lit_matching import FeatureTower

    tower = FeatureTower(
        table,
        embedding_dim=dims[-1],
        feature_dim=s.embed_dim,
        hidden_dims=dims[:-1],
        num_ids=num_ids,
        id_dim=s.embed_dim,
        history_tower=history,
    )
    first = next(m for m in tower.mlp.modules() if isinstance(m, nn.Linear))
    tower.mlp = rechub_mlp(first.in_features, dims, s.activation)
    return tower


def lit_towers(s: Settings, dm: MatchingDataModule) -> tuple[nn.Module, nn.Module]:
    """User and item towers as rechub builds them (the history shares the item id table)."""
    from lit_matching import HistoryPoolingTower, IDEmbeddingTower

    items: nn.Module
    if s.item_dims:
        items = feature_tower(dm.item_feature_table, s.item_dims, s, dm.num_items)
        table = items.id_embedding
    else:
        items = IDEmbeddingTower(dm.num_items, s.embed_dim)
        table = items.embedding
    history = HistoryPoolingTower(dm.num_items, s.embed_dim, pooling="mean", item_embedding=table)
    users = feature_tower(dm.user_feature_table, s.user_dims, s, dm.num_users, history)
    return users, items


def lit_model(s: Settings, dm: MatchingDataModule) -> Any:
    """The module of the model's mode with towers as rechub builds them."""
    from lit_matching import ListwiseMatching, PairwiseMatching, PointwiseMatching

    users, items = lit_towers(s, dm)
    common = {
        "similarity": "cosine",
        "temperature": s.temperature,
        "learning_rate": s.learning_rate,
        "weight_decay": s.weight_decay,
    }
    if s.mode == 0:
        return PointwiseMatching(users, items, **common)
    if s.mode == 1:
        return PairwiseMatching(users, items, **common)
    return ListwiseMatching(users, items, log_q_correction=False, **common)


def train_rows(s: Settings, dm: MatchingDataModule) -> int:
    """Training rows of one epoch, counted as rechub counts its samples."""
    per_positive = {0: 1 + s.neg_ratio, 1: s.neg_ratio, 2: 1}[s.mode]
    return len(dm.splits.train) * per_positive


def lit_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare, train and evaluate one model with lit_matching; embeddings to ``args.out``."""
    import pytorch_lightning as pl
    import torch

    from lit_matching import RetrievalEvaluator

    torch.set_num_threads(args.threads)
    s = SETTINGS[args.model]
    epochs = args.epochs or s.epochs
    pl.seed_everything(SEED, verbose=False)

    started = time.perf_counter()
    dm = lit_data(args.data_dir, s, args.loader_workers)
    prepared_at = time.perf_counter()

    model = lit_model(s, dm)
    trainer = bench_trainer(max_epochs=epochs)
    trainer.fit(model, datamodule=dm)
    trained_at = time.perf_counter()

    model.eval()  # BatchNorm: running statistics (evaluate() leaves the mode to the caller)
    eval_set = dm.eval_set("test")
    features = dm.user_features("test", eval_set.users)
    metrics = RetrievalEvaluator(ks=KS).evaluate(
        model, eval_set, torch.device("cpu"), dm.num_items, dm.item_counts, features
    )
    evaluated_at = time.perf_counter()

    save_test_vectors(model, dm, eval_set.users, features, args.out)
    rows = train_rows(s, dm)
    return {
        "prep_s": prepared_at - started,
        "train_s": trained_at - prepared_at,
        "eval_s": evaluated_at - trained_at,
        "total_s": evaluated_at - started,
        "train_rows": rows,
        "epochs": epochs,
        "samples_per_s": rows * epochs / (trained_at - prepared_at),
        "test_users": len(eval_set.users),
        "own_metrics": metrics,
        "threads": torch.get_num_threads(),
    }


def save_test_vectors(
    model: Any, dm: MatchingDataModule, users: np.ndarray, features: Any, out: Path
) -> None:
    """Encode the test ``users`` (their ``features``) and every item; :func:`save_vectors`."""
    import torch

    from lit_matching.retrieval.encoding import encode_in_batches

    user_vectors = encode_in_batches(model.encode_users, features, "cpu")
    items = encode_in_batches(model.encode_items, {"ids": torch.arange(dm.num_items)}, "cpu")
    save_vectors(out, user_vectors, dm.user_vocab.to_raw(users), items, dm.item_vocab.to_list())


def save_vectors(
    out: Path, users: np.ndarray, user_ids: Any, items: np.ndarray, item_ids: Any
) -> None:
    """Vectors and the raw ids of their rows, as the rechub worker writes them."""
    np.save(out / "user_vectors.npy", users)
    np.save(out / "user_ids.npy", np.asarray(user_ids).astype(str))
    np.save(out / "item_vectors.npy", items)
    np.save(out / "item_ids.npy", np.asarray(item_ids).astype(str))


# ---------------------------------------------------------------------------- quality
class Reference:
    """The test protocol both libraries are scored on: lit_matching's indices and eval set."""

    def __init__(self, frame: pd.DataFrame):
        from lit_matching import MatchingDataModule

        self.data = MatchingDataModule(interactions=last_out(frame), progress=False)
        self.eval_set = self.data.eval_set("test")
        self.frame = frame

    def test_pairs(self) -> set[tuple[str, str]]:
        """(user, item) raw ids of the pre-split's test targets."""
        return raw_pairs(self.data)

    def leave_last_out_pairs(self) -> set[tuple[str, str]]:
        """(user, item) raw ids of ``MatchingDataModule(split="leave_last_out")``'s test."""
        from lit_matching import MatchingDataModule

        return raw_pairs(
            MatchingDataModule(interactions=self.frame, split="leave_last_out", progress=False)
        )

    def metrics(self, out: Path, exclude_seen: bool) -> dict[str, float]:
        """Exact metrics of the vectors in ``out``, cosine (L2 on unit vectors)."""
        import pandas as pd

        from lit_matching import evaluate_retrieval

        users = np.load(out / "user_vectors.npy")
        items = np.load(out / "item_vectors.npy")
        user_rows = pd.Index(np.load(out / "user_ids.npy")).get_indexer(
            self.data.user_vocab.to_raw(self.eval_set.users).astype(str)
        )
        item_rows = pd.Index(np.load(out / "item_ids.npy")).get_indexer(
            np.asarray(self.data.item_vocab.to_list()).astype(str)
        )
        if (user_rows < 0).any() or (item_rows < 0).any():
            raise ValueError(
                f"{out}: vectors miss {(user_rows < 0).sum()} users, {(item_rows < 0).sum()} items"
            )
        return evaluate_retrieval(
            unit(users[user_rows]), unit(items[item_rows]), "l2", self.eval_set, KS, exclude_seen
        )


def raw_pairs(dm: MatchingDataModule) -> set[tuple[str, str]]:
    """(user, item) raw ids, as strings, of a DataModule's test part."""
    test = dm.splits.test
    users = dm.user_vocab.to_raw(test.user.to_numpy())
    items = dm.item_vocab.to_raw(test.item.to_numpy())
    return set(zip(map(str, users), map(str, items), strict=True))


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, as ``Cosine.prepare`` does (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def rechub_test_pairs(out: Path) -> set[tuple[str, str]]:
    users, items = np.load(out / "user_ids.npy"), np.load(out / "test_items.npy")
    return set(zip(users.tolist(), items.tolist(), strict=True))


# ---------------------------------------------------------------------------- runs
def run_model(
    name: str, args: argparse.Namespace, python: Path | None, npz: Path, scratch: Path
) -> dict[str, dict[str, Any] | str]:
    """Both libraries' worker on one model; results by library (a string if it failed)."""
    common = ["--model", name, "--threads", str(args.threads)]
    common += ["--loader-workers", str(args.loader_workers)]
    common += ["--epochs", str(args.epochs)] if args.epochs else []
    outs = {lib: scratch / f"{name}-{lib}" for lib in ("lit_matching", "torch-rechub")}
    for out in outs.values():
        out.mkdir()
    script = str(Path(__file__).resolve())
    lit = [sys.executable, script, "--worker", "lit", "--data-dir", str(args.data_dir)]
    rechub = [str(python), str(RECHUB_WORKER), "--npz", str(npz), "--ks", *map(str, KS)]
    commands = {"lit_matching": lit, "torch-rechub": rechub}
    results: dict[str, dict[str, Any] | str] = {}
    for library, command in commands.items():
        if library == "torch-rechub" and python is None:
            results[library] = "no torch-rechub environment"
            continue
        result = run_worker([*command, "--out", str(outs[library]), *common], args.timeout)
        if isinstance(result, dict):
            result["out"] = str(outs[library])
        results[library] = result
        print(f"  {name} {library}: {summary(result)}", flush=True)
    return results


def summary(result: dict[str, Any] | str) -> str:
    if isinstance(result, str):
        return result
    times = (f"{phase} {result[f'{phase}_s']:.2f} s" for phase in ("prep", "train", "eval"))
    return ", ".join(times)


def score(reference: Reference, results: dict[str, dict[str, Any] | str]) -> None:
    """Add the common evaluator's metrics (seen items excluded and kept) to each result."""
    for result in results.values():
        if isinstance(result, dict):
            out = Path(result["out"])
            result["metrics_excluded"] = reference.metrics(out, exclude_seen=True)
            result["metrics_kept"] = reference.metrics(out, exclude_seen=False)


def check_targets(reference: Reference, results: dict[str, dict[str, Any] | str]) -> str:
    """A line saying whether the three splits' test targets are the same pairs."""
    ours, split = reference.test_pairs(), reference.leave_last_out_pairs()
    line = f"test targets: {len(ours)} users; pre-split == leave_last_out: {ours == split}"
    rechub = results.get("torch-rechub")
    if isinstance(rechub, dict):
        theirs = rechub_test_pairs(Path(rechub["out"]))
        line += (
            f"; rechub agrees on {len(ours & theirs)} of {len(ours)} ({len(theirs)} rechub targets)"
        )
    return line


# ---------------------------------------------------------------------------- report
def timing_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | library | prep s | train s | samples/s | eval s | total s | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r = row["result"]
        if isinstance(r, str):
            lines.append(f"| {row['model']} | {row['library']} | {r} | | | | | |")
            continue
        speed = f"{row['speedup']:.1f}x" if row.get("speedup") else ""
        lines.append(
            f"| {row['model']} | {row['library']} | {r['prep_s']:.2f} | {r['train_s']:.2f} | "
            f"{r['samples_per_s']:,.0f} | {r['eval_s']:.2f} | {r['total_s']:.2f} | {speed} |"
        )
    return lines


def quality_table(rows: list[dict[str, Any]]) -> list[str]:
    names = [f"{m}@{k}" for m in ("recall", "hit_rate", "ndcg") for k in KS]
    header = " | ".join(
        n.replace("hit_rate", "HR").replace("recall", "R").replace("ndcg", "NDCG") for n in names
    )
    lines = [f"| model | library | seen items | {header} |", "|---|---|---|" + "---:|" * len(names)]
    for row in rows:
        r = row["result"]
        if isinstance(r, str):
            continue
        for key, label in (("metrics_excluded", "excluded"), ("metrics_kept", "kept")):
            values = " | ".join(f"{r[key][n]:.4f}" for n in names)
            lines.append(f"| {row['model']} | {row['library']} | {label} | {values} |")
        if row["library"] == "torch-rechub":  # its own Annoy evaluation (topk_metrics)
            own = r["own_metrics"]
            values = " | ".join(f"{own[n.replace('hit_rate', 'hit')]:.4f}" for n in names)
            lines.append(f"| {row['model']} | torch-rechub, own Annoy eval | kept | {values} |")
    return lines


def phase_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per model: rechub time / lit_matching time of each phase."""
    by_key = {(row["model"], row["library"]): row["result"] for row in rows}
    lines = []
    for model in dict.fromkeys(row["model"] for row in rows):
        lit, other = by_key.get((model, "lit_matching")), by_key.get((model, "torch-rechub"))
        if isinstance(lit, dict) and isinstance(other, dict):
            ratios = ", ".join(
                f"{phase} {other[f'{phase}_s'] / lit[f'{phase}_s']:.1f}x"
                for phase in ("prep", "train", "eval", "total")
            )
            lines.append(f"- {model}: torch-rechub time / lit_matching time: {ratios}")
    return lines


def footer(args: argparse.Namespace, notes: list[str]) -> list[str]:
    import torch

    import lit_matching

    return [
        f"machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"lit_matching {lit_matching.__version__}, torch-rechub 0.9.0; {args.threads} thread(s) "
        f"per side (torch.set_num_threads, OMP_NUM_THREADS), OMP_WAIT_POLICY=PASSIVE exported to "
        f"both workers, DataLoader workers {args.loader_workers}",
        f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; command: "
        + " ".join(["python", *sys.argv]),
        *notes,
    ]


# ---------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--venv", type=Path, default=ROOT / ".bench" / "rechub-venv")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--epochs", type=int, default=None, help="default: the example's (10)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loader-workers", type=int, default=0, help="DataLoader processes")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per worker")
    parser.add_argument("--json", type=Path, help="save the raw results here")
    parser.add_argument(
        "--time-to-quality",
        action="store_true",
        help="time lit_matching (own settings) to torch-rechub's final HR@10 / HR@50",
    )
    parser.add_argument("--lit-preset", default="ml100k-features", choices=PRESETS)
    parser.add_argument("--lit-epochs", type=int, default=LIT_EPOCHS, help="lit_matching's cap")
    parser.add_argument("--worker", choices=("lit", "lit-ttq"), help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps((lit_worker if args.worker == "lit" else lit_curve_worker)(args)))
        return
    threads = str(args.threads)
    os.environ |= {
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "TQDM_DISABLE": "1",
    }
    python = annoy_python(args.venv) if rechub_python(args.venv) is not None else None
    frame = read_log(args.data_dir)
    reference = Reference(frame)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        npz = Path(scratch) / "ml-100k.npz"
        np.savez(npz, **rechub_rows(frame, args.data_dir))
        if args.time_to_quality:
            rows = time_to_quality(args, python, npz, Path(scratch), reference)
            print("\n".join(footer(args, [f"lit_matching preset: {args.lit_preset}"])))
            if args.json:
                args.json.write_text(json.dumps({"time_to_quality": rows, "argv": sys.argv}))
            return
        for name in args.models:
            print(f"{name} ({SETTINGS[name].example}) ...", flush=True)
            results = run_model(name, args, python, npz, Path(scratch))
            score(reference, results)
            notes.append(f"{name}: {check_targets(reference, results)}")
            lit, other = results.get("lit_matching"), results.get("torch-rechub")
            for library, result in results.items():
                row: dict[str, Any] = {"model": name, "library": library, "result": result}
                if library == "lit_matching" and isinstance(lit, dict) and isinstance(other, dict):
                    row["speedup"] = other["total_s"] / lit["total_s"]
                rows.append(row)
    lines = ["", *timing_table(rows), "", *phase_lines(rows), "", *quality_table(rows), ""]
    print("\n".join(lines + footer(args, notes)))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "notes": notes, "argv": sys.argv}, indent=2))


if __name__ == "__main__":
    main()
