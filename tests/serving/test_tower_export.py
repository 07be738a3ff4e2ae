"""Every tower exports to ONNX, and onnxruntime's vectors equal PyTorch's within 1e-5.

Each tower is exported once (traced on a batch of 3 with histories of 4 columns) and then run
on other batch sizes and history widths, with histories of several lengths including empty.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import small_table

from lit_matching.data.features import Categorical, FeatureTable, Numeric
from lit_matching.data.interactions import IdVocabulary
from lit_matching.serving.onnx_tower import OnnxTower
from lit_matching.serving.tower_export import export_tower, tower_input_names
from lit_matching.towers.feature import FeatureTower
from lit_matching.towers.id import IDEmbeddingTower
from lit_matching.towers.id_history import IDHistoryTower
from lit_matching.towers.multi_interest import MultiInterestTower
from lit_matching.towers.sequence import (
    GRUTower,
    HistoryPoolingTower,
    SelfAttentionTower,
    _embed,
    align_right,
    history_mask,
)

NUM_ITEMS, DIM = 30, 8


def user_table() -> FeatureTable:
    users = pd.DataFrame({"user_id": range(6), "job": list("abcabc"), "age": range(20, 26)})
    return FeatureTable.from_frame(
        users, "user_id", IdVocabulary.from_values(range(6)), [Categorical("job"), Numeric("age")]
    )


# name -> (tower factory, reads a history, rows of its id tables)
TOWERS = {
    "id": (lambda: IDEmbeddingTower(6, DIM), False, 6),
    "pooling mean": (lambda: HistoryPoolingTower(NUM_ITEMS, DIM, pooling="mean"), True, 6),
    "pooling sum": (lambda: HistoryPoolingTower(NUM_ITEMS, DIM, pooling="sum"), True, 6),
    "pooling max + mlp": (
        lambda: HistoryPoolingTower(NUM_ITEMS, DIM, pooling="max", hidden_dims=(16,)),
        True,
        6,
    ),
    "id + history mean (simplex)": (lambda: IDHistoryTower(6, NUM_ITEMS, DIM), True, 6),
    "id + history attention, learned g": (
        lambda: IDHistoryTower(6, NUM_ITEMS, DIM, aggregation="attention", learn_id_weight=True),
        True,
        6,
    ),
    "id + history user attention": (
        lambda: IDHistoryTower(6, NUM_ITEMS, DIM, aggregation="user_attention"),
        True,
        6,
    ),
    "gru": (lambda: GRUTower(NUM_ITEMS, DIM), True, 6),
    "gru 2 layers": (lambda: GRUTower(NUM_ITEMS, DIM, hidden_size=12, num_layers=2), True, 6),
    "self-attention": (lambda: SelfAttentionTower(NUM_ITEMS, DIM, max_length=10), True, 6),
    "multi-interest attention": (
        lambda: MultiInterestTower(NUM_ITEMS, DIM, num_interests=3, extractor="attention"),
        True,
        6,
    ),
    "multi-interest routing": (
        lambda: MultiInterestTower(NUM_ITEMS, DIM, num_interests=3, extractor="routing"),
        True,
        6,
    ),
    "feature": (lambda: FeatureTower(small_table(), DIM, feature_dim=4), False, 5),
    "feature + id": (lambda: FeatureTower(user_table(), DIM, feature_dim=4, id_dim=4), False, 6),
    "youtubednn (feature + history)": (
        lambda: FeatureTower(
            user_table(), DIM, feature_dim=4, history_tower=HistoryPoolingTower(NUM_ITEMS, 6)
        ),
        True,
        6,
    ),
}


def features(batch: int, width: int, lengths: list[int], num_ids: int, seed: int) -> dict:
    """ids and LEFT-padded histories (pad ``NUM_ITEMS``) of the given lengths."""
    rng = np.random.default_rng(seed)
    history = np.full((batch, width), NUM_ITEMS, dtype=np.int64)
    for row, length in enumerate(lengths):
        if length:
            history[row, width - length :] = rng.integers(0, NUM_ITEMS, length)
    return {
        "ids": rng.integers(0, num_ids, batch),
        "history": history,
        "history_length": np.array(lengths, dtype=np.int64),
    }


@pytest.mark.parametrize("name", list(TOWERS))
def test_onnxruntime_equals_pytorch(name, tmp_path):
    make, uses_history, num_ids = TOWERS[name]
    torch.manual_seed(0)
    tower = make()
    tower.train()  # export runs in eval mode and puts the mode back
    path = export_tower(tower, tmp_path / "tower.onnx", uses_history, num_ids, NUM_ITEMS)
    assert tower.training
    tower.eval()
    runner = OnnxTower(path)
    assert set(runner.input_names) <= set(tower_input_names(uses_history))
    cases = [(5, 7, [0, 1, 3, 7, 2]), (2, 15, [15, 0]), (1, 1, [1]), (4, 2, [0, 0, 0, 0])]
    for seed, (batch, width, lengths) in enumerate(cases):
        inputs = features(batch, width, lengths, num_ids, seed)
        with torch.no_grad():
            expected = tower({key: torch.from_numpy(value) for key, value in inputs.items()})
        got = runner(inputs)
        assert got.shape == tuple(expected.shape)
        np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-5)


def test_a_missing_input_is_named(tmp_path):
    path = export_tower(GRUTower(NUM_ITEMS, DIM), tmp_path / "gru.onnx", True, 6, NUM_ITEMS)
    with pytest.raises(ValueError, match=r"gru\.onnx needs input\(s\) \['history_length'\]"):
        OnnxTower(path)({"ids": np.array([0]), "history": np.array([[1]])})


def test_gru_export_path_equals_the_packed_path():
    # The exported graph runs the GRU over every column; training packs the sequences.
    torch.manual_seed(0)
    tower = GRUTower(NUM_ITEMS, DIM, num_layers=2).eval()
    inputs = {k: torch.from_numpy(v) for k, v in features(5, 6, [0, 1, 6, 3, 2], 6, 0).items()}
    with torch.no_grad():
        packed = tower(inputs)
        history = inputs["history"]
        lengths = inputs["history_length"]
        mask = history_mask(lengths, history.shape[1])
        aligned = align_right(_embed(tower.item_embedding, history, mask), lengths)
        unpacked = tower.projection(tower._unpacked_state(aligned, lengths))
    torch.testing.assert_close(unpacked, packed, rtol=0, atol=1e-6)
    assert torch.equal(packed[0], tower.projection(torch.zeros(1, tower.gru.hidden_size))[0])


def test_gru_towers_export_again_and_again(tmp_path):
    # torch.export pins aten.gru's time axis after a process's first export; the GRU goes
    # through the TorchScript-based exporter, whose graphs keep the width free every time.
    for attempt in range(3):
        tower = GRUTower(NUM_ITEMS, DIM, num_layers=1 + attempt % 2).eval()
        path = export_tower(tower, tmp_path / f"{attempt}.onnx", True, 6, NUM_ITEMS)
        inputs = features(2, 7 + attempt, [0, 5], 6, attempt)
        with torch.no_grad():
            expected = tower({key: torch.from_numpy(value) for key, value in inputs.items()})
        np.testing.assert_allclose(OnnxTower(path)(inputs), expected.numpy(), rtol=0, atol=1e-5)
