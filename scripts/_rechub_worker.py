"""torch-rechub side of ``bench_vs_rechub.py``; runs in the torch-rechub virtual environment.

One run trains one of torch-rechub's MovieLens matching examples (``examples/matching/
run_ml_dssm.py``, ``run_ml_facebook_dssm.py``, ``run_ml_youtube_dnn.py`` of
datawhalechina/torch-rechub) on the ``.npz`` rows it is handed, as the example does:
``get_movielens_data`` (first genre as ``cate_id``, ``LabelEncoder`` + 1 on every sparse
feature, user / item profiles, ``generate_seq_feature_match``, ``gen_model_input``), the
model, ``MatchTrainer.fit``, ``inference_embedding`` of the test users and all items and the
example's ``match_evaluation`` (``movielens_utils.py``: Annoy, one query per user, no seen-item
filtering, ``topk_metrics``). It prints one JSON line with its times and writes the embeddings,
with raw ids, to ``--out``. With ``--curve`` (``bench_vs_rechub.py --time-to-quality``) it
trains epoch by epoch instead (:func:`train_curve`) and writes each epoch's embeddings. Only
the standard library and numpy are imported at module level, so ``bench_vs_rechub.py`` can
import :data:`SETTINGS` from here. Usage::

    python scripts/_rechub_worker.py --model dssm --npz rows.npz --out DIR [--epochs 10]
                                     [--threads 2] [--loader-workers 0] [--ks 10 50 100]
                                     [--curve]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEED = 2022  # the examples' --seed
USER_COLS = ("user_id", "gender", "age", "occupation", "zip")
SPARSE = ("user_id", "movie_id", "gender", "age", "occupation", "zip", "cate_id")


@dataclass(frozen=True)
class Settings:
    """One example's settings (argparse defaults and calls of its ``run_ml_*.py``)."""

    example: str
    mode: int  # MatchTrainer / generate_seq_feature_match mode: 0 point-, 1 pair-, 2 list-wise
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    neg_ratio: int  # as used: mode 1 forces 1 whatever the example passes
    sample_method: int  # 1: popularity ** 0.75 (word2vec)
    seq_max_len: int
    embed_dim: int
    user_dims: tuple[int, ...]
    item_dims: tuple[int, ...]  # () : the item tower is the id embedding alone (YouTubeDNN)
    activation: str
    temperature: float  # what the loss sees (the DSSMs take 0.02 but never use it)
    item_cate: bool  # the item tower has the cate_id feature


_COMMON = {
    "epochs": 10,  # --epoch
    "learning_rate": 1e-4,  # --learning_rate
    "weight_decay": 1e-6,  # --weight_decay
    "sample_method": 1,  # generate_seq_feature_match(sample_method=1, ...)
    "seq_max_len": 50,  # gen_model_input(seq_max_len=50)
    "embed_dim": 16,  # SparseFeature / SequenceFeature(embed_dim=16)
}
SETTINGS: dict[str, Settings] = {
    "dssm": Settings(
        example="run_ml_dssm.py",
        mode=0,
        batch_size=4096,
        neg_ratio=3,
        user_dims=(256, 128, 64),
        item_dims=(256, 128, 64),
        activation="prelu",
        temperature=1.0,
        item_cate=True,
        **_COMMON,
    ),
    "facebook_dssm": Settings(
        example="run_ml_facebook_dssm.py",
        mode=1,
        batch_size=2048,
        neg_ratio=1,
        user_dims=(256, 128, 64, 32),
        item_dims=(256, 128, 64, 32),
        activation="relu",
        temperature=1.0,
        item_cate=True,
        **_COMMON,
    ),
    "youtube_dnn": Settings(
        example="run_ml_youtube_dnn.py",
        mode=2,
        batch_size=2048,
        neg_ratio=3,
        user_dims=(128, 64, 16),
        item_dims=(),
        activation="relu",
        temperature=0.02,
        item_cate=False,
        **_COMMON,
    ),
}
EXAMPLE_TEMPERATURE = 0.02  # passed to all three models by the examples


def load_rows(npz: Path) -> Any:
    """The rows as the example's ``pd.read_csv`` would give them (loading is not timed)."""
    import pandas as pd

    arrays = np.load(npz)
    return pd.DataFrame({key: arrays[key] for key in arrays.files})


def prepare(data: Any, s: Settings) -> dict[str, Any]:
    """``get_movielens_data`` of the example (without its ``np.save`` caches)."""
    from sklearn.preprocessing import LabelEncoder
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.utils.data import array_replace_with_dict, df_to_dict
    from torch_rechub.utils.match import gen_model_input, generate_seq_feature_match

    data["cate_id"] = data["genres"].apply(lambda x: x.split("|")[0])
    feature_max_idx, maps = {}, {}
    for feature in SPARSE:
        lbe = LabelEncoder()
        data[feature] = lbe.fit_transform(data[feature]) + 1
        feature_max_idx[feature] = data[feature].max() + 1
        if feature in ("user_id", "movie_id"):
            maps[feature] = {code + 1: raw for code, raw in enumerate(lbe.classes_)}
    user_profile = data[list(USER_COLS)].drop_duplicates("user_id")
    item_profile = data[["movie_id", "cate_id"]].drop_duplicates("movie_id")
    df_train, df_test = generate_seq_feature_match(
        data,
        "user_id",
        "movie_id",
        time_col="timestamp",
        item_attribute_cols=[],
        sample_method=s.sample_method,
        mode=s.mode,
        neg_ratio=s.neg_ratio,
        min_item=0,
    )
    x_train = gen_model_input(
        df_train, user_profile, "user_id", item_profile, "movie_id", seq_max_len=s.seq_max_len
    )
    if s.mode == 0:
        y_train = x_train["label"]
    else:  # a placeholder (pair-wise) or the positive's column 0 (list-wise)
        y_train = np.array([0] * df_train.shape[0])
    if s.mode == 1:
        cate_map = dict(zip(item_profile["movie_id"], item_profile["cate_id"], strict=True))
        x_train["neg_cate"] = array_replace_with_dict(x_train["neg_items"], cate_map)
    x_test = gen_model_input(
        df_test, user_profile, "user_id", item_profile, "movie_id", seq_max_len=s.seq_max_len
    )
    vocab = feature_max_idx
    user_features = [
        SparseFeature(name, vocab_size=vocab[name], embed_dim=s.embed_dim) for name in USER_COLS
    ]
    user_features += [
        SequenceFeature(
            "hist_movie_id",
            vocab_size=vocab["movie_id"],
            embed_dim=s.embed_dim,
            pooling="mean",
            shared_with="movie_id",
        )
    ]
    item_cols = ["movie_id", "cate_id"] if s.item_cate else ["movie_id"]
    item_features = [
        SparseFeature(name, vocab_size=vocab[name], embed_dim=s.embed_dim) for name in item_cols
    ]
    if s.mode == 1:  # as the example: own tables, not shared with movie_id / cate_id
        neg_features = [
            SparseFeature("neg_items", vocab_size=vocab["movie_id"], embed_dim=s.embed_dim),
            SparseFeature("neg_cate", vocab_size=vocab["cate_id"], embed_dim=s.embed_dim),
        ]
    elif s.mode == 2:
        neg_features = [
            SequenceFeature(
                "neg_items",
                vocab_size=vocab["movie_id"],
                embed_dim=s.embed_dim,
                pooling="concat",
                shared_with="movie_id",
            )
        ]
    else:
        neg_features = []
    return {
        "user_features": user_features,
        "item_features": item_features,
        "neg_features": neg_features,
        "x_train": x_train,
        "y_train": y_train,
        "all_item": df_to_dict(item_profile),
        "test_user": x_test,
        "user_map": maps["user_id"],
        "item_map": maps["movie_id"],
    }


def build_model(s: Settings, prepared: dict[str, Any]) -> Any:
    """The example's model."""
    from torch_rechub.models.matching import DSSM, FaceBookDSSM, YoutubeDNN

    user = {"dims": list(s.user_dims)}
    item = {"dims": list(s.item_dims)}
    if s.activation != "relu":  # the Facebook DSSM and YouTubeDNN examples keep the default
        user["activation"] = item["activation"] = s.activation
    features = prepared["user_features"], prepared["item_features"]
    if s.mode == 0:
        return DSSM(*features, temperature=EXAMPLE_TEMPERATURE, user_params=user, item_params=item)
    if s.mode == 1:
        return FaceBookDSSM(
            *features,
            prepared["neg_features"],
            temperature=EXAMPLE_TEMPERATURE,
            user_params=user,
            item_params=item,
        )
    return YoutubeDNN(
        *features, prepared["neg_features"], user_params=user, temperature=s.temperature
    )


def match_evaluation(
    user_embedding: Any, item_embedding: Any, prepared: dict[str, Any], ks: list[int]
) -> dict[str, float]:
    """``movielens_utils.match_evaluation`` of the examples, with ``topk = max(ks)``."""
    import pandas as pd
    from torch_rechub.basic.metric import topk_metrics
    from torch_rechub.utils.match import Annoy

    test_user, all_item = prepared["test_user"], prepared["all_item"]
    user_map, item_map = prepared["user_map"], prepared["item_map"]
    topk = max(ks)
    annoy = Annoy(n_trees=10)
    annoy.fit(item_embedding)
    match_res = collections.defaultdict(dict)
    for user_id, user_emb in zip(test_user["user_id"], user_embedding, strict=True):
        items_idx, _ = annoy.query(v=user_emb, n=topk)
        match_res[user_map[user_id]] = np.vectorize(item_map.get)(all_item["movie_id"][items_idx])
    data = pd.DataFrame({"user_id": test_user["user_id"], "movie_id": test_user["movie_id"]})
    data["user_id"] = data["user_id"].map(user_map)
    data["movie_id"] = data["movie_id"].map(item_map)
    user_pos_item = data.groupby("user_id").agg(list).reset_index()
    ground_truth = dict(zip(user_pos_item["user_id"], user_pos_item["movie_id"], strict=True))
    results = topk_metrics(y_true=ground_truth, y_pred=match_res, topKs=ks)
    # "Hit@10: 0.0965" strings -> {"hit@10": 0.0965}
    return {
        name.lower(): float(value)
        for lines in results.values()
        for name, value in (line.split(": ") for line in lines)
    }


def save_embeddings(out: Path, user_emb: Any, item_emb: Any, prepared: dict[str, Any]) -> None:
    """Embeddings with the raw ids of their rows, and each test user's raw target."""
    test_user, user_map, item_map = (prepared[k] for k in ("test_user", "user_map", "item_map"))
    np.save(out / "user_vectors.npy", user_emb.numpy().astype(np.float32))
    np.save(out / "item_vectors.npy", item_emb.numpy().astype(np.float32))
    np.save(out / "user_ids.npy", np.array([user_map[u] for u in test_user["user_id"]]))
    np.save(out / "test_items.npy", np.array([item_map[i] for i in test_user["movie_id"]]))
    np.save(out / "item_ids.npy", np.array([item_map[i] for i in prepared["all_item"]["movie_id"]]))


def train_curve(
    trainer: Any,
    train_dl: Any,
    infer_dls: tuple[Any, Any],
    prepared: dict[str, Any],
    out: Path,
    epochs: int,
) -> list[dict[str, Any]]:
    """``MatchTrainer.fit`` one epoch at a time, the embeddings after each in ``out/epoch_N``.

    Without a validation loader, scheduler or logger (the examples pass none) ``fit`` is
    ``train_one_epoch`` ``n_epoch`` times then ``torch.save``, so this trains the same model.
    Between epochs the clock is paused: the weights are saved (``inference_embedding`` loads
    them from ``model.pth``), users and items encoded, and the random states restored, since
    iterating a DataLoader draws from torch's global generator. ``clock_s`` of an epoch counts
    training only; the caller adds the preparation.
    """
    import torch

    model, clock, curve = trainer.model, 0.0, []
    for epoch in range(1, epochs + 1):
        began = time.perf_counter()
        trainer.train_one_epoch(train_dl)
        clock += time.perf_counter() - began
        states = random.getstate(), np.random.get_state()  # noqa: NPY002
        with torch.random.fork_rng():
            torch.save(model.state_dict(), out / "model.pth")
            user_emb = trainer.inference_embedding(model, "user", infer_dls[0], str(out))
            item_emb = trainer.inference_embedding(model, "item", infer_dls[1], str(out))
        random.setstate(states[0])
        np.random.set_state(states[1])  # noqa: NPY002
        model.mode = None  # back to training (inference_embedding leaves "item")
        (out / f"epoch_{epoch}").mkdir()
        save_embeddings(out / f"epoch_{epoch}", user_emb, item_emb, prepared)
        curve.append({"epoch": epoch, "train_s": clock, "dir": str(out / f"epoch_{epoch}")})
    return curve


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare, train, infer and evaluate as the example does; the times of each phase."""
    import torch
    from torch_rechub.trainers import MatchTrainer
    from torch_rechub.utils.data import MatchDataGenerator

    torch.set_num_threads(args.threads)
    s = SETTINGS[args.model]
    epochs = args.epochs or s.epochs
    random.seed(SEED)
    np.random.seed(SEED)  # noqa: NPY002 (torch-rechub samples negatives from the global state)
    torch.manual_seed(SEED)
    data = load_rows(args.npz)

    started = time.perf_counter()
    prepared = prepare(data, s)
    generator = MatchDataGenerator(x=prepared["x_train"], y=prepared["y_train"])
    train_dl, test_dl, item_dl = generator.generate_dataloader(
        prepared["test_user"],
        prepared["all_item"],
        batch_size=s.batch_size,
        num_workers=args.loader_workers,
    )
    prepared_at = time.perf_counter()

    model = build_model(s, prepared)
    trainer = MatchTrainer(
        model,
        mode=s.mode,
        optimizer_params={"lr": s.learning_rate, "weight_decay": s.weight_decay},
        n_epoch=epochs,
        device="cpu",
        model_path=str(args.out),
    )
    if args.curve:
        built_s = time.perf_counter() - started
        curve = train_curve(trainer, train_dl, (test_dl, item_dl), prepared, args.out, epochs)
        return {"prep_s": prepared_at - started, "built_s": built_s, "curve": curve}
    trainer.fit(train_dl)
    trained_at = time.perf_counter()

    user_emb = trainer.inference_embedding(model, "user", test_dl, model_path=str(args.out))
    item_emb = trainer.inference_embedding(model, "item", item_dl, model_path=str(args.out))
    own_metrics = match_evaluation(user_emb, item_emb, prepared, args.ks)
    evaluated_at = time.perf_counter()

    save_embeddings(args.out, user_emb, item_emb, prepared)
    rows = len(prepared["y_train"])
    return {
        "prep_s": prepared_at - started,
        "train_s": trained_at - prepared_at,
        "eval_s": evaluated_at - trained_at,
        "total_s": evaluated_at - started,
        "train_rows": rows,
        "epochs": epochs,
        "samples_per_s": rows * epochs / (trained_at - prepared_at),
        "test_users": len(prepared["test_user"]["user_id"]),
        "own_metrics": own_metrics,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=SETTINGS, required=True)
    parser.add_argument("--npz", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loader-workers", type=int, default=0)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--curve", action="store_true", help="embeddings after every epoch")
    args = parser.parse_args()
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
