"""The on-disk export of a :class:`~lit_matching.serving.retriever.Retriever`: write, read, check.

An export is a directory that plain ``numpy`` / ``json`` / ``faiss`` can read without
``lit_matching``:

=======================  ==========================================================================
file                     content
=======================  ==========================================================================
``user_embeddings.npy``  ``(num_users, dimension)`` float32 user vectors, as prepared for the index;
                         ``(num_users, interests, dimension)`` for a multi-interest user tower
``item_embeddings.npy``  ``(num_items, dimension)`` float32 item vectors, prepared likewise
``user_ids.json``        raw user ids in index order (a JSON list)
``item_ids.json``        raw item ids in index order (a JSON list)
``seen_items.npz``       CSR arrays ``indptr`` / ``indices``: item indices each user has seen
``index.faiss``          the FAISS index over the items (``faiss.read_index``)
``meta.json``            similarity, metric, index spec, sizes, versions, ``files`` (the file of
                         each part), ``towers`` (see :mod:`~lit_matching.serving.tower_files`)
                         and the ``sha256`` of ``item_embeddings.npy``, ``index.faiss`` and every
                         tower file (written last)
=======================  ==========================================================================

plus the tower files of :mod:`lit_matching.serving.tower_files` (the user tower, an item tower
that reads side features, the items' training popularity), when the export has them.

:func:`read_export` refuses vectors that are not finite, and an ``index.faiss``,
``item_embeddings.npy`` or tower file whose ``sha256`` is not the one written at export.
Exports from before these checksums load without them; their ``Flat`` index is then compared
with ``item_embeddings.npy`` vector by vector (an approximate one is only checked for size and
metric). Cosine exports from before cosine searched an inner-product index (``meta.json`` metric
``"l2"``) load with an inner-product index rebuilt from ``item_embeddings.npy``, with a warning.

:func:`update_export` rewrites an export in place: its files get versioned names
(``index.1.faiss``...) that ``meta.json`` ``files`` lists, so that replacing ``meta.json`` in
one rename switches from the old export to the new one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from lit_matching.data.interactions import id_kind
from lit_matching.data.item_sets import ItemSets
from lit_matching.losses.faiss_metrics import similarity_metric
from lit_matching.retrieval.search import build_index, to_gpu
from lit_matching.serving.export_files import (
    CHECKSUMMED,
    FILES,
    INDEX,
    ITEM_EMBEDDINGS,
    ITEM_IDS,
    META,
    SEEN,
    USER_EMBEDDINGS,
    USER_IDS,
    check_index_holds,
    file_names,
    read_embeddings,
    read_ids,
    read_index,
    read_meta,
    read_seen,
    sha256,
)
from lit_matching.serving.serving_towers import ServingTower
from lit_matching.serving.tower_files import (
    POPULARITY,
    TOWER_FILES,
    read_popularity,
    read_tower,
    write_tower,
)

__all__ = ["ExportContents", "read_export", "update_export", "write_export"]


@dataclass(frozen=True)
class ExportContents:
    """What an export holds besides ``meta.json`` (see the module's table).

    ``seen`` ``None`` is written as "nothing seen"; a read export always has one.
    """

    user_embeddings: np.ndarray
    item_embeddings: np.ndarray
    user_ids: list[Any]
    item_ids: list[Any]
    seen: ItemSets | None
    index: faiss.Index
    user_tower: ServingTower | None = None
    item_tower: ServingTower | None = None
    popularity: np.ndarray | None = None


def _json_id(value: Any, what: str) -> str | int | float:
    """A raw id as a plain JSON value (numpy scalars become Python ones)."""
    if isinstance(value, np.generic):
        value = value.item()
    if id_kind(value) is not None:
        return value
    if isinstance(value, float):
        raise ValueError(f"{what} ids must be finite to export as JSON, got {value!r}")
    raise ValueError(
        f"{what} ids must be strings or numbers to export as JSON, got {type(value).__name__} "
        f"{value!r}"
    )


def _make_dir(parent: Path, prefix: str, suffix: str) -> Path:
    """A new, uniquely named directory in ``parent``, with the permissions the umask gives.

    Unlike :func:`tempfile.mkdtemp` (always mode 0700), ``os.mkdir(path, 0o777)`` lets the
    user's umask decide, so an export is as readable as any other file the user writes.
    """
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            path.mkdir(0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no unused temporary directory name {prefix}*{suffix} in {parent}")


def _on_gpu(index: faiss.Index) -> bool:
    """Whether ``index`` (as built by :func:`build_index`) lives on one or more GPUs."""
    name = type(index).__name__
    return name.startswith("Gpu") or name in ("IndexReplicas", "IndexShards")


def write_export(
    directory: str | os.PathLike[str],
    contents: ExportContents,
    meta: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write ``contents`` and ``meta.json`` (``meta`` plus the ``sha256`` checksums).

    The files are written into a temporary sibling directory, ``meta.json`` last, which
    is then renamed to ``directory``: a crash leaves no half-written export under that name.

    Args:
        directory: Where to write (must not exist unless ``overwrite``).
        contents: The vectors, ids, seen items and index.
        meta: What ``meta.json`` holds (see :meth:`Retriever.meta
            <lit_matching.serving.retriever.Retriever.meta>`).
        overwrite: Replace an existing export (a directory holding ``meta.json``, or an
            empty one).

    Returns:
        The path of the export.
    """
    target = Path(directory)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / META).is_file())
    ):
        raise ValueError(f"{target} exists and is not a retriever export: not replacing it")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _make_dir(target.parent, f".{target.name}.", ".tmp")
    try:
        _write(temp, contents, meta)
        if target.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.replace(target, old / target.name)
            os.replace(temp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


def _versioned(name: str, version: int) -> str:
    """``name`` of the export's ``version`` (0: the name itself), e.g. ``index.2.faiss``."""
    stem, dot, extension = name.rpartition(".")
    return name if version == 0 else f"{stem}.{version}{dot}{extension}"


def _write(path: Path, contents: ExportContents, meta: dict[str, Any], version: int = 0) -> None:
    """Write every file of ``contents`` under its name of ``version``, then ``meta.json``."""
    names = {name: _versioned(name, version) for name in (*FILES, *_optional_files(contents))}
    np.save(path / names[USER_EMBEDDINGS], contents.user_embeddings, allow_pickle=False)
    np.save(path / names[ITEM_EMBEDDINGS], contents.item_embeddings, allow_pickle=False)
    for name, raw_ids, what in (
        (USER_IDS, contents.user_ids, "user"),
        (ITEM_IDS, contents.item_ids, "item"),
    ):
        ids = [_json_id(value, what) for value in raw_ids]
        (path / names[name]).write_text(json.dumps(ids, allow_nan=False), encoding="utf-8")
    seen = contents.seen
    if seen is None:
        num_users, num_items = len(contents.user_embeddings), len(contents.item_embeddings)
        empty = np.zeros(0, np.int64)
        seen = ItemSets(np.zeros(num_users + 1, np.int64), empty, num_items)
    with open(path / names[SEEN], "wb") as file:
        np.savez(
            file,
            indptr=np.asarray(seen.indptr, dtype=np.int64),
            indices=np.asarray(seen.indices, dtype=np.int64),
        )
    index = contents.index
    faiss.write_index(
        faiss.index_gpu_to_cpu(index) if _on_gpu(index) else index, str(path / names[INDEX])
    )
    towers = {}
    for side, tower in (("user", contents.user_tower), ("item", contents.item_tower)):
        if tower is not None:
            files = TOWER_FILES[side]
            towers[side] = write_tower(path, tower, (names[files[0]], names[files[1]]))
    if contents.popularity is not None:
        np.save(path / names[POPULARITY], contents.popularity.astype(np.float64))
    # Checksums of the files as written: load then knows the index is the one built over
    # these item vectors (an approximate one cannot be compared), and the towers are these.
    checksums = {
        names[name]: sha256(path / names[name])
        for name in (*CHECKSUMMED, *_optional_files(contents))
    }
    meta = meta | {"files": names, "towers": towers or None, "sha256": checksums}
    temporary = path / f".{META}.{secrets.token_hex(6)}.tmp"
    temporary.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(temporary, path / META)  # atomic: readers see the old meta.json or the new one


def _optional_files(contents: ExportContents) -> tuple[str, ...]:
    """The tower and popularity files ``contents`` has."""
    names: list[str] = []
    for side, tower in (("user", contents.user_tower), ("item", contents.item_tower)):
        names += TOWER_FILES[side] if tower is not None else ()
    return (*names, *((POPULARITY,) if contents.popularity is not None else ()))


def update_export(
    directory: str | os.PathLike[str], contents: ExportContents, meta: dict[str, Any]
) -> Path:
    """Replace the export in ``directory`` with ``contents`` in place, atomically.

    The new files are written beside the old ones under new names (``item_embeddings.3.npy``
    ...), then ``meta.json``, which names them, replaces the old one in a single rename; only
    then are the old files removed. A crash at any point leaves a readable export: the old
    one, or the new one (with, at worst, unreferenced files of the other).

    Args:
        directory: An existing export.
        contents: What it holds now.
        meta: Its new ``meta.json`` (without ``files``, ``towers`` and ``sha256``).

    Returns:
        The path of the export.
    """
    path = Path(directory)
    old = read_meta(path)
    version = int(old.get("version", 0)) + 1
    referenced = set(file_names(old).values()) | set(old.get("sha256") or {})
    _write(path, contents, meta | {"version": version}, version)
    current = set(file_names(read_meta(path)).values())
    for name in referenced - current:
        (path / name).unlink(missing_ok=True)
    return path


def read_export(
    directory: str | os.PathLike[str], use_gpu: bool | None = False
) -> tuple[ExportContents, dict[str, Any]]:
    """Read and check a directory written by :func:`write_export` (nothing is unpickled).

    Args:
        directory: The export.
        use_gpu: Move the index to the GPUs (``None``: when faiss sees one).

    Returns:
        The contents and ``meta.json``.

    Raises:
        FileNotFoundError: A file of the export is missing (named).
        ValueError: A file is unreadable, of another format version, or disagrees with
            ``meta.json`` (the file and the mismatch are named); a vector is not finite
            (the file and row are named); ``item_embeddings.npy`` or ``index.faiss`` is
            not the file written at export (its sha256 differs, or a ``Flat`` index
            holds other vectors).
    """
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory (no retriever export there)")
    meta = read_meta(path)
    missing = [name for name in file_names(meta).values() if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"retriever export {path} is incomplete: missing {', '.join(missing)}"
        )
    dim, num_users, num_items = meta["dimension"], meta["num_users"], meta["num_items"]
    interests = meta.get("interests")
    user_shape = (num_users, dim) if interests is None else (num_users, interests, dim)
    names = file_names(meta)
    items = read_embeddings(path / names[ITEM_EMBEDDINGS], (num_items, dim), "num_items")
    contents = ExportContents(
        user_embeddings=read_embeddings(path / names[USER_EMBEDDINGS], user_shape, "num_users"),
        item_embeddings=items,
        user_ids=read_ids(path / names[USER_IDS], num_users, "num_users"),
        item_ids=read_ids(path / names[ITEM_IDS], num_items, "num_items"),
        seen=read_seen(path / names[SEEN], num_users, num_items),
        index=_load_index(path, meta, items, use_gpu),
        user_tower=read_tower(path, meta, "user", _tower_names(names, "user"), num_users),
        item_tower=read_tower(path, meta, "item", _tower_names(names, "item"), num_items),
        popularity=read_popularity(path, meta, names.get(POPULARITY, POPULARITY), num_items),
    )
    return contents, meta


def _tower_names(names: dict[str, str], side: str) -> tuple[str, str]:
    graph, stored = TOWER_FILES[side]
    return names.get(graph, graph), names.get(stored, stored)


def _load_index(
    path: Path, meta: dict[str, Any], items: np.ndarray, use_gpu: bool | None
) -> faiss.Index:
    """``index.faiss``, checked against ``items``; rebuilt for a cosine export with an L2 one."""
    metric = similarity_metric(meta["similarity"])[1]
    if meta["metric"] != metric:  # a cosine export with an L2 index
        warnings.warn(
            f"retriever export {path} holds an L2 index for cosine (meta.json metric 'l2', "
            f"lit_matching {meta.get('lit_matching_version', '?')}), which ranks zero "
            f"vectors unlike training; using an inner-product {meta['index']!r} index "
            f"rebuilt from {ITEM_EMBEDDINGS} instead (export again to skip this)",
            UserWarning,
            stacklevel=4,  # the caller of Retriever.load (-> read_export -> here)
        )
        return build_index(items, metric, meta["index"], meta["search_params"], use_gpu)
    index = read_index(path / file_names(meta)[INDEX], meta)
    check_index_holds(path, meta, index, items)
    return to_gpu(index, use_gpu, meta["index"])
