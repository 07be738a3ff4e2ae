import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_worker, synthetic_log

from lit_matching import MatchingDataModule
from lit_matching.data.item_sets import EvalSet, ItemSets
from lit_matching.losses.similarity import get_similarity
from lit_matching.retrieval.evaluation import (
    RetrievalEvaluator,
    evaluate_retrieval,
    most_popular_metrics,
)


def run_validate_worker(out: Path, *args: str) -> list[dict]:
    """``ddp_validate_worker.py out *args``: what each rank wrote, in rank order."""
    worker = Path(__file__).parents[1] / "ddp_validate_worker.py"
    run_worker(worker, out, *args)
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


# Exact whatever the order of additions: integer sums (popularity sums training counts).
EXACT_UNDER_SHARDING = ("coverage@", "popularity@", "users", "skipped_users")


def test_sharded_evaluation_under_two_process_ddp_equals_single_process(tmp_path):
    runs = {}
    for devices in (1, 2):
        (tmp_path / str(devices)).mkdir()
        runs[devices] = run_validate_worker(tmp_path / str(devices), str(devices))
    (single,), ranks = runs[1], runs[2]
    assert [rank["rank"] for rank in ranks] == [0, 1]
    dm = MatchingDataModule(interactions=synthetic_log(num_users=45))
    for stage in ("val", "test"):
        users = dm.eval_set(stage).users.tolist()
        expected = single["results"][stage]
        assert {"coverage@10", "popularity@10", "users"} <= set(expected)
        assert expected["users"] == len(users) and expected["recall@10"] > 0
        # one process encodes and searches every user; each of 2 ranks a disjoint half
        assert sorted(single["encoded"][stage]) == users
        shares = [rank["encoded"][stage] for rank in ranks]
        assert sorted(shares[0] + shares[1]) == users
        assert abs(len(shares[0]) - len(shares[1])) <= 1
        for rank, share in zip(ranks, shares, strict=True):
            assert sum(rank["searched"][stage]) == len(share)
            # every rank ends with the same metrics, those of one process
            assert rank["results"][stage] == ranks[0]["results"][stage]
            got = rank["results"][stage]
            assert list(got) == list(expected)
            for name, value in expected.items():
                if name.startswith(EXACT_UNDER_SHARDING):
                    assert got[name] == value, name
                else:
                    assert got[name] == pytest.approx(value, abs=1e-12), name
            logged = rank["logged"][stage]
            assert logged == ranks[0]["logged"][stage]
            assert logged == pytest.approx(single["logged"][stage], abs=1e-6)  # float32 logging
            assert len(logged) == len(expected)


def test_metrics_after_a_ddp_fit_equal_a_single_process_evaluation(tmp_path):
    # A full 2-process fit with in-batch negatives gathered across ranks; the metrics both
    # ranks computed on the final weights equal a one-process evaluation of those weights.
    from ddp_validate_worker import fit_model

    ranks = run_validate_worker(tmp_path, "fit")
    dm, model = fit_model()
    model.load_state_dict(torch.load(tmp_path / "weights.pt"))
    dm.setup("validate")
    evaluator = RetrievalEvaluator(ks=(3, 10), batch_size=7)
    single = evaluator.evaluate(
        model.eval(),
        dm.eval_set("val"),
        torch.device("cpu"),
        dm.num_items,
        dm.item_counts,
        dm.user_features("val", dm.eval_set("val").users),
    )
    for rank in ranks:  # the same on both ranks, up to the order of float64 additions
        assert rank["results"] == ranks[0]["results"]
        assert rank["results"] == pytest.approx(single, abs=1e-12)
    assert single["recall@10"] > 0


def random_case(seed=0, users=60, items=80, dim=8):
    rng = np.random.default_rng(seed)
    rows = np.arange(users)
    seen = [rng.choice(items, size=rng.integers(1, 30), replace=False) for _ in rows]
    targets = [rng.choice(np.setdiff1d(np.arange(items), s), size=2, replace=False) for s in seen]
    eval_set = EvalSet(
        users=rows,
        targets=ItemSets.from_pairs(np.repeat(rows, 2), np.concatenate(targets), users, items),
        exclude=ItemSets.from_pairs(
            np.repeat(rows, [len(s) for s in seen]), np.concatenate(seen), users, items
        ),
    )
    return (
        rng.normal(size=(users, dim)).astype(np.float32),
        rng.normal(size=(items, dim)).astype(np.float32),
        eval_set,
    )


def test_metrics_do_not_depend_on_batch_size():
    users, items, eval_set = random_case()
    reference = evaluate_retrieval(users, items, "ip", eval_set, ks=(5, 10), batch_size=4096)
    for batch_size in (1, 7, 59):
        assert (
            evaluate_retrieval(users, items, "ip", eval_set, ks=(5, 10), batch_size=batch_size)
            == reference
        )


def test_model_that_ranks_the_target_first_gets_recall_one():
    users, items, eval_set = random_case(seed=1)
    # each user's vector is the first target's item vector; its seen items are excluded, so
    # with an inner-product index on unit vectors the target is the best unseen item
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    first = np.array([eval_set.targets.row(u)[0] for u in range(len(users))])
    perfect = items[first]
    metrics = evaluate_retrieval(perfect, items, "ip", eval_set, ks=(1, 10))
    assert metrics["hit_rate@1"] == 1.0 and metrics["mrr@10"] == 1.0
    assert metrics["recall@1"] == 0.5  # two targets each, one found at rank 1
    # with one held-out item per user (leave-one-out), that model has recall 1.0 at rank 1
    single = EvalSet(
        eval_set.users,
        ItemSets.from_pairs(np.arange(len(first)), first, *eval_set.targets.shape),
        eval_set.exclude,
    )
    once = evaluate_retrieval(perfect, items, "ip", single, ks=(1, 10))
    assert once["recall@1"] == once["ndcg@10"] == once["map@10"] == 1.0


def test_approximate_index_reports_ann_recall():
    users, items, eval_set = random_case(seed=2, items=400)
    exact = evaluate_retrieval(users, items, "l2", eval_set, ks=(10,))
    assert "ann_recall@10" not in exact
    approx = evaluate_retrieval(
        users, items, "l2", eval_set, ks=(10,), index="HNSW8", search_params={"efSearch": 400}
    )
    assert approx["ann_recall@10"] == pytest.approx(1.0)  # efSearch = catalogue: exhaustive
    rough = evaluate_retrieval(
        users, items, "l2", eval_set, ks=(10,), index="IVF16,Flat", search_params={"nprobe": 1}
    )
    assert 0.0 < rough["ann_recall@10"] < 1.0
    with pytest.raises(ValueError, match="no search parameter 'nprobe'"):
        evaluate_retrieval(
            users, items, "l2", eval_set, ks=(10,), index="HNSW8", search_params={"nprobe": 4}
        )


def test_test_every_n_epochs_logs_a_test_curve_during_fit(small_log):
    import pytorch_lightning as pl
    from helpers import quiet_trainer

    from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule

    class Curve(pl.Callback):
        def __init__(self):
            self.points = []

        def on_train_epoch_end(self, trainer, pl_module):  # runs after the evaluator's
            self.points.append(
                (trainer.current_epoch, pl_module.training, dict(evaluator.results.get("test", {})))
            )

    pl.seed_everything(0)
    dm = MatchingDataModule(interactions=small_log, batch_size=32)
    model = ListwiseMatching(
        IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8), learning_rate=0.05
    )
    evaluator = RetrievalEvaluator(ks=(5,), test_every_n_epochs=2)
    curve = Curve()
    trainer = quiet_trainer(max_epochs=4, callbacks=[evaluator, curve], limit_val_batches=0)
    trainer.fit(model, dm)
    epochs_with_test = [epoch for epoch, _, metrics in curve.points if metrics]
    assert epochs_with_test == [1, 2, 3]  # first evaluated after epoch 1 (the 2nd), kept after
    assert [training for _, training, _ in curve.points] == [True] * 4  # back in train mode
    assert curve.points[1][2] != curve.points[3][2]  # evaluated again after epoch 3
    during_fit = evaluator.results["test"]["recall@5"]
    trainer.test(model, dm, verbose=False)  # the same weights, evaluated by trainer.test
    assert evaluator.results["test"]["recall@5"] == pytest.approx(during_fit)
    assert trainer.callback_metrics["test/recall@5"].item() == pytest.approx(during_fit)
    with pytest.raises(ValueError, match="test_every_n_epochs has to be a non-negative"):
        RetrievalEvaluator(test_every_n_epochs=-1)


def test_evaluator_ranks_a_zero_item_as_training():
    # Item 4's embedding is all zero: training scores it cos = 0 (F.normalize(0) = 0); the
    # evaluator's search must rank it there, not as an L2 index on unit vectors would (cos 0.5).
    from lit_matching import IDEmbeddingTower, ListwiseMatching

    torch.manual_seed(0)
    model = ListwiseMatching(IDEmbeddingTower(12, 6), IDEmbeddingTower(9, 6), similarity="cosine")
    with torch.no_grad():
        model.item_tower.embedding.weight[4] = 0.0
        training = model.similarity.matrix(
            model.user_tower(torch.arange(12)), model.item_tower(torch.arange(9))
        ).numpy()
    users = np.arange(12)
    nothing = ItemSets.from_pairs(np.zeros(0, int), np.zeros(0, int), 12, 9)
    eval_set = EvalSet(users, ItemSets.from_pairs(users, np.full(12, 4), 12, 9), nothing)
    metrics = RetrievalEvaluator(ks=(9,)).evaluate(model, eval_set, torch.device("cpu"), 9)
    ranks = (training > training[:, [4]]).sum(1) + 1
    assert len(set(ranks.tolist())) > 1  # the zero item is not simply first or last
    assert metrics["mrr@9"] == pytest.approx(np.mean(1 / ranks))


class ModeRecorder(torch.nn.Module):
    """A model whose towers record ``self.training`` at every call (as dropout would see it)."""

    def __init__(self):
        super().__init__()

        self.similarity = get_similarity("dot")
        self.table = torch.nn.Embedding(5, 3)
        self.frozen = torch.nn.Dropout(0.5)  # put in eval mode by its owner: must stay so
        self.modes: list[bool] = []

    def encode_users(self, users):
        self.modes.append(self.training)
        return self.table(users["ids"])

    encode_items = encode_users


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_encodes_in_eval_mode_and_restores_the_mode(training):
    model = ModeRecorder().train(training)
    model.frozen.eval()
    users = np.arange(3)
    eval_set = EvalSet(
        users,
        ItemSets.from_pairs(users, np.array([1, 2, 3]), 3, 5),
        ItemSets.from_pairs(users, np.array([0, 0, 0]), 3, 5),
    )
    RetrievalEvaluator(ks=(2,)).evaluate(model, eval_set, torch.device("cpu"), 5)
    assert model.modes and not any(model.modes)
    assert model.training is training and model.table.training is training
    assert not model.frozen.training


def test_most_popular_recommends_popular_unseen_items():
    users = np.array([0, 1])
    eval_set = EvalSet(
        users,
        targets=ItemSets.from_pairs(users, np.array([1, 3]), 2, 4),
        exclude=ItemSets.from_pairs(np.array([0]), np.array([0]), 2, 4),
    )
    counts = np.array([10, 5, 1, 0])
    # user 0: item 0 excluded, top-1 is item 1 (hit); user 1: top-1 item 0 (miss)
    metrics = most_popular_metrics(counts, eval_set, ks=[1, 4])
    assert metrics["hit_rate@1"] == 0.5
    assert metrics["hit_rate@4"] == 1.0


def test_evaluate_without_exclusion_can_return_seen_items():
    users = np.array([0])
    eval_set = EvalSet(
        users,
        targets=ItemSets.from_pairs(users, [0], 1, 2),
        exclude=ItemSets.from_pairs(users, [0], 1, 2),
    )
    vectors = np.array([[1.0], [0.5]], dtype=np.float32)
    query = np.array([[1.0]], dtype=np.float32)
    assert evaluate_retrieval(query, vectors, "ip", eval_set, [1])["hit_rate@1"] == 0.0
    assert (
        evaluate_retrieval(query, vectors, "ip", eval_set, [1], exclude_seen=False)["hit_rate@1"]
        == 1.0
    )
