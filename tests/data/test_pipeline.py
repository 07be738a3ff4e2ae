"""MatchingDataModule end to end: inputs, cleaning, splits, history, ranks."""

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from lit_matching import MatchingDataModule
from lit_matching.data.readers import read_user_lines


def write_user_lines(path, rows):
    path.write_text("".join(" ".join(map(str, row)) + "\n" for row in rows))


def test_presplit_folder_of_user_lines(tmp_path):
    write_user_lines(tmp_path / "train.txt", [[0, 1, 2, 3], [1, 2, 4], [2, 5]])
    write_user_lines(tmp_path / "valid.txt", [[0, 4], [1, 5]])
    write_user_lines(tmp_path / "test.txt", [[0, 5], [1, 1]])
    dm = MatchingDataModule(interactions=str(tmp_path), time_col=None)
    assert (dm.num_users, dm.num_items) == (3, 5)

    def raw(item_sets, user):
        return dm.item_vocab.to_raw(item_sets.row(user)).tolist()

    assert raw(dm.train_items, 0) == [1, 2, 3]
    assert raw(dm.val_items, 1) == [5] and raw(dm.test_items, 1) == [1]
    test = dm.eval_set("test")
    assert test.users.tolist() == [0, 1]
    assert set(dm.item_vocab.to_raw(test.exclude.row(0))) == {1, 2, 3, 4}


def test_presplit_training_on_train_and_valid(tmp_path):
    write_user_lines(tmp_path / "train.txt", [[0, 1, 2, 3], [1, 2, 4]])  # lines of varying
    write_user_lines(tmp_path / "valid.txt", [[0, 4], [1, 5]])  # length: not triples
    write_user_lines(tmp_path / "test.txt", [[0, 5], [1, 1]])
    files = (["train.txt", "valid.txt"], None, "test.txt")
    dm = MatchingDataModule(interactions=str(tmp_path), split_files=files, time_col=None)
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (7, 0, 2)
    assert dm.item_vocab.to_raw(dm.train_items.row(0)).tolist() == [1, 2, 3, 4]
    assert len(dm.eval_set("val").users) == 0
    test = dm.eval_set("test")  # validation items are training items now: excluded
    assert set(dm.item_vocab.to_raw(test.exclude.row(1))) == {2, 4, 5}
    frames = {name: read_user_lines(tmp_path / name) for name in ("train.txt", "valid.txt")}
    as_mapping = MatchingDataModule(
        interactions={"train": list(frames.values()), "test": str(tmp_path / "test.txt")},
        time_col=None,
    )
    assert as_mapping.splits.train[["user", "item"]].equals(dm.splits.train[["user", "item"]])


def test_presplit_mapping_rejects_leaked_pairs():
    train = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10]})
    test = pd.DataFrame({"user_id": [1], "item_id": [11]})
    dm = MatchingDataModule(interactions={"train": train, "test": test}, time_col=None)
    with pytest.raises(ValueError, match=r"\(user=0, item=1\) in train and test"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="need keys 'train' and 'test'"):
        MatchingDataModule(interactions={"train": train}).setup("fit")


def test_cleaning_steps_are_applied_and_logged(small_log, caplog):
    log = small_log.assign(rating=np.where(np.arange(len(small_log)) % 4 == 0, 1.0, 5.0))
    repeated = pd.concat([log, log.iloc[:3].assign(timestamp=log.timestamp.iloc[:3] + 100)])
    with caplog.at_level(logging.INFO):
        dm = MatchingDataModule(interactions=repeated, min_rating=3.0, min_item_interactions=3)
        dm.setup("fit")
    assert "keep_min_rating" in caplog.text and "drop_duplicates" in caplog.text
    kept = sum(len(p) for p in (dm.splits.train, dm.splits.val, dm.splits.test))
    assert kept <= (log.rating >= 3).sum()
    counts = np.bincount(
        np.concatenate([p.item for p in (dm.splits.train, dm.splits.val, dm.splits.test)])
    )
    assert counts[counts > 0].min() >= 3


def test_ratio_split_option(small_log):
    dm = MatchingDataModule(
        interactions=small_log, split="ratio", split_options={"ratios": [0.5, 0.25, 0.25]}
    )
    # 8 interactions per user: 4 train, 2 val, 2 test
    assert np.bincount(dm.splits.test.user).tolist() == [2] * 40
    assert np.bincount(dm.splits.val.user).tolist() == [2] * 40
    assert dm.eval_set("val").targets.counts().tolist() == [2] * 40
    with pytest.raises(ValueError, match="unknown split 'weekly'"):
        MatchingDataModule(split="weekly")


def history_reference(dm, stage):
    """For each row of a part, the last L source items strictly before it, by a slow loop."""
    parts = [dm.splits.train] + ([dm.splits.val] if stage == "test" else [])
    source = pd.concat(parts).sort_values("order")
    out = []
    for user, order in zip(
        getattr(dm.splits, stage).user, getattr(dm.splits, stage).order, strict=True
    ):
        before = source[(source.user == user) & (source.order < order)].item.tolist()
        out.append(before[-dm.history_length :])
    return out


@pytest.mark.parametrize("mode", ["listwise", "pointwise"])
def test_history_is_the_past_only(small_log, mode):
    dm = MatchingDataModule(
        mode=mode,
        interactions=small_log,
        history_length=3,
        batch_size=1000,
        eval_batch_size=1000,
        num_negatives=2,
    )
    dm.setup("fit")
    for stage, loader in (
        ("train", dm.train_dataloader),
        ("val", dm.val_dataloader),
        ("test", dm.test_dataloader),
    ):
        part = getattr(dm.splits, stage)
        dataset = loader().dataset
        batch = dataset.__getitems__(list(range(len(part))))
        rows = 3 if mode == "pointwise" else 1  # point-wise repeats each positive's row
        history = batch["history"][::rows].numpy()
        lengths = batch["history_length"][::rows].numpy()
        for r, expected in enumerate(history_reference(dm, stage)):
            assert lengths[r] == len(expected)
            assert history[r].tolist() == [dm.num_items] * (3 - len(expected)) + expected
        # the target itself is never in its own history
        targets = batch["pos_items" if mode == "listwise" else "items"][::rows].numpy()
        assert not (history == targets[:, None]).any()


def negatives_of(dm, rank):
    dm.trainer = SimpleNamespace(global_rank=rank, accelerator=None)
    dm.setup("fit")
    torch.manual_seed(0)
    return np.concatenate([b["neg_items"].numpy() for b in dm.train_dataloader()])


def test_ranks_draw_different_negatives_and_seeds_repeat(small_log):
    def make(seed=0):
        return MatchingDataModule(interactions=small_log, batch_size=64, seed=seed)

    rank0, rank1 = negatives_of(make(), 0), negatives_of(make(), 1)
    assert not np.array_equal(rank0, rank1)
    np.testing.assert_array_equal(rank0, negatives_of(make(), 0))
    assert not np.array_equal(rank0, negatives_of(make(seed=1), 0))


def test_files_keep_their_own_column_names(small_log, tmp_path):
    path = tmp_path / "log.csv"
    small_log.rename(columns={"user_id": "userId", "timestamp": "ts"}).to_csv(path, index=False)
    dm = MatchingDataModule(interactions=str(path), user_col="userId", time_col="ts")
    assert (dm.num_users, dm.num_items) == (40, 30)
    with pytest.raises(ValueError, match=r"no column\(s\) \['user_id', 'timestamp'\]"):
        MatchingDataModule(interactions=str(path)).setup("fit")


@pytest.mark.parametrize(
    ("stage", "parts"),
    [("val", ["train"]), ("test", ["train", "val"]), ("serve", ["train", "val", "test"])],
)
def test_user_features_hold_the_latest_known_history(small_log, stage, parts):
    dm = MatchingDataModule(interactions=small_log, history_length=4)
    users = np.array([3, 0, 17])
    features = dm.user_features(stage, users)
    assert features["ids"].tolist() == users.tolist()
    known = pd.concat([getattr(dm.splits, p) for p in parts]).sort_values("order")
    for row, user in enumerate(users):
        expected = known[known.user == user].item.tolist()[-4:]
        assert features["history_length"][row] == len(expected)
        assert features["history"][row].tolist()[-len(expected) :] == expected
    if stage != "serve":  # the evaluated target is never in its own history
        targets = getattr(dm.splits, stage)
        for row, user in enumerate(users):
            target = targets[targets.user == user].item.tolist()
            assert not set(target) & set(features["history"][row].tolist())
    assert set(MatchingDataModule(interactions=small_log).user_features(stage, users)) == {"ids"}


def test_formats_without_timestamps_need_no_time_col(tmp_path, caplog):
    # Issue 13, point 10: "no column(s) ['timestamp']" unless time_col=None was given.
    write_user_lines(tmp_path / "train.txt", [[0, 1, 2, 3], [1, 2, 4], [2, 5, 1]])
    write_user_lines(tmp_path / "test.txt", [[0, 5], [1, 1]])
    (tmp_path / "log.txt").write_text("0 3 1\n0 1 1\n0 2 1\n1 5 1\n1 2 1\n1 4 1\n")  # triples
    with caplog.at_level(logging.INFO):
        folder = MatchingDataModule(interactions=str(tmp_path))  # default time_col
        assert (folder.num_users, folder.num_items) == (3, 5)
    assert "by row order" in caplog.text  # duplicates: file order is the time order
    assert folder.time_col == "auto"
    expected = MatchingDataModule(interactions=str(tmp_path), time_col=None)
    for part in ("train", "val", "test"):
        assert getattr(folder.splits, part).equals(getattr(expected.splits, part))
    triples = MatchingDataModule(interactions=str(tmp_path / "log.txt"))
    last = triples.splits.test.item  # the users' last lines
    assert triples.item_vocab.to_raw(last).tolist() == [2, 4]
    # A time column asked for by name must exist; so must the default one in a table.
    with pytest.raises(ValueError, match=r"no column\(s\) \['timestamp'\]"):
        MatchingDataModule(interactions=str(tmp_path), time_col="timestamp").setup("fit")
    with pytest.raises(ValueError, match=r"no column\(s\) \['timestamp'\]"):
        MatchingDataModule(interactions=pd.DataFrame({"user_id": [1], "item_id": [2]})).setup()


def test_user_lines_folder_from_the_command_line(tmp_path, monkeypatch):
    from lit_matching.cli import run_cli

    monkeypatch.setattr("sys.argv", ["lit-matching"])
    monkeypatch.chdir(tmp_path)
    rows = [[user, *((user * 3 + np.arange(5)) % 12)] for user in range(8)]
    write_user_lines(tmp_path / "train.txt", [row[:4] for row in rows])
    write_user_lines(tmp_path / "valid.txt", [[row[0], row[4]] for row in rows])
    write_user_lines(tmp_path / "test.txt", [[row[0], row[5]] for row in rows])
    args = ["--trainer.max_steps=2", "--trainer.enable_progress_bar=false"]
    cli = run_cli(["fit", "--data.interactions", str(tmp_path), "--data.batch_size=4", *args])
    assert cli.trainer.global_step == 2
    assert (cli.datamodule.num_users, len(cli.datamodule.splits.test)) == (8, 8)


def test_item_counts_prepare_the_data_like_their_siblings(small_log):
    # Issue 13, point 14: AttributeError before the data was prepared.
    dm = MatchingDataModule(interactions=small_log)
    counts = dm.item_counts
    assert counts.shape == (dm.num_items,) and counts.sum() == len(dm.splits.train)
    np.testing.assert_array_equal(counts, np.bincount(dm.splits.train.item, minlength=30))
