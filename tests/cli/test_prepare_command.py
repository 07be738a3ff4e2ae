"""``lit-matching prepare`` then ``fit`` on the prepared folder (the streaming path)."""

import json
import sys

import numpy as np
import pandas as pd
import pytest

from lit_matching.cli import main, recommend_command, run_cli
from lit_matching.data.prepare import PREPARED_FILE

SMALL = [
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def write_log(path, rows=4000, users=150, items=300):
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "user": rng.integers(0, users, rows),
            "movie": rng.integers(0, items, rows),
            "timestamp": rng.permutation(rows),
        }
    ).to_csv(path, sep="\t", index=False)


def prepare(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["lit-matching", "prepare", *args])
    main()


def test_prepare_then_fit_a_sequence_model_and_recommend(tmp_path, monkeypatch, capsys):
    write_log(tmp_path / "log.tsv")
    folder = tmp_path / "prepared"
    prepare(
        monkeypatch,
        str(tmp_path / "log.tsv"),
        "--output",
        str(folder),
        "--user-col",
        "user",
        "--item-col",
        "movie",
        "--history-length",
        "50",
        "--row-group-size",
        "512",
        "--split",
        "ratio",
        "--split-option",
        "ratios=[0.8,0.1,0.1]",
        "--no-progress",
    )
    assert f"train with --data.interactions {folder}" in capsys.readouterr().out
    meta = json.loads((folder / PREPARED_FILE).read_text())
    assert meta["options"]["split_options"] == {"ratios": [0.8, 0.1, 0.1]}
    assert meta["history_length"] == 50 and meta["num_users"] == 150
    monkeypatch.chdir(tmp_path)
    # user_col / item_col still name the side tables' id columns; the log's were prepared
    cli = run_cli(["fit", "--config", "sequence", *SMALL, "--data.interactions", str(folder)])
    out = capsys.readouterr().out
    assert "recall@20" in out and "test:popular" in out
    assert cli.trainer.global_step == len(cli.datamodule.train_dataloader())
    retriever = tmp_path / "lit_matching_runs" / "sequence" / "version_0" / "retriever"
    recommend_command([str(retriever), "--user", "3", "--k", "5"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 6  # header + 5


def test_prepare_errors_name_the_problem(tmp_path, monkeypatch, capsys):
    write_log(tmp_path / "log.tsv")
    with pytest.raises(SystemExit) as exit_info:
        prepare(monkeypatch, str(tmp_path / "log.tsv"), "--output", str(tmp_path / "out"))
    assert exit_info.value.code == 1
    assert "log.tsv: no user column 'user_id'; it has ['user', 'movie', 'timestamp']" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        prepare(monkeypatch, "log.tsv", "--output", "out", "--split-option", "ratios")
    assert "expected KEY=VALUE, got 'ratios'" in capsys.readouterr().err
