import gzip
import logging

import numpy as np
import pandas as pd
import pytest

from lit_matching.data.readers import (
    FORMATS,
    detect_format,
    read_interactions,
    read_recbole,
    read_split_files,
    read_user_lines,
)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_tsv_parquet_and_renaming(tmp_path):
    log = pd.DataFrame(
        {"userId": [3, 1], "movieId": [10, 20], "score": [4.5, 1.0], "ts": [5, 6], "x": [0, 1]}
    )
    log.to_csv(tmp_path / "log.csv", index=False)
    log.to_csv(tmp_path / "log.csv.gz", index=False)
    log.to_csv(tmp_path / "log.tsv", sep="\t", index=False)
    log.to_csv(tmp_path / "log.psv", sep="|", index=False)
    log.to_parquet(tmp_path / "log.parquet")
    names = {"user_col": "userId", "item_col": "movieId", "rating_col": "score", "time_col": "ts"}
    for name, kwargs in [
        ("log.csv", {}),
        ("log.csv.gz", {}),
        ("log.tsv", {}),
        ("log.parquet", {}),
        ("log.psv", {"format": "csv", "sep": "|"}),
    ]:
        frame = read_interactions(tmp_path / name, **names, **kwargs)
        assert list(frame.columns) == ["user_id", "item_id", "rating", "timestamp", "x"], name
        assert frame.user_id.tolist() == [3, 1]
        assert frame.rating.tolist() == [4.5, 1.0]
        assert frame.user_id.dtype == np.int64 and frame.rating.dtype == np.float64


def test_tabular_column_errors(tmp_path):
    path = tmp_path / "log.csv"
    pd.DataFrame({"userId": [1], "item_id": [2]}).to_csv(path, index=False)
    assert list(read_interactions(path).columns) == ["userId", "item_id"]  # kept as it is
    with pytest.raises(ValueError, match=r"log\.csv: no column 'uid' to use as 'user_id'"):
        read_interactions(path, user_col="uid")
    with pytest.raises(ValueError, match="would duplicate"):
        read_interactions(path, user_col="userId", item_col="userId")


def test_movielens_dat_and_udata(tmp_path):
    dat = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n")
    udata = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    half = write(tmp_path / "ml10m.dat", "1::122::4.5::838985046\n")
    assert detect_format(dat) == "movielens-dat"
    assert detect_format(udata) == "movielens-udata"
    frame = read_interactions(dat)
    assert frame.to_dict("list") == {
        "user_id": [1, 2],
        "item_id": [1193, 661],
        "rating": [5, 3],
        "timestamp": [978300760, 978302109],
    }
    assert all(dtype == np.int64 for dtype in frame.dtypes)
    frame = read_interactions(udata)
    assert frame.item_id.tolist() == [242, 302] and frame.timestamp.dtype == np.int64
    assert read_interactions(half).rating.tolist() == [4.5]


def test_movielens_errors_name_file_line_value(tmp_path):
    bad = write(tmp_path / "ratings.dat", "1::2::3::4\n\n1::x7::3::4\n")
    with pytest.raises(ValueError, match=r"ratings\.dat line 3: item_id 'x7' is not an integer"):
        read_interactions(bad)
    short = write(tmp_path / "u.data", "1\t2\t3\t4\n5\t6\t7\n")
    with pytest.raises(ValueError, match=r"u\.data line 2: missing timestamp"):
        read_interactions(short)
    tab = write(tmp_path / "artists.dat", "userID\tartistID\tweight\n2\t51\t13883\n")
    with pytest.raises(ValueError, match=r"artists\.dat line 1: .* not '::'-separated.*tsv"):
        read_interactions(tab)
    wide = write(tmp_path / "wide.dat", "1::2::3::4::5\n")
    with pytest.raises(ValueError, match=r"wide\.dat line 1: expected 4 fields .* found 5"):
        read_interactions(wide)


def test_recbole(tmp_path):
    path = write(
        tmp_path / "ml.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "007\t42\t3\t881250949\nNA\tabc\t4.5\t891717742\n",
    )
    frame = read_interactions(path)
    assert frame.to_dict("list") == {
        "user_id": ["007", "NA"],
        "item_id": ["42", "abc"],
        "rating": [3.0, 4.5],
        "timestamp": [881250949.0, 891717742.0],
    }
    assert pd.api.types.is_string_dtype(frame.user_id)
    assert frame.rating.dtype == np.float64 and frame.timestamp.dtype == np.float64


def test_recbole_errors(tmp_path):
    untyped = write(tmp_path / "a.inter", "user_id\titem_id:token\n1\t2\n")
    with pytest.raises(ValueError, match=r"a\.inter line 1: header field 'user_id'"):
        read_recbole(untyped)
    no_item = write(tmp_path / "b.inter", "user_id:token\tname:token\n1\tx\n")
    with pytest.raises(ValueError, match=r"b\.inter: .*no \['item_id'\]"):
        read_recbole(no_item)
    bad_float = write(
        tmp_path / "c.inter", "user_id:token\titem_id:token\trating:float\n1\t2\t3\n1\t3\tgood\n"
    )
    with pytest.raises(ValueError, match=r"c\.inter line 3: rating 'good' is not a number"):
        read_recbole(bad_float)


def test_triples_value_dropped_or_kept(tmp_path):
    ones = write(tmp_path / "ones" / "train.txt", "0 0 1\n0 1 1\n2 1 1\n")
    counts = write(tmp_path / "counts" / "train.txt", "0 0 1\n0 1 7\n")
    assert detect_format(ones) == "triples"
    frame = read_interactions(ones)
    assert frame.to_dict("list") == {"user_id": [0, 0, 2], "item_id": [0, 1, 1]}
    assert frame.user_id.dtype == np.int64
    assert read_interactions(counts).rating.tolist() == [1, 7]
    short = write(tmp_path / "short.txt", "0 0 1\n\n0 1\n")
    with pytest.raises(ValueError, match=r"short\.txt line 3: missing value"):
        read_interactions(short, format="triples")


def test_auto_detection(tmp_path):
    two_items = write(tmp_path / "a.txt", "0 5 6\n1 4 9 8\n")
    odd_third = write(tmp_path / "b.txt", "0 5 x\n")
    assert detect_format(two_items) == "user-lines"
    assert detect_format(odd_third) == "user-lines"
    compressed = tmp_path / "c.txt.gz"
    with gzip.open(compressed, "wt") as handle:
        handle.write("0 1 1\n")
    assert detect_format(compressed) == "triples"
    assert read_interactions(compressed).item_id.tolist() == [1]
    assert detect_format(write(tmp_path / "d.inter", "user_id:token\n")) == "recbole"
    with pytest.raises(ValueError, match=r"cannot infer the format of .*e\.json.*'csv'"):
        read_interactions(write(tmp_path / "e.json", "{}"))


def test_format_and_missing_file_errors(tmp_path):
    path = write(tmp_path / "x.txt", "0 1\n")
    with pytest.raises(ValueError, match=r"unknown format 'xml'.*'movielens-dat'"):
        read_interactions(path, format="xml")
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        read_interactions(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=r"'user-lines' has fixed columns.*user_id"):
        read_interactions(path, user_col="u")
    assert set(FORMATS) >= {"auto", "csv", "recbole", "user-lines", "triples"}


def test_user_lines_odd_cases(tmp_path, caplog):
    path = write(tmp_path / "train.txt", "0 5 3 9  \n7\n\n1 4\r\n2   8 8\n\n")
    with caplog.at_level(logging.INFO):
        frame = read_user_lines(path)
    assert frame.to_dict("list") == {
        "user_id": [0, 0, 0, 1, 2, 2],
        "item_id": [5, 3, 9, 4, 8, 8],
        "position": [0, 1, 2, 0, 0, 1],
    }
    assert all(dtype == np.int64 for dtype in frame.dtypes)
    assert "lit_matching:" in caplog.text
    assert "1 user line(s) without items" in caplog.text and "user 7 on line 2" in caplog.text
    empty = read_user_lines(write(tmp_path / "empty.txt", "\n"))
    assert len(empty) == 0 and list(empty.columns) == ["user_id", "item_id", "position"]


def test_user_lines_errors_name_line_and_token(tmp_path):
    lines = [f"{user} {user + 1} {user + 2}" for user in range(20)]
    lines[16] = "16 17 1x8"
    path = write(tmp_path / "gowalla" / "train.txt", "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"gowalla/train\.txt line 17: '1x8' is not a non-neg"):
        read_user_lines(path)
    with pytest.raises(ValueError, match=r"line 2: '-3'"):
        read_user_lines(write(tmp_path / "neg.txt", "0 1\n1 -3\n"))
    with pytest.raises(ValueError, match=r"line 1: '1234567890123456789'"):
        read_user_lines(write(tmp_path / "long.txt", "0 1234567890123456789\n"))


def test_user_lines_match_a_python_reference(tmp_path):
    rng = np.random.default_rng(0)
    lines = [
        " ".join(map(str, [user, *rng.integers(0, 10**12, size=rng.integers(1, 40))]))
        for user in rng.permutation(300)
    ]
    path = write(tmp_path / "big.txt", "\n".join(lines))  # no final newline
    expected = [
        (int(tokens[0]), int(item), position)
        for tokens in (line.split() for line in lines)
        for position, item in enumerate(tokens[1:])
    ]
    frame = read_interactions(path)
    assert [tuple(row) for row in frame.itertuples(index=False)] == expected


def test_split_files(tmp_path):
    write(tmp_path / "train.txt", "0 1 2\n1 2\n")
    write(tmp_path / "test.txt", "0 3\n")
    parts = read_split_files(tmp_path)
    assert sorted(parts) == ["test", "train"]
    assert parts["train"].item_id.tolist() == [1, 2, 2]
    write(tmp_path / "valid.txt", "1 0\n")
    parts = read_split_files(tmp_path)
    assert parts["valid"].to_dict("list") == {"user_id": [1], "item_id": [0], "position": [0]}
    (tmp_path / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.txt"):
        read_split_files(tmp_path)
    csvs = tmp_path / "csvs"
    csvs.mkdir()
    for name in ("tr.csv", "te.csv"):
        pd.DataFrame({"user_id": [1], "item_id": [name]}).to_csv(csvs / name, index=False)
    parts = read_split_files(csvs, names=("tr.csv", None, "te.csv"))
    assert parts["test"].item_id.tolist() == ["te.csv"] and "valid" not in parts
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        read_split_files(csvs, names=("missing.csv", None, "te.csv"))


def test_split_files_part_made_of_several_files(tmp_path):
    write(tmp_path / "train.txt", "0 1 2\n1 2\n")
    write(tmp_path / "valid.txt", "1 0\n")
    write(tmp_path / "test.txt", "0 3\n")
    parts = read_split_files(tmp_path, (["train.txt", "valid.txt"], None, "test.txt"))
    assert sorted(parts) == ["test", "train"]
    assert parts["train"][["user_id", "item_id"]].values.tolist() == [
        [0, 1],
        [0, 2],
        [1, 2],
        [1, 0],
    ]
    with pytest.raises(ValueError, match=r"the train part needs file names, got \[\]"):
        read_split_files(tmp_path, ([], None, "test.txt"))
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        read_split_files(tmp_path, (["train.txt", "nope.txt"], None, "test.txt"))


def test_empty_csv_names_the_file(tmp_path):
    # Issue 13, point 9: pandas' EmptyDataError named neither the file nor what was missing.
    path = write(tmp_path / "log.csv", "")
    with pytest.raises(ValueError, match=r"log\.csv line 1: the file is empty \(no header"):
        read_interactions(path)


def test_non_utf8_csv_names_file_line_and_column(tmp_path):
    # Issue 13, point 9: a Latin-1 byte gave a bare UnicodeDecodeError.
    path = tmp_path / "log.tsv"
    path.write_bytes("user_id\titem_id\n1\tcafe\n2\tcaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"log\.tsv line 3, column 'item_id': .*UTF-8.*0xe9"):
        read_interactions(path)
