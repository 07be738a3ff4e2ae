"""W&B logging, offline: a short fit + test, then the run's transaction log is read back."""

import json
import struct
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import wandb
from google.protobuf.message import DecodeError
from helpers import quiet_trainer
from pytorch_lightning.loggers import WandbLogger
from wandb.proto import wandb_internal_pb2

from lit_matching import (
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    RecommendationTable,
    RetrievalEvaluator,
)
from lit_matching.cli import run_cli

SMALL = [  # as in test_cli.py
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B in offline mode, every file it writes under ``tmp_path``."""
    for variable, folder in (
        ("WANDB_DIR", "runs"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CONFIG_DIR", "config"),
    ):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(variable, str(tmp_path / folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # leave pytest's output capture alone
    # W&B's service process outlives runs and resolves relative run folders against its own
    # working directory and reads the environment it started with: start a fresh one here.
    wandb.teardown()
    yield
    wandb.finish()  # a failed test may leave its run open
    wandb.teardown()


# -------------------------------------------------------------- reading an offline run
# wandb >= 0.18 writes the transaction log from its Go core and no longer ships a Python reader.
# Its framing is LevelDB's log format: a 7-byte file header (":W&B", magic, version), then
# 32 KiB blocks of chunks, each with a 7-byte header (crc32c, length, type: 1 full, 2 first,
# 3 middle, 4 last); a block tail shorter than a header is padding. The chunks of one record
# hold a serialised ``wandb_internal_pb2.Record``.
_BLOCK, _HEADER = 32768, 7


def transaction_records(path: Path):
    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:_HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a W&B transaction log"
    position, chunks = _HEADER, []
    while position + _HEADER <= len(data):
        left_in_block = _BLOCK - position % _BLOCK
        if left_in_block < _HEADER:
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + _HEADER])
        if kind == 0:  # zero padding
            position += left_in_block
            continue
        chunks.append(data[position + _HEADER : position + _HEADER + length])
        position += _HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(folder: Path, timeout: float = 60.0) -> SimpleNamespace:
    """The one offline run under ``folder``: its folder, config, history rows and artifacts.

    ``wandb.finish()`` can return before W&B's core process has written the whole log, so
    wait for its last record (``exit``).
    """
    (path,) = folder.glob("**/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = list(transaction_records(path))
        except (AssertionError, DecodeError, struct.error):  # caught mid-write
            records = []
        if records and records[-1].WhichOneof("record_type") == "exit":
            break
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.1)
    config, history, artifacts = {}, [], {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):
            updates = record.run.config.update if kind == "run" else record.config.update
            config |= {_key(item): json.loads(item.value_json) for item in updates}
        elif kind == "history":
            items = record.history.item
            history.append({_key(item): json.loads(item.value_json) for item in items})
        elif kind == "artifact":
            contents = [entry.path for entry in record.artifact.manifest.contents]
            artifacts[record.artifact.name] = (record.artifact.type, contents)
    return SimpleNamespace(folder=path.parent, config=config, history=history, artifacts=artifacts)


def logged(run: SimpleNamespace, key: str) -> list:
    return [row[key] for row in run.history if key in row]


def table_file(run: SimpleNamespace, key: str = "test/recommendations") -> dict:
    (path,) = logged(run, f"{key}/path")[-1:]
    return json.loads((run.folder / "files" / path).read_text())


# -------------------------------------------------------------- Python API
def test_fit_and_test_write_metrics_config_table_and_retriever_to_an_offline_run(
    small_log, offline_wandb, tmp_path
):
    data = MatchingDataModule(interactions=small_log, num_negatives=4, batch_size=32)
    model = ListwiseMatching(
        IDEmbeddingTower(data.num_users, 8),
        IDEmbeddingTower(data.num_items, 8),
        temperature=0.2,
        learn_temperature=True,
        learning_rate=0.05,
    )
    evaluator = RetrievalEvaluator(ks=(5, 10))
    report = RecommendationTable(
        num_users=4, k=5, item_titles={0: "zero", 10: "ten"}, log_retriever=True
    )
    logger = WandbLogger(project="lit-matching-test", save_dir=tmp_path)
    trainer = quiet_trainer(
        max_epochs=2, logger=logger, callbacks=[evaluator, report], log_every_n_steps=1
    )
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    run_id = logger.experiment.id
    wandb.finish()
    wandb.teardown()  # wait for W&B to write the run

    run = read_offline_run(tmp_path)
    assert run.config["temperature"] == 0.2 and run.config["learn_temperature"] is True
    assert run.config["learning_rate"] == 0.05
    assert len(logged(run, "train/loss")) == trainer.global_step  # every step
    temperatures = logged(run, "train/temperature")
    assert len(temperatures) == trainer.global_step
    # logged before each step's update: the initial value first, then the learned one
    assert temperatures[0] == pytest.approx(0.2) and temperatures[-1] != pytest.approx(0.2)
    assert 0.01 <= temperatures[-1] <= 1.0
    assert len(logged(run, "val/loss")) == len(logged(run, "val/recall@10")) == 2  # per epoch
    assert logged(run, "test/recall@10") == [pytest.approx(evaluator.results["test"]["recall@10"])]
    assert logged(run, "test/ndcg@5") == [pytest.approx(evaluator.results["test"]["ndcg@5"])]

    table = table_file(run)
    assert table["columns"] == ["user_id", "history", "held_out", "recommended", "hits"]
    assert table["data"] == report.table.values.tolist()
    assert len(table["data"]) == 4

    kind, files = run.artifacts[f"retriever-{run_id}"]
    assert kind == "model"
    assert {"meta.json", "index.faiss", "item_ids.json", "user_embeddings.npy"} <= set(files)


def test_without_a_wandb_logger_the_table_is_built_and_nothing_logged(small_log, caplog):
    data = MatchingDataModule(interactions=small_log, num_negatives=2)
    model = ListwiseMatching(
        IDEmbeddingTower(data.num_users, 4), IDEmbeddingTower(data.num_items, 4)
    )
    report = RecommendationTable(num_users=3, k=2, log_retriever=True)
    trainer = quiet_trainer(callbacks=[report])
    with caplog.at_level("INFO"):
        trainer.test(model, data, verbose=False)
        trainer.test(model, data, verbose=False)
    assert report.table is not None and len(report.table) == 3
    assert sum("no WandbLogger" in message for message in caplog.messages) == 1


# -------------------------------------------------------------- CLI
def test_cli_with_wandb_logger_and_table_callback(small_log, offline_wandb, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lit-matching"])
    monkeypatch.chdir(tmp_path)
    small_log.to_csv("log.csv", index=False)
    args = [
        "fit",
        "--data.interactions=log.csv",
        "--trainer.logger=pytorch_lightning.loggers.WandbLogger",
        "--trainer.logger.init_args.project=lit-matching-cli",
        "--trainer.callbacks+=lit_matching.RecommendationTable",
        "--trainer.callbacks.init_args.num_users=3",
        "--trainer.callbacks.init_args.item_titles=movielens",
        "--trainer.log_every_n_steps=1",
        *SMALL,
    ]
    cli = run_cli(args)
    run_id = cli.trainer.logger.experiment.id
    wandb.finish()
    wandb.teardown()

    # config, checkpoints and the retriever export share the run's own folder
    run_folder = tmp_path / "lit_matching_runs" / "lit-matching-cli" / run_id
    assert (run_folder / "config.yaml").is_file()
    assert (run_folder / "retriever" / "meta.json").is_file()
    assert any((run_folder / "checkpoints").glob("*.ckpt"))

    run = read_offline_run(tmp_path)
    assert run.config["temperature"] == 0.1  # the model's hyper-parameters...
    assert run.config["data"]["interactions"] == "log.csv"  # ...and the whole config
    assert run.config["model"]["init_args"]["user_tower"]["class_path"].endswith("Tower")
    assert logged(run, "train/loss") and logged(run, "val/recall@20")
    assert logged(run, "test/hit_rate@50")
    assert len(table_file(run)["data"]) == 3

    # a second run in the same place gets its own folder (Lightning's own config saving
    # would stop on the first run's config.yaml)
    second = run_cli(args)
    assert second.trainer.logger.experiment.id != run_id


# -------------------------------------------------------------- the table itself
