"""The encoded side-feature table: codes, values, lengths, options and errors."""

import logging
import math

import pandas as pd
import pytest
import torch
from helpers import SPECS, small_frame, small_table, vocab

from lit_matching.data.features import Categorical, FeatureTable, MultiCategorical, Numeric
from lit_matching.data.interactions import IdVocabulary


def test_table_codes_values_lengths(caplog):
    with caplog.at_level(logging.INFO):
        table = small_table()
    assert len(table) == 5 and table.names == ("gender", "age", "genres")
    # Vocab order 10, 20, 30, 40, 50; categories F=1, M=2 (X only in a row outside the vocab).
    gender = table["gender"]
    assert gender.codes.dtype == torch.long
    assert gender.codes.tolist() == [1, 0, 2, 2, 0]
    assert gender.cardinality == 3
    assert table.vocabulary("gender") == [None, "F", "M"]
    # Ages 10, 20, 30 known: mean 20, population std sqrt(200/3); 40 missing, 50 no row -> 0.
    age = table["age"]
    std = math.sqrt(200 / 3)
    assert age.values.dtype == torch.float32
    assert age.mean == pytest.approx(20.0) and age.std == pytest.approx(std)
    expected = [-10 / std, 0.0, 10 / std, 0.0, 0.0]
    assert age.values.tolist() == pytest.approx(expected, abs=1e-6)
    # Genres Action=1, Comedy=2, Drama=3 (Horror only outside the vocab); right-padded with 0.
    genres = table["genres"]
    assert genres.codes.tolist() == [[2, 0, 0], [0, 0, 0], [3, 1, 0], [1, 2, 3], [0, 0, 0]]
    assert genres.lengths.tolist() == [1, 0, 2, 3, 0]
    assert table.vocabulary("genres") == [None, "Action", "Comedy", "Drama"]
    assert "lit_matching: feature table for 'user_id': 1 of 5 vocabulary ids" in caplog.text
    assert "1 of 5 frame rows are not in the vocabulary" in caplog.text


def test_table_options_and_raw_numeric():
    frame = pd.DataFrame(
        {"id": ["a", "b"], "tags": [["x", "y", "z"], "y|x"], "n": [5, 5], "z": ["10", "20"]}
    )
    specs = [MultiCategorical("tags", max_length=2), Numeric("n"), Numeric("z", normalize=False)]
    table = FeatureTable.from_frame(frame, "id", IdVocabulary.from_values(["a", "b", "c"]), specs)
    assert table["tags"].codes.tolist() == [[1, 2], [2, 1], [0, 0]]
    assert table["tags"].lengths.tolist() == [2, 2, 0]
    # A constant column is only centred; without normalisation values stay raw, missing -> 0.
    assert table["n"].values.tolist() == [0.0, 0.0, 0.0]
    assert table["z"].values.tolist() == [10.0, 20.0, 0.0]
    with pytest.raises(ValueError, match="numeric"):
        table.vocabulary("n")
    with pytest.raises(KeyError, match="no feature 'nope'"):
        table["nope"]


def test_table_errors():
    frame = small_frame()
    with pytest.raises(ValueError, match=r"no column\(s\) \['occupation'\].*'user_id', 'gender'"):
        FeatureTable.from_frame(frame, "user_id", vocab(), [Categorical("occupation")])
    duplicated = pd.concat([frame, frame.iloc[[2]]], ignore_index=True)
    with pytest.raises(ValueError, match=r"repeated id.*20"):
        FeatureTable.from_frame(duplicated, "user_id", vocab(), SPECS)
    with pytest.raises(ValueError, match="non-numeric"):
        FeatureTable.from_frame(frame, "user_id", vocab(), [Numeric("gender")])
    with pytest.raises(ValueError, match="more than once"):
        FeatureTable.from_frame(frame, "user_id", vocab(), [Numeric("age"), Categorical("age")])
