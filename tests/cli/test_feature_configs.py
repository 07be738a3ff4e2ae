"""Side features from a config: the packaged ml100k-features config on tiny RecBole files."""

import sys
from pathlib import Path

import pytest
import torch
import yaml

from lit_matching import Categorical, FeatureTower, HistoryPoolingTower, MatchingDataModule
from lit_matching.cli import packaged_config, run_cli

SMALL = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
GENRES = ["Action", "Comedy", "Drama", "Film-Noir"]
OCCUPATIONS = ["artist", "doctor", "writer"]


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    # LightningCLI warns when both sys.argv (pytest's here) and args are given.
    monkeypatch.setattr(sys, "argv", ["lit-matching"])


@pytest.fixture
def recbole_files(tmp_path, monkeypatch) -> list[str]:
    """Tiny ``.inter`` / ``.user`` / ``.item`` files in ml-100k's RecBole layout, as options.

    20 users x 12 items, 6 interactions each; user 19 and item 11 have no feature row.
    """
    monkeypatch.chdir(tmp_path)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for user in range(20):
        for step in range(6):
            inter.append(f"{user}\t{(user + 2 * step) % 12}\t4\t{1000 * user + step}")
    users = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    for user in range(19):
        gender = "MF"[user % 2]
        users.append(f"{user}\t{20 + user}\t{gender}\t{OCCUPATIONS[user % 3]}\t0{user:04d}")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    for item in range(11):
        genres = " ".join(GENRES[item % 4 : item % 4 + 2])
        items.append(f"{item}\tMovie {item}\t{1990 + item % 3}\t{genres}")
    for name, lines in (("tiny.inter", inter), ("tiny.user", users), ("tiny.item", items)):
        Path(name).write_text("\n".join(lines) + "\n")
    return [
        "--data.interactions=tiny.inter",
        "--data.user_side_features=tiny.user",
        "--data.item_side_features=tiny.item",
    ]


def test_packaged_feature_config_builds_tables_from_the_files(recbole_files, tmp_path, capsys):
    cli = run_cli(["fit", "--config", "ml100k-features", *recbole_files, *SMALL])
    dm = cli.datamodule
    assert "ListwiseMatching (cosine) on 20 users x 12 items" in capsys.readouterr().out
    users, items = dm.user_feature_table, dm.item_feature_table
    assert users is not None and items is not None
    assert users.names == ("gender", "occupation", "age") and len(users) == 20
    assert items.names == ("release_year", "class") and len(items) == 12
    assert users.vocabulary("occupation") == [None, *OCCUPATIONS]
    assert items.vocabulary("class") == [None, *GENRES]  # split on " "
    assert items.vocabulary("release_year") == [None, "1990", "1991", "1992"]
    last_user = int(dm.user_vocab.to_index(["19"])[0])  # no row in tiny.user: unknown
    assert users["gender"].codes[last_user] == 0 and users["age"].values[last_user] == 0

    # each tower got its side's table (as buffers) and an id embedding per vocabulary entry
    for tower, table in ((cli.model.user_tower, users), (cli.model.item_tower, items)):
        assert isinstance(tower, FeatureTower)
        assert tower.encoder.names == table.names
        assert tower.id_embedding is not None
        assert tower.id_embedding.num_embeddings == len(table)
    first = cli.model.user_tower.encoder.parts[0]
    assert torch.equal(first.codes, users["gender"].codes)

    # the saved config keeps the specs and leaves the table to the data, so it runs again
    saved = tmp_path / "lit_matching_runs" / "ml100k-features" / "version_0" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    assert config["model"]["init_args"]["user_tower"]["init_args"]["table"] is None
    assert config["data"]["user_feature_specs"][2] == {"name": "age", "normalize": True}
    again = run_cli(["fit", "--config", str(saved), *SMALL])
    assert again.datamodule.user_feature_table.names == users.names
    assert isinstance(again.datamodule.side_features["user"][1][0], Categorical)


def test_youtubednn_user_tower_from_a_config(recbole_files, tmp_path):
    override = tmp_path / "youtubednn.yaml"
    override.write_text(
        """
model:
  class_path: lit_matching.ListwiseMatching
  init_args:
    user_tower:
      class_path: lit_matching.FeatureTower
      init_args:
        embedding_dim: 16
        id_dim: null  # merged over the packaged config: no id embedding
        history_tower:
          class_path: lit_matching.HistoryPoolingTower
          init_args: {embedding_dim: 8}
    item_tower:
      class_path: lit_matching.IDEmbeddingTower
      init_args: {embedding_dim: 16}
data:
  history_length: 4
  item_side_features: null
  item_feature_specs: []
"""
    )
    cli = run_cli(
        [
            "fit",
            "--config",
            "ml100k-features",
            "--config",
            str(override),
            *recbole_files[:2],
            *SMALL,
        ]
    )
    tower = cli.model.user_tower
    assert isinstance(tower, FeatureTower) and tower.id_embedding is None
    assert tower.encoder.names == ("gender", "occupation", "age")
    assert isinstance(tower.history_tower, HistoryPoolingTower)
    assert tower.history_tower.num_items == cli.datamodule.num_items == 12
    assert cli.model.item_tower.embedding.num_embeddings == 12


def test_bad_spec_entry_is_named(recbole_files, capsys):
    typo = "[{class_path: lit_matching.Numeric, init_args: {nam: age}}]"
    with pytest.raises(SystemExit):
        run_cli(
            [
                "fit",
                "--config",
                "ml100k-features",
                *recbole_files,
                "--data.user_feature_specs",
                typo,
            ]
        )
    error = capsys.readouterr().err
    assert "user_feature_specs" in error and "Option 'nam' is not accepted" in error

    unknown_column = "[{class_path: lit_matching.Categorical, init_args: {name: salary}}]"
    with pytest.raises(ValueError, match=r"no column\(s\) \['salary'\]"):
        run_cli(
            [
                "fit",
                "--config",
                "ml100k-features",
                *recbole_files,
                "--data.user_feature_specs",
                unknown_column,
            ]
        )

    # from Python, a dict instead of a spec is named by its position
    with pytest.raises(TypeError, match=r"user_feature_specs\[1\] is \{'name': 'age'\}"):
        MatchingDataModule(
            user_side_features="tiny.user",
            user_feature_specs=[Categorical("gender"), {"name": "age"}],
        )


def test_missing_side_feature_file_is_named(recbole_files):
    options = [*recbole_files[:2], "--data.item_side_features=missing/ml-100k.item"]
    with pytest.raises(FileNotFoundError, match=r"item_side_features file 'missing/ml-100k\.item'"):
        run_cli(["fit", "--config", "ml100k-features", *options, *SMALL])
    # the packaged config's default paths name the missing file too
    with pytest.raises(FileNotFoundError, match=r"ml-100k/ml-100k\.inter"):
        run_cli(["fit", "--config", "ml100k-features", *SMALL])


def test_packaged_feature_config_documents_its_command():
    text = Path(packaged_config("ml100k-features")).read_text()
    for option in ("interactions", "user_side_features", "item_side_features"):
        assert f"--data.{option} DATA/ml-100k/" in text
