"""Progress bars of data preparation and evaluation: when they show; they change nothing."""

import io

import numpy as np
import pytest
import torch
from helpers import quiet_trainer

from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule, RetrievalEvaluator
from lit_matching.data.item_sets import ItemSets
from lit_matching.retrieval.encoding import encode_in_batches
from lit_matching.retrieval.search import build_index, search_top_k
from lit_matching.utils.progress import ProgressBars, progress_enabled


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_enabled_rules(monkeypatch):
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    assert progress_enabled(True) and not progress_enabled(False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress_enabled(None)  # not a terminal: logs stay clean
    monkeypatch.setattr("sys.stderr", _Terminal())
    assert progress_enabled(None)
    assert not progress_enabled(None, quiet_trainer())  # enable_progress_bar=False
    assert progress_enabled(None, quiet_trainer(enable_progress_bar=True))
    assert progress_enabled(True, quiet_trainer())
    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    assert not progress_enabled(True) and not progress_enabled(None)  # rank 0 only


def test_callbacks_count_every_row_and_change_nothing():
    rng = np.random.default_rng(0)
    table = torch.nn.Embedding(10, 4)
    counted = []
    encoded = encode_in_batches(
        lambda f: table(f["ids"]), {"ids": torch.arange(10)}, "cpu", 3, counted.append
    )
    assert counted == [3, 3, 3, 1]
    plain = encode_in_batches(lambda f: table(f["ids"]), {"ids": torch.arange(10)}, "cpu", 3)
    np.testing.assert_array_equal(encoded, plain)

    index = build_index(rng.normal(size=(50, 4)).astype(np.float32), "ip")
    queries = rng.normal(size=(7, 4)).astype(np.float32)
    seen = ItemSets.from_pairs(np.arange(7), rng.integers(0, 50, 7), 7, 50)
    counted = []
    found = search_top_k(index, queries, 5, seen, batch_size=2, progress=counted.append)
    assert sum(counted) == 7 and max(counted) == 2
    np.testing.assert_array_equal(found[0], search_top_k(index, queries, 5, seen, 2)[0])
    counted = []  # multi-interest queries count users x interests
    search_top_k(index, queries.reshape(7, 1, 4).repeat(3, 1), 5, seen, 4, counted.append)
    assert sum(counted) == 21


@pytest.fixture
def fitted(small_log):
    data = MatchingDataModule(interactions=small_log, num_negatives=2, batch_size=64)
    model = ListwiseMatching(
        IDEmbeddingTower(data.num_users, 8), IDEmbeddingTower(data.num_items, 8)
    )
    return model, data


@pytest.mark.parametrize("progress", [True, None, False])
def test_evaluator_bars_follow_the_setting_and_the_trainer(fitted, progress, capsys):
    model, data = fitted
    evaluator = RetrievalEvaluator(ks=(5,), batch_size=16, progress=progress)
    capsys.readouterr()
    quiet_trainer(callbacks=[evaluator]).validate(model, data, verbose=False)
    err = capsys.readouterr().err
    shown = progress is True  # None: the quiet trainer has no progress bar
    for label in ("val: encoding users", "val: encoding items", "val: searching"):
        assert (label in err) == shown, err
    with_bars = evaluator.results["val"]
    evaluator.progress = not shown
    quiet_trainer(callbacks=[evaluator]).validate(model, data, verbose=False)
    assert evaluator.results["val"] == with_bars


def test_inside_a_rich_trainer_bars_are_tasks_of_its_display():
    """Lightning's Rich display owns the terminal while it runs: bars join it as tasks."""
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import RichProgressBar
    from rich.console import Console
    from rich.progress import Progress

    callback = RichProgressBar()
    callback.progress = Progress(console=Console(file=io.StringIO()), auto_refresh=False)
    bars = ProgressBars(SimpleNamespace(progress_bar_callback=callback), file=io.StringIO())
    with bars(10, "val: searching", "query") as progress:
        (task,) = callback.progress.tasks
        assert task.description == "val: searching" and task.total == 10
        progress(4)
        assert task.completed == 4
    assert callback.progress.tasks == []  # removed when done
    assert bars.file.getvalue() == ""  # no tqdm bar


def test_data_preparation_bar(small_log, capsys):
    assert MatchingDataModule(interactions=small_log, progress=False).num_users == 40
    assert "lit_matching data" not in capsys.readouterr().err
    data = MatchingDataModule(interactions=small_log, progress=True)
    assert data.num_users == 40
    err = capsys.readouterr().err
    for step in ("reading", "cleaning", "indexing", "splitting", "item sets"):
        assert f"lit_matching data: {step}" in err
