"""``lit-matching recommend DIR --all | --users-file FILE --output recs.parquet`` (issue 15)."""

import sys

import numpy as np
import pandas as pd
import pytest

from lit_matching.cli import main
from lit_matching.data.item_sets import ItemSets
from lit_matching.serving.retriever import Retriever

NUM_USERS, NUM_ITEMS = 11, 9


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An export with int user ids 0, 10, ..., 100 and item ids "i0".."i8"; user 0 saw 0-6."""
    rng = np.random.default_rng(0)
    users = rng.standard_normal((NUM_USERS, 4)).astype(np.float32)
    items = rng.standard_normal((NUM_ITEMS, 4)).astype(np.float32)
    seen = ItemSets.from_pairs(
        np.array([0] * 7 + [3, 3]), np.array([*range(7), 1, 8]), NUM_USERS, NUM_ITEMS
    )
    user_ids = [10 * u for u in range(NUM_USERS)]
    item_ids = [f"i{i}" for i in range(NUM_ITEMS)]
    retriever = Retriever(users, items, user_ids, item_ids, "dot", seen, default_k=4)
    return retriever.export(tmp_path_factory.mktemp("batch") / "retriever")


def run(monkeypatch, capsys, *args: str) -> tuple[str, str]:
    """``lit-matching recommend ARGS`` in this process: (stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["lit-matching", "recommend", *map(str, args)])
    monkeypatch.delenv("LIT_MATCHING_TRACEBACK", raising=False)
    capsys.readouterr()
    main()
    out = capsys.readouterr()
    return out.out, out.err


def test_all_users_to_parquet(exported, tmp_path, monkeypatch, capsys):
    output = tmp_path / "recs.parquet"
    out, _ = run(monkeypatch, capsys, exported, "--all", "--output", output, "--chunk-size", "3")
    retriever = Retriever.load(exported)
    expected = retriever.recommend(retriever.user_ids)  # default_k = 4 of the export
    pd.testing.assert_frame_equal(pd.read_parquet(output), expected)
    assert len(expected) == NUM_USERS * 4 - 2  # user 0 has 2 unseen items
    assert out == f"Wrote {len(expected)} recommendations for {NUM_USERS} users to {output}\n"


def test_users_file_k_and_include_seen(exported, tmp_path, monkeypatch, capsys):
    users = tmp_path / "users.txt"
    users.write_text("30\n\n0\n 30 \n")
    output = tmp_path / "recs.parquet"
    args = ["--users-file", users, "--output", output, "--k", "6", "--include-seen"]
    out, _ = run(monkeypatch, capsys, exported, *args)
    expected = Retriever.load(exported).recommend([30, 0, 30], k=6, exclude_seen=False)
    pd.testing.assert_frame_equal(pd.read_parquet(output), expected)
    assert "for 3 users" in out and "18 recommendations" in out


def test_unknown_ids_of_the_file_are_named_with_their_lines(
    exported, tmp_path, monkeypatch, capsys
):
    users = tmp_path / "users.txt"
    users.write_text("10\n\n15\n20\nbob\n")
    output = tmp_path / "recs.parquet"
    with pytest.raises(SystemExit) as exit_:
        run(monkeypatch, capsys, exported, "--users-file", users, "--output", output)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        f"lit-matching: error: unknown user id(s) in {users}: '15' (line 3), 'bob' (line 5)"
    )
    assert not output.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--output", "recs.parquet"],  # --output alone
        ["--all"],  # --all without --output
        ["--users-file", "users.txt"],
        ["--all", "--users-file", "users.txt", "--output", "recs.parquet"],
        ["--all", "--user", "10", "--output", "recs.parquet"],
        [],
    ],
)
def test_parser_errors(exported, monkeypatch, capsys, args):
    with pytest.raises(SystemExit) as exit_:
        run(monkeypatch, capsys, exported, *args)
    assert exit_.value.code == 2
    assert "lit-matching recommend: error:" in capsys.readouterr().err


def test_printing_a_table_still_works(exported, monkeypatch, capsys):
    out, _ = run(monkeypatch, capsys, exported, "--user", "30", "--k", "2")
    assert out.splitlines()[0].split() == ["user_id", "rank", "item_id", "score"]
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["30", "1"], ["30", "2"]]
