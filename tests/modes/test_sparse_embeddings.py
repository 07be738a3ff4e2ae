"""``sparse_embeddings=True``: sparse table gradients, SparseAdam, and training in every mode."""

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from helpers import MODULES, quiet_trainer, run_worker, small_table, synthetic_log
from torch import nn

from lit_matching import (
    FeatureTower,
    GRUTower,
    HistoryPoolingTower,
    IDEmbeddingTower,
    ListwiseMatching,
    MatchingDataModule,
    SelfAttentionTower,
)
from lit_matching.modes.sparse import clip_gradients_

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers.*")

NUM_USERS, NUM_ITEMS, DIM = 5, 12, 4


def history_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """A list-wise batch with left-padded histories (pads = NUM_ITEMS), repeated items."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([0, 1, 3, 4, 4])
    history = torch.randint(0, NUM_ITEMS, (5, 4), generator=g)
    history[:, 0] = 2  # an item in several rows (and twice in a row): summed gradients
    pads = torch.arange(4).unsqueeze(0) < (4 - lengths).unsqueeze(1)
    return {
        "users": torch.tensor([0, 1, 2, 3, 4]),
        "pos_items": torch.randint(0, NUM_ITEMS, (5,), generator=g),
        "neg_items": torch.randint(0, NUM_ITEMS, (5, 3), generator=g),
        "history": history.masked_fill(pads, NUM_ITEMS),
        "history_length": lengths,
    }


def user_towers() -> dict[str, object]:
    """Builders ``item_tower -> user_tower``: own tables, and ones sharing the item table."""
    return {
        "id": lambda item: IDEmbeddingTower(NUM_USERS, DIM),
        "pool-mean-own": lambda item: HistoryPoolingTower(NUM_ITEMS, DIM, hidden_dims=(6,)),
        "pool-sum-shared": lambda item: HistoryPoolingTower(
            NUM_ITEMS, DIM, pooling="sum", item_embedding=item.embedding
        ),
        "pool-max-shared": lambda item: HistoryPoolingTower(
            NUM_ITEMS, DIM, pooling="max", item_embedding=item.embedding
        ),
        "gru-shared": lambda item: GRUTower(NUM_ITEMS, DIM, item_embedding=item.embedding),
        "attention-shared": lambda item: SelfAttentionTower(
            NUM_ITEMS, DIM, max_length=4, dropout=0.0, item_embedding=item.embedding
        ),
        "features": lambda item: FeatureTower(small_table(), embedding_dim=DIM, num_ids=5),
    }


def two_models(name: str, in_batch: bool):
    """The same towers (same seed) in a dense and in a sparse ListwiseMatching."""
    models = []
    for sparse in (False, True):
        torch.manual_seed(0)
        item = IDEmbeddingTower(NUM_ITEMS, DIM)
        user = user_towers()[name](item)
        models.append(
            ListwiseMatching(
                user,
                item,
                in_batch_negatives=in_batch,
                log_q_correction=False,
                sparse_embeddings=sparse,
            )
        )
    return models


@pytest.mark.parametrize("name", list(user_towers()))
@pytest.mark.parametrize("in_batch", [False, True])
def test_sparse_gradients_densified_equal_the_dense_gradients(name, in_batch):
    dense, sparse_model = two_models(name, in_batch)
    batch = history_batch()
    dense.compute_loss(batch).backward()
    sparse_model.compute_loss(batch).backward()
    expected = dict(dense.named_parameters())
    sparse_grads = 0
    for param_name, param in sparse_model.named_parameters():
        reference = expected[param_name].grad
        if param.grad is None:
            assert reference is None or not reference.any(), param_name
            continue
        sparse_grads += param.grad.is_sparse
        got = param.grad.to_dense() if param.grad.is_sparse else param.grad
        torch.testing.assert_close(got, reference, msg=param_name)
    # Every lookup table's gradient is sparse (a shared one once); the position table's not.
    tables = {
        id(m.weight): m for m in sparse_model.modules() if isinstance(m, nn.Embedding)
    }.values()
    looked_up = [m for m in tables if m.weight.grad is not None and m.sparse]
    expected_tables = {"id": 2, "pool-mean-own": 2, "features": 4}  # else 1, shared
    assert sparse_grads == len(looked_up) == expected_tables.get(name, 1)
    assert sparse_model.item_tower.embedding.weight.grad.is_sparse
    if name == "attention-shared":
        position = sparse_model.user_tower.position_embedding
        assert not position.sparse and not position.weight.grad.is_sparse


def lazy_adam_reference(model, batches, lr):
    """SparseAdam's documented update, in numpy: each touched row's moments and weight only.

    With one row ``r`` of a table and its gradient ``g`` in a step ``t`` (the table's step
    count), ``m_r = b1 m_r + (1 - b1) g``, ``v_r = b2 v_r + (1 - b2) g^2`` and
    ``w_r -= lr sqrt(1 - b2^t) / (1 - b1^t) * m_r / (sqrt(v_r) + eps)``; untouched rows
    keep their weights and moments.
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    model = model.double()
    params = {n: p.detach().double().numpy().copy() for n, p in model.named_parameters()}
    m = {n: np.zeros_like(w) for n, w in params.items()}
    v = {n: np.zeros_like(w) for n, w in params.items()}
    for t, batch in enumerate(batches, start=1):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(torch.from_numpy(params[n]))
        model.zero_grad()
        model.compute_loss(batch).backward()
        looked_up = {
            "user_tower.embedding.weight": np.unique(batch["users"]),
            "item_tower.embedding.weight": np.union1d(batch["pos_items"], batch["neg_items"]),
        }
        for n, p in model.named_parameters():
            g = p.grad.to_dense().double().numpy()
            if n == "log_temperature":  # dense: Adam's own update
                m[n] = beta1 * m[n] + (1 - beta1) * g
                v[n] = beta2 * v[n] + (1 - beta2) * g**2
                corrected = np.sqrt(v[n] / (1 - beta2**t)) + eps
                params[n] -= lr * m[n] / (1 - beta1**t) / corrected
                continue
            rows = looked_up[n]
            m[n][rows] = beta1 * m[n][rows] + (1 - beta1) * g[rows]
            v[n][rows] = beta2 * v[n][rows] + (1 - beta2) * g[rows] ** 2
            step = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
            params[n][rows] -= step * m[n][rows] / (np.sqrt(v[n][rows]) + eps)
    return params


def fixed_batches():
    g = torch.Generator().manual_seed(1)
    return [
        {
            "users": torch.tensor([0, 1]) + k,
            "pos_items": torch.randint(0, NUM_ITEMS, (2,), generator=g),
            "neg_items": torch.randint(0, NUM_ITEMS, (2, 2), generator=g),
        }
        for k in range(3)  # users 0-1, 1-2, 2-3: rows touched in one step only, or in two
    ]


@pytest.mark.parametrize("learn_temperature", [False, True])
def test_sparse_adam_steps_equal_the_lazy_adam_reference(learn_temperature):
    """Only tables: SparseAdam is Lightning's optimiser; with the temperature, Adam is."""
    torch.manual_seed(0)
    model = ListwiseMatching(
        IDEmbeddingTower(NUM_USERS, DIM),
        IDEmbeddingTower(NUM_ITEMS, DIM),
        log_q_correction=False,
        temperature=1.0,  # no vanishing gradient, which Adam's normalisation would blow up
        learn_temperature=learn_temperature,
        temperature_range=(0.01, 10.0),
        learning_rate=0.1,
        sparse_embeddings=True,
    )
    initial = copy.deepcopy(model)
    batches = fixed_batches()
    quiet_trainer(max_steps=len(batches)).fit(
        model, torch.utils.data.DataLoader(batches, batch_size=None)
    )
    optimizers = [*model.trainer.optimizers, *model._extra_optimizers]
    expected_types = [torch.optim.Adam] * learn_temperature + [torch.optim.SparseAdam]
    assert [type(o) for o in optimizers] == expected_types
    expected = lazy_adam_reference(initial, batches, lr=0.1)
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.detach().numpy(), expected[name], atol=1e-5)
    # User 0 was touched in step 1 only: dense Adam would move it again (momentum), SparseAdam
    # leaves it; user 4 was never touched.
    start = initial.user_tower.embedding.weight.detach()
    moved = (model.user_tower.embedding.weight.detach() - start).abs().sum(dim=1)
    assert moved[4] == 0 and moved[0] > 0


def test_first_step_equals_dense_adam():
    """At step 1, Adam moves untouched rows by 0 as well: both runs end the same."""
    runs = []
    for sparse in (False, True):
        torch.manual_seed(0)
        model = ListwiseMatching(
            HistoryPoolingTower(NUM_ITEMS, DIM, hidden_dims=(6,)),
            IDEmbeddingTower(NUM_ITEMS, DIM),
            log_q_correction=False,
            temperature=1.0,
            learn_temperature=True,
            sparse_embeddings=sparse,
        )
        batch = history_batch()
        quiet_trainer(max_steps=1).fit(model, torch.utils.data.DataLoader([batch], batch_size=None))
        runs.append(model)
    dense, sparse_model = runs
    assert [type(o).__name__ for o in sparse_model._extra_optimizers] == ["SparseAdam"]
    for (name, a), b in zip(
        dense.state_dict().items(), sparse_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name, atol=1e-6, rtol=1e-5)


def test_gradient_accumulation_equals_one_step_on_the_joined_batch():
    torch.manual_seed(0)
    first = ListwiseMatching(
        IDEmbeddingTower(NUM_USERS, DIM),
        IDEmbeddingTower(NUM_ITEMS, DIM),
        log_q_correction=False,
        learn_temperature=True,
        sparse_embeddings=True,
    )
    second = copy.deepcopy(first)
    halves = fixed_batches()[:2]
    joined = {key: torch.cat([b[key] for b in halves]) for key in halves[0]}
    loader = torch.utils.data.DataLoader
    quiet_trainer(max_steps=1, accumulate_grad_batches=2).fit(
        first, loader(halves, batch_size=None)
    )
    quiet_trainer(max_steps=1).fit(second, loader([joined], batch_size=None))
    assert first.trainer.global_step == 1
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_clipping_sparse_gradients_equals_clipping_them_dense(algorithm):
    table, linear = nn.Embedding(6, 3, sparse=True), nn.Linear(3, 1)
    (linear(table(torch.tensor([1, 1, 4]))).sum() * 5).backward()
    dense = [table.weight.grad.to_dense(), linear.weight.grad.clone(), linear.bias.grad.clone()]
    references = [nn.Parameter(g.clone()) for g in dense]
    for reference, grad in zip(references, dense, strict=True):
        reference.grad = grad
    clip = {"norm": torch.nn.utils.clip_grad_norm_, "value": torch.nn.utils.clip_grad_value_}
    clip[algorithm](references, 0.5)
    clip_gradients_([table.weight, *linear.parameters()], 0.5, algorithm)
    got = [table.weight.grad.to_dense(), linear.weight.grad, linear.bias.grad]
    for a, b in zip(got, references, strict=True):
        torch.testing.assert_close(a, b.grad)


def datamodule(mode: str) -> MatchingDataModule:
    return MatchingDataModule(
        mode=mode, interactions=synthetic_log(), batch_size=32, num_negatives=4, history_length=5
    )


def sparse_model(mode: str, dm: MatchingDataModule):
    item = IDEmbeddingTower(dm.num_items, 16)
    user = HistoryPoolingTower(dm.num_items, 16, item_embedding=item.embedding)
    return MODULES[mode](
        user, item, learning_rate=0.05, temperature=0.5, learn_temperature=True,
        sparse_embeddings=True,
    )  # fmt: skip


@pytest.mark.parametrize("mode", list(MODULES))
def test_each_mode_trains_checkpoints_and_resumes_with_sparse_tables(mode, tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = datamodule(mode)
    model = sparse_model(mode, dm)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    with torch.no_grad():
        before = sum(model.compute_loss(b).item() for b in batches) / len(batches)
    trainer = quiet_trainer(max_epochs=8, gradient_clip_val=5.0)
    trainer.fit(model, dm)
    with torch.no_grad():
        after = sum(model.compute_loss(b).item() for b in batches) / len(batches)
    assert after < 0.8 * before
    path = tmp_path / "sparse.ckpt"
    trainer.save_checkpoint(path)
    steps = model._extra_optimizers[0].state[model.item_tower.embedding.weight]["step"]
    assert steps == trainer.global_step
    resumed = sparse_model(mode, dm)
    quiet_trainer(max_epochs=9).fit(resumed, dm, ckpt_path=path)
    state = resumed._extra_optimizers[0].state[resumed.item_tower.embedding.weight]
    assert state["step"] == resumed.trainer.global_step == trainer.global_step + len(batches)


class WeightReader(nn.Module):
    """A user tower that reads its table's weight directly: a dense gradient."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(NUM_USERS, DIM)

    def forward(self, features):
        return self.table.weight[features["ids"]]


def test_a_table_read_through_its_weight_is_named():
    model = ListwiseMatching(
        WeightReader(), IDEmbeddingTower(NUM_ITEMS, DIM), log_q_correction=False,
        sparse_embeddings=True,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(fixed_batches()[:1], batch_size=None)
    with pytest.raises(ValueError, match=r"user_tower\.table\.weight got a dense gradient"):
        quiet_trainer(max_steps=1).fit(model, loader)


def test_unsupported_settings_are_explained():
    def model(**kwargs):
        return ListwiseMatching(
            IDEmbeddingTower(NUM_USERS, DIM), IDEmbeddingTower(NUM_ITEMS, DIM),
            log_q_correction=False, sparse_embeddings=True, **kwargs,
        )  # fmt: skip

    loader = torch.utils.data.DataLoader(fixed_batches()[:1], batch_size=None)
    with pytest.warns(UserWarning, match="sparse embedding tables are not decayed"):
        quiet_trainer(max_steps=1).fit(model(weight_decay=0.01), loader)
    half = model()
    half._precision_dtype = lambda: torch.float16  # a GPU's 16-mixed (CPU runs bf16 instead)
    with pytest.raises(ValueError, match="does not support float16 precision"):
        half.configure_optimizers()


def test_the_default_stays_dense():
    model = ListwiseMatching(IDEmbeddingTower(NUM_USERS, DIM), IDEmbeddingTower(NUM_ITEMS, DIM))
    assert not model.user_tower.embedding.sparse and not model.hparams["sparse_embeddings"]
    optimizer = model.configure_optimizers()
    assert type(optimizer) is torch.optim.Adam and not model._extra_optimizers
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2


def test_the_option_round_trips_through_the_cli_config(tmp_path, monkeypatch, capsys):
    from lit_matching.cli import run_cli

    monkeypatch.setattr(sys, "argv", ["lit-matching"])  # LightningCLI reads it otherwise
    monkeypatch.chdir(tmp_path)
    option = "--model.init_args.sparse_embeddings=true"
    with pytest.raises(SystemExit):
        run_cli(["fit", "--config", "listwise", option, "--print_config"])
    text = capsys.readouterr().out
    assert yaml.safe_load(text)["model"]["init_args"]["sparse_embeddings"] is True
    saved = tmp_path / "sparse.yaml"
    saved.write_text(text)
    small = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    cli = run_cli(["fit", "--config", str(saved), *small, "--trainer.enable_progress_bar=false"])
    assert cli.model.hparams["sparse_embeddings"] is True
    assert cli.model.item_tower.embedding.sparse
    assert isinstance(cli.trainer.optimizers[0], torch.optim.SparseAdam)


def test_ddp_ranks_keep_the_same_sparse_tables(tmp_path):
    """DDP all-reduces the sparse gradients: both ranks end with the same weights."""
    worker = Path(__file__).with_name("sparse_ddp_worker.py")
    run_worker(worker, tmp_path, timeout=300)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for (name, a), b in zip(rank0.items(), rank1.values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_towers_with_sparse_tables_export_to_onnx(pooling, tmp_path):
    """The sparse flag changes the backward only: the exported tower computes the same."""
    from lit_matching.modes.sparse import sparse_tables
    from lit_matching.serving.onnx_tower import OnnxTower
    from lit_matching.serving.tower_export import export_tower

    torch.manual_seed(0)
    tower = HistoryPoolingTower(NUM_ITEMS, DIM, pooling=pooling, hidden_dims=(6,))
    assert len(sparse_tables(tower)) == 1 and tower.item_embedding.sparse
    path = export_tower(tower, tmp_path / "tower.onnx", True, NUM_USERS, NUM_ITEMS)
    batch = history_batch()
    inputs = {key: batch[key].numpy() for key in ("history", "history_length")}
    inputs["ids"] = batch["users"].numpy()
    with torch.no_grad():
        expected = tower({key: torch.from_numpy(value) for key, value in inputs.items()})
    np.testing.assert_allclose(OnnxTower(path)(inputs), expected.numpy(), rtol=0, atol=1e-5)


class Scheduled(ListwiseMatching):
    """Halves the learning rate every step (as a CLI ``lr_scheduler`` would, on Lightning's)."""

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def test_the_tables_follow_the_scheduled_learning_rate(monkeypatch):
    model = Scheduled(
        IDEmbeddingTower(NUM_USERS, DIM), IDEmbeddingTower(NUM_ITEMS, DIM),
        log_q_correction=False, learn_temperature=True, learning_rate=0.1,
        sparse_embeddings=True,
    )  # fmt: skip
    seen = []
    original = torch.optim.SparseAdam.step

    def step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SparseAdam, "step", step)
    loader = torch.utils.data.DataLoader(fixed_batches(), batch_size=None)
    quiet_trainer(max_steps=3).fit(model, loader)
    assert seen == pytest.approx([0.1, 0.05, 0.025])
