import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lit_matching.cli import (
    config_description,
    configs_command,
    packaged_config,
    packaged_configs,
    run_cli,
)
from lit_matching.cli.configs import _resolve_configs


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    # LightningCLI warns when both sys.argv (pytest's here) and args are given.
    monkeypatch.setattr(sys, "argv", ["lit-matching"])


SMALL = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def test_packaged_configs_are_complete_and_consistent():
    assert packaged_configs() == [
        "gowalla",
        "listwise",
        "ml100k-features",
        "ml1m",
        "pairwise",
        "pointwise",
        "sequence",
    ]
    for name in packaged_configs():
        config = yaml.safe_load(Path(packaged_config(name)).read_text())
        mode = config["data"]["mode"]
        assert mode == name or name in ("sequence", "ml100k-features", "gowalla", "ml1m")
        assert config["model"]["class_path"].lower().endswith(f"{mode}matching")
        assert config["trainer"]["logger"]["init_args"]["name"] == name


def test_gowalla_config_reads_a_presplit_folder(tmp_path, monkeypatch, capsys):
    # The LightGCN layout: one line per user, "user item item ...", in train/valid/test files.
    rng = np.random.default_rng(0)
    folder = tmp_path / "gowalla"
    folder.mkdir()
    parts = {"train.txt": [], "valid.txt": [], "test.txt": []}
    for user in range(60):
        items = rng.choice(80, size=9, replace=False)
        for name, chunk in zip(parts, (items[:6], items[6:7], items[7:]), strict=True):
            parts[name].append(" ".join(map(str, [user, *chunk])))
    for name, lines in parts.items():
        (folder / name).write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", "--config", "gowalla", *SMALL])  # default path: ./gowalla
    out = capsys.readouterr().out
    assert "recall@20" in out and "ndcg@20" in out
    header = next(line for line in out.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "test", "test:popular"]  # no validation part
    dm = cli.datamodule  # trains on train.txt + valid.txt
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (420, 0, 120)
    assert cli.model.in_batch_negatives
    assert (tmp_path / "lit_matching_runs" / "gowalla" / "version_0" / "retriever").is_dir()
    # the tuning run: train.txt only, validated on valid.txt
    files = ["--data.split_files", "[train.txt, valid.txt, test.txt]"]
    dm = run_cli(["fit", "--config", "gowalla", *SMALL, *files]).datamodule
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (360, 60, 120)
    assert "val" in capsys.readouterr().out.split("metric", 1)[1].splitlines()[0]


def test_sequence_config_fills_tower_sizes_from_the_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", "--config", "sequence", *SMALL])
    assert "ListwiseMatching (cosine)" in capsys.readouterr().out
    assert type(cli.model.user_tower).__name__ == "GRUTower"
    assert cli.model.user_tower.num_items == cli.datamodule.num_items == 9066
    assert cli.model.item_tower.embedding.num_embeddings == 9066
    assert (tmp_path / "lit_matching_runs" / "sequence" / "version_0" / "retriever").is_dir()


def test_id_history_tower_gets_both_vocabulary_sizes(tmp_path, monkeypatch, capsys):
    # SimpleX's user tower reads user ids and item histories: the CLI fills both sizes.
    monkeypatch.chdir(tmp_path)
    tower = ["--model.user_tower=lit_matching.IDHistoryTower", "--model.user_tower.init_args."]
    cli = run_cli(
        [
            "fit",
            "--config",
            "sequence",
            tower[0],
            tower[1] + "embedding_dim=64",
            tower[1] + "aggregation=attention",
            tower[1] + "learn_id_weight=true",
            *SMALL,
        ]
    )
    assert "ListwiseMatching (cosine)" in capsys.readouterr().out
    users = cli.model.user_tower
    assert type(users).__name__ == "IDHistoryTower" and users.learn_id_weight
    assert (users.num_users, users.num_items) == (671, 9066)
    assert users.user_embedding.num_embeddings == 671
    assert (tmp_path / "lit_matching_runs" / "sequence" / "version_0" / "retriever").is_dir()


def test_config_names_resolve_to_packaged_files(tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text("{}")
    assert _resolve_configs(["fit"]) == ["fit", "--config", packaged_config("listwise")]
    assert _resolve_configs(["fit", "--config", "pairwise"])[2] == packaged_config("pairwise")
    assert _resolve_configs(["fit", "--config=pointwise.yaml"])[1] == (
        "--config=" + packaged_config("pointwise")
    )
    assert _resolve_configs(["fit", "-c", str(own)]) == ["fit", "-c", str(own)]
    # idempotent: DDP workers resolve the already-resolved command line again
    once = _resolve_configs(["fit", "--trainer.max_epochs=2"])
    assert _resolve_configs(once) == once


def brute_force_hit_rate(model, eval_set, k: int) -> float:
    """HR@k of an ID-tower cosine model by dense float64 scoring, seen items excluded."""
    with torch.no_grad():
        users = model.user_tower(torch.as_tensor(eval_set.users)).double().numpy()
        items = model.item_tower(torch.arange(eval_set.targets.num_items)).double().numpy()
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    scores = users @ items.T
    hits = 0
    targets, seen = (
        np.split(s.indices, s.indptr[1:-1]) for s in (eval_set.targets, eval_set.exclude)
    )
    for row in range(len(eval_set.users)):
        scores[row, seen[row]] = -np.inf
        top = np.argpartition(-scores[row], k)[:k]
        hits += bool(np.isin(targets[row], top).any())
    return hits / len(eval_set.users)


@pytest.mark.parametrize("name", ["pointwise", "pairwise", "listwise"])
def test_fit_each_packaged_config_prints_metrics(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", "--config", name, *SMALL])
    out = capsys.readouterr().out
    assert f"{name.capitalize()}Matching (cosine) on 671 users x 9066 items" in out
    for key in ("recall@10", "ndcg@20", "hit_rate@50", "mrr@50", "precision@10"):
        assert key in out
    evaluator = next(c for c in cli.trainer.callbacks if type(c).__name__ == "RetrievalEvaluator")
    assert set(evaluator.results) == {"val", "test"}
    # 3 batches do not beat popularity, so the test HR@50 (of the best checkpoint, which the
    # test stage loaded into cli.model) must equal an independent dense computation
    reference = brute_force_hit_rate(cli.model, cli.datamodule.eval_set("test"), k=50)
    assert reference > 0.0
    assert evaluator.results["test"]["hit_rate@50"] == pytest.approx(reference, abs=1e-12)
    assert (tmp_path / "lit_matching_runs" / name / "version_0" / "metrics.csv").exists()


def test_console_script_runs_end_to_end(tmp_path):
    exe = shutil.which("lit-matching", path=os.path.dirname(sys.executable))
    assert exe, "the lit-matching console script is not installed"
    result = subprocess.run(
        [exe, "fit", *SMALL], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ListwiseMatching (cosine)" in result.stdout
    assert "test:popular" in result.stdout
    assert "Wall time" in result.stdout
    exported = tmp_path / "lit_matching_runs" / "listwise" / "version_0" / "retriever"
    shown = subprocess.run(
        [exe, "recommend", str(exported), "--user", "1", "--k", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert len(shown.stdout.strip().splitlines()) == 1 + 5


def test_print_config_shows_linked_towers(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "lit_matching.ListwiseMatching"
    assert printed["data"]["mode"] == "listwise"


@pytest.mark.parametrize("name", packaged_configs())
def test_print_config_of_each_packaged_config_round_trips(name, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", name, "--print_config"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    printed, packaged = (
        yaml.safe_load(text),
        yaml.safe_load(Path(packaged_config(name)).read_text()),
    )
    assert printed["model"]["class_path"] == packaged["model"]["class_path"]
    assert printed["data"]["mode"] == packaged["data"]["mode"]
    assert printed["trainer"]["max_epochs"] == packaged["trainer"]["max_epochs"]
    # the printed config is a complete config file: read back, it prints the same
    saved = tmp_path / "printed.yaml"
    saved.write_text(text)
    with pytest.raises(SystemExit):
        run_cli(["fit", "--config", str(saved), "--print_config"])
    assert capsys.readouterr().out == text


def test_configs_command_lists_and_prints_the_packaged_configs(capsys):
    configs_command([])
    lines = capsys.readouterr().out.splitlines()
    for name in packaged_configs():
        description = config_description(name)
        assert description and len(description) <= 100  # one line, from the file's header
        assert any(line.split()[0] == name and description in line for line in lines if line)
    assert "lit-matching fit --config NAME --print_config" in lines[-1]
    configs_command(["pairwise"])
    assert capsys.readouterr().out == Path(packaged_config("pairwise")).read_text()
    with pytest.raises(SystemExit):
        configs_command(["no-such-config"])


# `lit-matching fit` under 2-process CPU DDP: tests/test_readme.py runs the README's command.


def test_fit_exports_a_retriever_that_recommend_reads(tmp_path, monkeypatch, capsys):
    from lit_matching.cli import export_command, recommend_command

    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", *SMALL])
    out = capsys.readouterr().out
    exported = tmp_path / "lit_matching_runs" / "listwise" / "version_0" / "retriever"
    assert f"Retriever exported to {exported.relative_to(tmp_path)}" in out
    assert {p.name for p in exported.iterdir()} >= {
        "user_embeddings.npy",
        "item_embeddings.npy",
        "user_ids.json",
        "item_ids.json",
        "index.faiss",
        "meta.json",
        "seen_items.npz",
    }

    recommend_command([str(exported), "--user", "1", "--user", "7", "--k", "3"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["user_id", "rank", "item_id", "score"]
    assert [line.split()[:2] for line in table[1:]] == [
        ["1", "1"],
        ["1", "2"],
        ["1", "3"],
        ["7", "1"],
        ["7", "2"],
        ["7", "3"],
    ]
    seen = set(cli.datamodule.item_vocab.to_raw(cli.datamodule.train_items.row(0)).tolist())
    assert not {int(line.split()[2]) for line in table[1:4]} & seen  # user 1 is index 0

    recommend_command([str(exported), "--item", "1", "--k", "2"])
    assert capsys.readouterr().out.splitlines()[0].split()[:3] == [
        "item_id",
        "rank",
        "similar_item_id",
    ]
    with pytest.raises(KeyError, match="999999"):
        recommend_command([str(exported), "--user", "999999"])

    # the same model exported again from its checkpoint gives the same recommendations
    checkpoint = cli.trainer.checkpoint_callback.best_model_path
    again = tmp_path / "again"
    export_command(["--ckpt_path", checkpoint, "--output", str(again)])
    capsys.readouterr()
    recommend_command([str(again), "--user", "1", "--user", "7", "--k", "3"])
    assert capsys.readouterr().out.splitlines() == table


def test_interactions_file_path_from_the_command_line(small_log, tmp_path, monkeypatch, capsys):
    # jsonargparse once replaced such a path with the file's content
    monkeypatch.chdir(tmp_path)
    small_log.to_csv("log.csv", index=False)
    cli = run_cli(["fit", "--data.interactions", "log.csv", *SMALL])
    assert cli.datamodule.interactions == "log.csv"
    assert cli.datamodule.progress is False  # --trainer.enable_progress_bar=false: no data bar
    assert (cli.datamodule.num_users, cli.datamodule.num_items) == (40, 30)
    assert "on 40 users x 30 items" in capsys.readouterr().out
