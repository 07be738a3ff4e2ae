"""Streaming from prepared shards against the in-memory path (same data, same semantics)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import quiet_trainer

from lit_matching import (
    HardNegativeMiner,
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    MinedNegativeSampler,
    mine_hard_negatives,
)
from lit_matching.data.item_sets import ItemSets
from lit_matching.data.prepare import PREPARED_FILE, prepare_shards
from lit_matching.data.sampling import PopularityNegativeSampler
from lit_matching.data.shards import ShardBatches
from lit_matching.data.stored_sets import StoredItemSets

HISTORY = 4


def messy_log(rows: int = 3000, users: int = 120, items: int = 200, seed: int = 0):
    """String user ids, repeated pairs, tied timestamps, ratings; rows in no order."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, users, rows)],
            "item_id": rng.zipf(1.4, rows) % items,
            "timestamp": rng.integers(0, 400, rows),  # many ties: row order breaks them
            "rating": rng.integers(1, 6, rows).astype(float),
        }
    )


@pytest.fixture(scope="module")
def log_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("log") / "log.csv"
    messy_log().to_csv(path, index=False)
    return path


def prepared(log_file, tmp_path_factory, **options):
    out = tmp_path_factory.mktemp("prepared") / "shards"
    # Many chunks, buckets and row groups, even in a small log.
    defaults = dict(history_length=HISTORY, row_group_size=97, rows_per_bucket=700, chunk_rows=256)
    return prepare_shards(log_file, out, progress=False, **(defaults | options))


@pytest.fixture(scope="module")
def shards(log_file, tmp_path_factory):
    return prepared(log_file, tmp_path_factory)


def pair(log_file, folder, mode="listwise", **kwargs):
    """The same data module on the prepared folder and on the log in memory, set up."""
    args = dict(mode=mode, batch_size=64, num_negatives=5, history_length=3, seed=7) | kwargs
    streamed = MatchingDataModule(interactions=folder, **args)
    in_memory = MatchingDataModule(interactions=log_file, **args)
    for dm in (streamed, in_memory):
        dm.setup("fit")
    return streamed, in_memory


def same_sets(stored, expected):
    assert np.array_equal(stored.indptr, expected.indptr)
    assert np.array_equal(np.asarray(stored.indices), expected.indices)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"split": "ratio", "split_options": {"ratios": (0.7, 0.1, 0.2)}},
        {"split": "time_cut", "split_options": {"val_start": 300, "test_start": 350}},
        {"min_rating": 3.0, "duplicates": "first"},
    ],
    ids=["leave_last_out", "ratio", "time_cut", "min_rating_first"],
)
def test_prepared_data_equals_in_memory_preparation(log_file, tmp_path_factory, options):
    folder = prepared(log_file, tmp_path_factory, **options)
    kwargs = {k: v for k, v in options.items()} | {"history_length": 3}
    in_memory = MatchingDataModule(interactions=log_file, **kwargs)
    streamed = MatchingDataModule(interactions=folder, history_length=3)
    assert streamed.user_vocab.to_list() == in_memory.user_vocab.to_list()
    assert streamed.item_vocab.to_list() == in_memory.item_vocab.to_list()
    assert np.array_equal(streamed.item_counts, in_memory.item_counts)
    np.testing.assert_allclose(streamed.item_log_q, in_memory.item_log_q)
    for part in ("train", "val", "test"):
        same_sets(getattr(streamed, f"{part}_items"), getattr(in_memory, f"{part}_items"))
    for stage in ("val", "test"):
        got, expected = streamed.eval_set(stage), in_memory.eval_set(stage)
        assert np.array_equal(got.users, expected.users)
        same_sets(got.targets, expected.targets)
        same_sets(got.exclude, expected.exclude)
    users = np.arange(in_memory.num_users)
    for stage in ("val", "test", "serve"):
        got, expected = streamed.user_features(stage, users), in_memory.user_features(stage, users)
        for key in expected:
            assert torch.equal(got[key], expected[key]), (stage, key)


def epoch_rows(loader):
    rows = []
    for batch in loader:
        for user, item, history in zip(
            batch["users"].tolist(),
            batch["pos_items"].tolist(),
            batch["history"].tolist(),
            strict=True,
        ):
            rows.append((user, item, tuple(history)))
    return rows


def in_memory_rows(dm):
    """Every training row of the in-memory path with its history: one batch of all rows."""
    tuples = dm._tuples("train")
    batch = tuples.__getitems__(np.arange(len(tuples)))
    return sorted(
        zip(
            batch["users"].tolist(),
            batch["pos_items"].tolist(),
            map(tuple, batch["history"].tolist()),
            strict=True,
        )
    )


def test_an_epoch_streams_every_training_row_once_with_its_history(log_file, shards):
    streamed, in_memory = pair(log_file, shards)
    rows = epoch_rows(streamed.train_dataloader())
    # The same rows with the same histories (no leakage: strictly earlier training items).
    assert sorted(rows) == in_memory_rows(in_memory)
    assert len(streamed.train_dataloader()) == -(-len(rows) // 64)
    # Shuffled: not in the users' order, and another order the next epoch.
    assert [r[0] for r in rows] != sorted(r[0] for r in rows)
    assert epoch_rows(streamed.train_dataloader()) != rows


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_negatives_and_log_q_as_in_memory(log_file, shards, sampler):
    streamed, in_memory = pair(log_file, shards, negative_sampler=sampler)
    reference = in_memory._train_sampler
    for batch in streamed.train_dataloader():
        users, negatives = batch["users"].numpy(), batch["neg_items"].numpy()
        assert not in_memory.train_items.contains(users[:, None], negatives).any()
        np.testing.assert_allclose(
            batch["neg_log_q"].numpy(), reference.log_prob(users[:, None], negatives), rtol=1e-6
        )
        positives = batch["pos_items"].numpy()
        np.testing.assert_allclose(batch["pos_log_q"], in_memory.item_log_q[positives], rtol=1e-6)
        np.testing.assert_allclose(
            batch["neg_batch_log_q"], in_memory.item_log_q[negatives], rtol=1e-6
        )
        np.testing.assert_allclose(
            batch["pos_sampler_log_q"], reference.item_log_p[positives], rtol=1e-6
        )


@pytest.mark.parametrize("mode", ["pointwise", "pairwise", "listwise"])
def test_every_mode_gets_the_in_memory_batch_layout(log_file, shards, mode):
    streamed, in_memory = pair(log_file, shards, mode=mode)
    got = next(iter(streamed.train_dataloader()))
    expected = next(iter(in_memory.train_dataloader()))
    assert {k: (v.shape, v.dtype) for k, v in got.items()} == {
        k: (v.shape, v.dtype) for k, v in expected.items()
    }
    for stage in ("val", "test"):
        loader = getattr(streamed, f"{stage}_dataloader")()
        reference = getattr(in_memory, f"{stage}_dataloader")()
        got, expected = next(iter(loader)), next(iter(reference))
        assert sorted(got) == sorted(expected)
        assert torch.equal(got["history"].sort(0).values, expected["history"].sort(0).values)


def test_batches_depend_on_position_only_not_workers(log_file, shards):
    def epochs(num_workers, resume=None):
        dm = MatchingDataModule(
            interactions=shards, batch_size=50, history_length=2, num_workers=num_workers, seed=3
        )
        dm.setup("fit")
        if resume is not None:
            dm._epoch_counter.resume = resume
        loader = dm.train_dataloader()
        return [[(b["users"].tolist(), b["neg_items"].tolist()) for b in loader] for _ in range(2)]

    plain = epochs(0)
    assert plain[0] != plain[1]  # epochs differ
    assert epochs(2) == plain
    assert epochs(0, resume=(0, 3)) == [plain[0][3:], plain[1]]


def test_ranks_stream_disjoint_equal_shares(log_file, shards):
    dm = MatchingDataModule(interactions=shards, batch_size=40, history_length=2)
    dm.setup("fit")

    def share(rank):
        stream = ShardBatches(
            dm._prepare(),
            batch_size=40,
            sampler=dm._train_sampler,
            num_negatives=2,
            build=dm.build_batch,
            seed=0,
            rank=rank,
            world_size=2,
            history_length=2,
        )
        return len(stream), [
            (u, i)
            for b in stream
            for u, i in zip(b["users"].tolist(), b["pos_items"].tolist(), strict=True)
        ]

    (len0, rows0), (len1, rows1) = share(0), share(1)
    assert len0 == len1 and len(rows0) == len(rows1) > 0
    groups = json.loads((shards / PREPARED_FILE).read_text())["train_files"]
    whole = sum(size for f in groups for size in f["row_groups"] if size == 97)
    assert len(rows0) + len(rows1) == whole - whole % (2 * 97)
    # Row positions differ even where two rows are the same pair: compare with multiplicity.
    all_rows = pd.Series([(u, i) for u, i, _ in in_memory_rows(pair(log_file, shards)[1])])
    both = pd.Series(rows0 + rows1)
    assert both.value_counts().le(all_rows.value_counts().reindex(both.unique())).all()


def model_for(dm):
    return ListwiseMatching(IDEmbeddingTower(dm.num_users, 8), IDEmbeddingTower(dm.num_items, 8))


def test_fit_resumed_mid_epoch_equals_uninterrupted(shards, tmp_path):
    def fit(max_steps, ckpt_path=None):
        torch.manual_seed(0)
        dm = MatchingDataModule(interactions=shards, batch_size=128, num_negatives=3, seed=1)
        model = model_for(dm)
        trainer = quiet_trainer(max_steps=max_steps, max_epochs=-1, deterministic=True)
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return trainer, model

    per_epoch = len(MatchingDataModule(interactions=shards, batch_size=128).train_items.indices)
    total = 2 * -(-per_epoch // 128) - 3  # ends mid-epoch 2
    _, expected = fit(total)
    stopped, _ = fit(total // 2 + 1)  # mid-epoch 1
    stopped.save_checkpoint(tmp_path / "stop.ckpt")
    _, resumed = fit(total, tmp_path / "stop.ckpt")
    for (name, value), want in zip(
        resumed.state_dict().items(), expected.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(value, want, msg=name)


def test_stored_sets_answer_as_item_sets():
    rng = np.random.default_rng(0)
    sets = ItemSets.from_pairs(rng.integers(0, 50, 2000), rng.integers(0, 300, 2000), 50, 300)
    stored = StoredItemSets.from_item_sets(sets)
    rows, items = rng.integers(0, 50, (40, 30)), rng.integers(-1, 300, (40, 30))
    assert np.array_equal(stored.contains(rows, items), sets.contains(rows, items))
    weights = rng.random(300)
    np.testing.assert_allclose(stored.row_sums(weights), sets.row_sums(weights))
    # row_sums against a loop
    np.testing.assert_allclose(
        sets.row_sums(weights), [weights[sets.row(r)].sum() for r in range(50)]
    )
    counts = rng.integers(0, 5, 300)
    got = PopularityNegativeSampler(counts, stored).free_mass
    np.testing.assert_allclose(got, PopularityNegativeSampler(counts, sets).free_mass)


def test_prepared_arguments_and_history_are_checked(shards, log_file, tmp_path):
    with pytest.raises(ValueError, match="min_rating: fixed when"):
        MatchingDataModule(interactions=shards, min_rating=4.0).setup("fit")
    with pytest.raises(ValueError, match="history_length 9 is longer than the 4"):
        MatchingDataModule(interactions=shards, history_length=9).setup("fit")
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare_shards(log_file, shards, progress=False)
    with pytest.raises(AttributeError, match="keeps no in-memory split"):
        MatchingDataModule(interactions=shards).splits  # noqa: B018


def test_bad_logs_are_named(tmp_path):
    log = pd.DataFrame({"user_id": [1, 2, None], "item_id": [1, 2, 3], "timestamp": [1, 2, 3]})
    log.to_csv(tmp_path / "nulls.csv", index=False)
    with pytest.raises(ValueError, match="column 'user_id' has a missing id at row 2"):
        prepare_shards(tmp_path / "nulls.csv", tmp_path / "out", progress=False)
    log.dropna().to_parquet(tmp_path / "log.parquet")
    with pytest.raises(ValueError, match=r"log\.parquet: no item column 'item'; it has"):
        prepare_shards(tmp_path / "log.parquet", tmp_path / "out", item_col="item", progress=False)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_folder_of_files_is_one_log_in_file_order(tmp_path):
    log = messy_log(rows=1500)
    folder = tmp_path / "parts"
    folder.mkdir()
    for index, start in enumerate(range(0, 1500, 500)):
        log.iloc[start : start + 500].to_parquet(folder / f"part-{index}.parquet")
    shards = prepare_shards(folder, tmp_path / "out", history_length=2, chunk_rows=200)
    streamed = MatchingDataModule(interactions=shards, history_length=2)
    in_memory = MatchingDataModule(interactions=log, history_length=2)
    for part in ("train", "val", "test"):
        same_sets(getattr(streamed, f"{part}_items"), getattr(in_memory, f"{part}_items"))
    users = np.arange(in_memory.num_users)
    got, expected = streamed.user_features("test", users), in_memory.user_features("test", users)
    assert torch.equal(got["history"], expected["history"])


def test_side_features_are_encoded_for_the_prepared_vocabulary(log_file, shards):
    from lit_matching import Categorical

    items = pd.DataFrame({"item_id": np.arange(200), "kind": [f"k{i % 3}" for i in range(200)]})
    args = dict(item_side_features=items, item_feature_specs=[Categorical("kind")])
    streamed = MatchingDataModule(interactions=shards, **args).item_feature_table
    in_memory = MatchingDataModule(interactions=log_file, **args).item_feature_table
    assert streamed is not None and in_memory is not None
    got, expected = streamed.columns["kind"], in_memory.columns["kind"]
    assert got.categories == expected.categories
    assert torch.equal(got.codes, expected.codes)


def test_hard_negatives_reach_the_streamed_batches(shards):
    torch.manual_seed(0)
    dm = MatchingDataModule(interactions=shards, batch_size=128, num_negatives=3, seed=1)
    dm.setup("fit")
    loader = dm.train_dataloader()  # built before the swap, as Lightning's is
    model = model_for(dm)
    sampler = MinedNegativeSampler(dm.train_sampler, mine_hard_negatives(model, dm, 4), 1.0)
    dm.set_train_sampler(sampler)
    batches = list(loader)
    assert len(batches) == len(loader) > 1
    for batch in batches:
        users, negatives = batch["users"].numpy(), batch["neg_items"].numpy()
        assert sampler.mined.contains(users[:, None], negatives).all()
        assert not dm.train_items.contains(users[:, None], negatives).any()
    miner = HardNegativeMiner(top_k=4, start_epoch=1)
    quiet_trainer(max_epochs=2, callbacks=[miner]).fit(model_for(dm), datamodule=dm)
    assert miner.mined_epoch == 1 and isinstance(dm.train_sampler, MinedNegativeSampler)
