"""Sample users' histories next to their top-K recommendations, as a table and a W&B report.

:func:`recommendation_table` builds the table for any trained model; the
:class:`RecommendationTable` callback builds it at the end of ``trainer.test`` and logs it to
every :class:`~pytorch_lightning.loggers.WandbLogger` of the trainer as a ``wandb.Table``
(and, on request, the exported retriever as a ``wandb.Artifact``). Scores, losses, the
temperature and the retrieval metrics reach W&B through Lightning's own logging; see the
README section "Weights & Biases".
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from lit_matching.data.movielens import load_movielens_small_movies
from lit_matching.retrieval.encoding import CatalogueEncoder, encode_catalogue
from lit_matching.retrieval.search import build_index, search_top_k
from lit_matching.retrieval.validation import check_k
from lit_matching.serving.from_training import export_retriever

__all__ = ["MOVIELENS_TITLES", "RecommendationTable", "load_item_titles", "recommendation_table"]

#: ``item_titles`` value that stands for the titles of the embedded MovieLens movies.
MOVIELENS_TITLES = "movielens"

#: Raw item id -> title; a frame or a CSV / TSV / Parquet file with columns ``item_id`` and
#: ``title``; or :data:`MOVIELENS_TITLES`.
ItemTitles = Mapping[Any, str] | pd.DataFrame | str | os.PathLike[str]

#: Mark of a recommended item that is one of the user's held-out items.
HIT = "✓ "


def load_item_titles(source: ItemTitles | None) -> dict[Any, str]:
    """Titles by raw item id, from any of the forms ``item_titles`` accepts.

    Args:
        source: A mapping raw id -> title; a DataFrame, or a ``.csv`` / ``.tsv`` /
            ``.parquet`` file, with columns ``item_id`` and ``title``; ``"movielens"``
            (:data:`MOVIELENS_TITLES`) for the embedded MovieLens ``ml-latest-small`` movies;
            or ``None`` (no titles).

    Returns:
        A plain dict (numpy scalars as Python values, so ``1`` and ``np.int64(1)`` match).

    Example:
        >>> load_item_titles({10: "Heat (1995)"})
        {10: 'Heat (1995)'}
        >>> load_item_titles("movielens")[1]
        'Toy Story (1995)'
    """
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return {_plain(key): str(value) for key, value in source.items()}
    if isinstance(source, str) and source == MOVIELENS_TITLES:
        frame = load_movielens_small_movies()
    elif isinstance(source, pd.DataFrame):
        frame = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"item_titles: no file {str(path)!r} (give a mapping, a frame, a csv / tsv / "
                f"parquet file or {MOVIELENS_TITLES!r})"
            )
        suffixes = path.suffixes
        if ".parquet" in suffixes:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if ".tsv" in suffixes else ",")
    missing = [column for column in ("item_id", "title") if column not in frame.columns]
    if missing:
        raise ValueError(
            f"item_titles needs columns 'item_id' and 'title'; missing {missing}, "
            f"found {list(frame.columns)}"
        )
    return dict(zip(frame["item_id"].tolist(), frame["title"].astype(str).tolist(), strict=True))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _describe(
    raw_ids: Sequence[Any], titles: Mapping[Any, str], hits: AbstractSet[Any] = frozenset()
) -> str:
    """One line per item, ``"<id>: <title>"`` (the id alone without a title), hits marked."""
    lines = []
    for raw in raw_ids:
        title = titles.get(raw)
        text = f"{raw}: {title}" if title is not None else str(raw)
        lines.append(HIT + text if raw in hits else text)
    return "\n".join(lines)


def recommendation_table(
    module: CatalogueEncoder,
    datamodule: Any,
    users: Sequence[Any] | None = None,
    num_users: int = 20,
    k: int = 10,
    item_titles: ItemTitles | None = None,
    history_items: int = 10,
    stage: str = "test",
    seed: int = 0,
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Sample users' recent items, held-out items and top-K recommendations, one row per user.

    Recommendations are made as :class:`~lit_matching.RetrievalEvaluator` makes them for
    ``stage``: with the history known then (training items for ``"val"``; training and
    validation items for ``"test"``), searching every item, never an item already seen by then.

    Args:
        module: A trained :class:`~lit_matching.MatchingModule` (anything with
            ``encode_users``, ``encode_items`` and ``similarity``).
        datamodule: The :class:`~lit_matching.MatchingDataModule` it was trained on.
        users: Raw ids of the users to show; ``None`` draws ``num_users`` of the users
            evaluated at ``stage`` (those with a held-out item), with ``seed``.
        num_users: Number of users drawn when ``users`` is ``None``.
        k: Recommendations per user.
        item_titles: Item titles (see :func:`load_item_titles`); items without one show
            their raw id alone.
        history_items: Most recent known items shown per user (oldest first).
        stage: ``"test"`` or ``"val"``.
        seed: Seed of the user draw.
        batch_size: Users / items encoded per forward pass.

    Returns:
        A frame with columns ``user_id`` (raw), ``history`` (the last ``history_items``
        known items), ``held_out`` (the user's ``stage`` items), ``recommended`` (best first;
        held-out items marked ``"✓ "``) and ``hits`` (their number). Items are
        ``"<raw id>: <title>"`` lines.

    Example:
        >>> from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingDataModule
        >>> log = pd.DataFrame({"user_id": [7] * 4 + [8] * 4, "item_id": [1, 2, 3, 4] * 2,
        ...                     "timestamp": [1, 2, 3, 4, 4, 3, 2, 1]})
        >>> data = MatchingDataModule(interactions=log, num_negatives=1)
        >>> model = ListwiseMatching(IDEmbeddingTower(2, 4), IDEmbeddingTower(4, 4))
        >>> table = recommendation_table(model, data, users=[7], k=1, item_titles={4: "Heat"},
        ...                              history_items=1)
        >>> list(table.columns)
        ['user_id', 'history', 'held_out', 'recommended', 'hits']
        >>> table.to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
        [{'user_id': 7, 'history': '3', 'held_out': '4: Heat',
          'recommended': '✓ 4: Heat', 'hits': 1}]

        Items 1-3 are seen by test time, so 4 is the only one left to recommend.
    """
    if stage not in ("val", "test"):
        raise ValueError(f"stage must be 'val' or 'test', got {stage!r}")
    k = check_k(k)
    titles = load_item_titles(item_titles)
    splits = datamodule.splits  # prepares the data (vocabularies, seen items)
    chosen = _choose_users(datamodule, users, num_users, stage, seed)
    seen = datamodule.train_items
    if stage == "test":
        seen = seen.union(datamodule.val_items)
    user_features = datamodule.user_features(stage, chosen)
    queries, items = encode_catalogue(module, user_features, datamodule.num_items, None, batch_size)
    index = build_index(items, module.similarity.faiss_metric)
    found, _ = search_top_k(index, queries, k, seen.select(chosen), batch_size)
    return _table(datamodule, splits, stage, chosen, found, titles, history_items)


def _choose_users(
    datamodule: Any, users: Sequence[Any] | None, num_users: int, stage: str, seed: int
) -> np.ndarray:
    """Indices of ``users`` (raw ids, in order), or of ``num_users`` of ``stage``'s (sorted)."""
    if users is not None:
        return datamodule.user_vocab.to_index(list(users))
    candidates = datamodule.eval_set(stage).users
    rng = np.random.default_rng(seed)
    size = min(num_users, len(candidates))
    return np.sort(rng.choice(candidates, size=size, replace=False))


def _table(
    datamodule: Any,
    splits: Any,
    stage: str,
    chosen: np.ndarray,
    found: np.ndarray,
    titles: Mapping[Any, str],
    history_items: int,
) -> pd.DataFrame:
    """The rows of :func:`recommendation_table`: user ``chosen[i]`` was recommended ``found[i]``."""
    targets = datamodule.val_items if stage == "val" else datamodule.test_items
    parts = [splits.train, splits.val] if stage == "test" else [splits.train]
    known = pd.concat(parts, ignore_index=True)
    known = known[known.user.isin(chosen)].sort_values("order")
    histories = known.groupby("user").item.agg(list)
    raw_item = datamodule.item_vocab.to_raw
    rows = []
    for row, user in enumerate(chosen):
        history = histories.get(user, [])[-history_items:] if history_items > 0 else []
        held_out = [_plain(i) for i in raw_item(targets.row(user))]
        recommended = [_plain(i) for i in raw_item(found[row][found[row] >= 0])]
        hits = set(held_out)
        rows.append(
            {
                "user_id": _plain(datamodule.user_vocab.to_raw([user])[0]),
                "history": _describe([_plain(i) for i in raw_item(history)], titles),
                "held_out": _describe(held_out, titles),
                "recommended": _describe(recommended, titles, hits),
                "hits": sum(item in hits for item in recommended),
            }
        )
    columns = ["user_id", "history", "held_out", "recommended", "hits"]
    return pd.DataFrame(rows, columns=columns)


class RecommendationTable(Callback):
    """At the end of ``trainer.test``, log sample users' recommendations to W&B.

    On the global-zero process it builds :func:`recommendation_table` for ``num_users``
    test users (the same users every time, drawn with ``seed``), keeps it as :attr:`table`,
    and logs it as a ``wandb.Table`` under ``key`` to every
    :class:`~pytorch_lightning.loggers.WandbLogger` of the trainer. With
    ``log_retriever=True`` it also exports the model as a retriever directory (see
    :class:`~lit_matching.Retriever`) and logs it as a ``wandb.Artifact`` of type ``"model"``
    named ``retriever-<run id>``, with ``meta.json`` as its metadata. Without a WandbLogger it
    still builds :attr:`table`, logs nothing and says so once.

    Args:
        num_users: Users in the table.
        k: Recommendations per user.
        item_titles: Item titles (see :func:`load_item_titles`), e.g. ``"movielens"`` for
            the embedded MovieLens data, or a csv file with ``item_id`` and ``title``.
        history_items: Most recent known items shown per user.
        log_retriever: Also log the exported retriever as an artifact.
        seed: Seed of the user draw.
        key: Name of the logged table.

    Example:
        >>> callback = RecommendationTable(num_users=5, k=3, item_titles="movielens")
        >>> callback.table is None
        True
    """

    def __init__(
        self,
        num_users: int = 20,
        k: int = 10,
        item_titles: ItemTitles | None = None,
        history_items: int = 10,
        log_retriever: bool = False,
        seed: int = 0,
        key: str = "test/recommendations",
    ):
        if not isinstance(num_users, int) or num_users < 1:
            raise ValueError(f"num_users has to be a positive integer, got {num_users!r}")
        self.num_users, self.k, self.history_items = num_users, check_k(k), history_items
        self.item_titles = item_titles
        self.log_retriever, self.seed, self.key = log_retriever, seed, key
        #: The last table built (a DataFrame, see :func:`recommendation_table`).
        self.table: pd.DataFrame | None = None
        self._titles: dict[Any, str] | None = None
        self._warned = False

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Build the table (global zero only) and log it, and the retriever, to W&B."""
        if not trainer.is_global_zero:
            return
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "eval_set"):
            raise RuntimeError(
                "RecommendationTable needs a MatchingDataModule; pass it as "
                "trainer.test(model, datamodule=...)"
            )
        if self._titles is None:
            self._titles = load_item_titles(self.item_titles)
        self.table = recommendation_table(
            pl_module,  # type: ignore[arg-type]
            datamodule,
            num_users=self.num_users,
            k=self.k,
            item_titles=self._titles,
            history_items=self.history_items,
            seed=self.seed,
        )
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not loggers:
            if not self._warned:
                rank_zero_info(
                    "RecommendationTable: the trainer has no WandbLogger, so nothing is logged "
                    "(the table is kept in RecommendationTable.table)"
                )
                self._warned = True
            return
        for logger in loggers:
            logger.log_table(self.key, dataframe=self.table, step=trainer.global_step)
        if self.log_retriever:
            self._log_retriever(pl_module, datamodule, loggers)

    @staticmethod
    def _log_retriever(module: Any, datamodule: Any, loggers: list[WandbLogger]) -> None:
        import wandb

        with tempfile.TemporaryDirectory() as temp:
            # The artifact copies the files into W&B's staging area as they are added.
            path = export_retriever(module, datamodule, Path(temp) / "retriever", towers=False)
            meta = json.loads((path / "meta.json").read_text())
            for logger in loggers:
                run = logger.experiment
                artifact = wandb.Artifact(
                    f"retriever-{run.id}",
                    type="model",
                    description="lit_matching retriever export (open with Retriever.load)",
                    metadata=meta,
                )
                artifact.add_dir(str(path))
                run.log_artifact(artifact, aliases=["latest"])
