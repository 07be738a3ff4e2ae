"""The files of a retriever export: their names, and a reader for each that checks it.

Each reader refuses a file that is unreadable or disagrees with ``meta.json`` (naming the file
and the mismatch), and vectors that are not finite. :func:`check_index_holds` refuses an
``index.faiss`` that is not the one exported with ``item_embeddings.npy``. The layout is
described, and whole exports are written and read, in
:mod:`lit_matching.serving.export_format`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from lit_matching._version import __version__
from lit_matching.data.interactions import id_kind
from lit_matching.data.item_sets import ItemSets
from lit_matching.losses.faiss_metrics import similarity_metric
from lit_matching.retrieval.search import set_search_params

__all__ = [
    "CHECKSUMMED",
    "FILES",
    "FORMAT_VERSION",
    "INDEX",
    "ITEM_EMBEDDINGS",
    "ITEM_IDS",
    "META",
    "SEEN",
    "USER_EMBEDDINGS",
    "USER_IDS",
    "check_file_sha256",
    "check_finite",
    "check_index_holds",
    "file_names",
    "read_embeddings",
    "read_ids",
    "read_index",
    "read_meta",
    "read_seen",
    "sha256",
]

#: Version of the export directory layout.
FORMAT_VERSION = 1

META = "meta.json"
USER_EMBEDDINGS = "user_embeddings.npy"
ITEM_EMBEDDINGS = "item_embeddings.npy"
USER_IDS = "user_ids.json"
ITEM_IDS = "item_ids.json"
SEEN = "seen_items.npz"
INDEX = "index.faiss"
#: The files of an export besides ``meta.json``.
FILES = (USER_EMBEDDINGS, ITEM_EMBEDDINGS, USER_IDS, ITEM_IDS, SEEN, INDEX)
#: Files whose sha256 ``meta.json`` records: the index must hold the vectors of the items.
CHECKSUMMED = (ITEM_EMBEDDINGS, INDEX)
_METRIC_TYPES = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT}


def check_finite(vectors: np.ndarray, what: str) -> None:
    """Raise naming the first row of ``vectors`` that holds a NaN or an infinity.

    FAISS returns no result for such a query and never finds such an item, so they would
    silently empty or thin out the recommendations.
    """
    bad = ~np.isfinite(vectors).all(axis=tuple(range(1, vectors.ndim)))
    if bad.any():
        row = int(np.argmax(bad))
        values = vectors[row].ravel()
        value = values[~np.isfinite(values)][0]
        raise ValueError(
            f"{what}: row {row} is not finite (holds {value}); {int(bad.sum())} of "
            f"{len(vectors)} rows hold NaN or infinity (did training diverge?)"
        )


def sha256(file: Path) -> str:
    """The hex SHA-256 digest of ``file``, read in blocks."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(file: Path, hint: str = "") -> Any:
    """The JSON value in ``file``; a ``ValueError`` naming the file if it is not JSON."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON{hint}: {err}") from None


def read_meta(path: Path) -> dict[str, Any]:
    """``meta.json`` of the export at ``path``, checked: format version, entries, metric."""
    file = path / META
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} not found: {path} is not a complete retriever export (meta.json is "
            f"written last, so the export was never finished)"
        )
    meta = _read_json(file)
    if not isinstance(meta, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{file} has format_version {version!r}; this lit_matching ({__version__}) reads "
            f"format_version {FORMAT_VERSION} only"
        )
    _check_entries(file, meta)
    _check_metric(file, meta)
    return meta


def _check_entries(file: Path, meta: dict[str, Any]) -> None:
    """Raise unless ``meta.json`` has every entry, of the right type and size."""
    expected: dict[str, type | tuple[type, ...]] = {
        "similarity": str,
        "metric": str,
        "index": str,
        "search_params": (dict, type(None)),
        "dimension": int,
        "num_users": int,
        "num_items": int,
        "default_k": int,
    }
    for key, kind in expected.items():
        if key not in meta:
            raise ValueError(f"{file} has no {key!r} entry")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise ValueError(f"{file}: {key!r} has the wrong type: {meta[key]!r}")
    interests = meta.get("interests")
    if interests is not None and (
        not isinstance(interests, int) or isinstance(interests, bool) or interests < 1
    ):
        raise ValueError(f"{file}: 'interests' must be a positive integer or null: {interests!r}")
    for key in ("dimension", "num_users", "num_items"):
        if meta[key] < (1 if key != "num_users" else 0):
            raise ValueError(f"{file}: {key!r} must be positive, got {meta[key]}")


def _check_metric(file: Path, meta: dict[str, Any]) -> None:
    """Raise unless the metric suits the similarity and the checksums are well-formed."""
    try:
        name, metric = similarity_metric(meta["similarity"])
    except ValueError as err:
        raise ValueError(f"{file}: {err}") from None
    # Cosine exports written before cosine searched an inner-product index say "l2"; load
    # rebuilds their index.
    legacy = name == "cosine" and meta["metric"] == "l2"
    if meta["metric"] != metric and not legacy:
        raise ValueError(
            f"{file}: metric {meta['metric']!r} does not match similarity "
            f"{name!r} (which needs {metric!r})"
        )
    checksums = meta.get("sha256")
    names = file_names(meta)
    if checksums is not None and not (
        isinstance(checksums, dict)
        and all(isinstance(checksums.get(names[part]), str) for part in CHECKSUMMED)
    ):
        raise ValueError(
            f"{file}: 'sha256' must map {', '.join(CHECKSUMMED)} to hex digests: {checksums!r}"
        )


def read_embeddings(file: Path, shape: tuple[int, ...], count_key: str) -> np.ndarray:
    """The float32 vectors in ``file``, of the ``shape`` ``meta.json`` says, all finite."""
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{file} is not a readable .npy array (truncated?): {err}") from None
    if not isinstance(array, np.ndarray) or array.dtype != np.float32:
        raise ValueError(f"{file} must hold float32 vectors, got {getattr(array, 'dtype', None)}")
    if array.shape != shape:
        extra = " and interests" if len(shape) == 3 else ""
        raise ValueError(
            f"{file} has shape {array.shape}, but meta.json's {count_key}, dimension{extra} "
            f"say {shape}"
        )
    check_finite(array, str(file))
    return array


def read_ids(file: Path, count: int, count_key: str) -> list[Any]:
    """The ``count`` raw ids (JSON strings or finite numbers) in ``file``."""
    ids = _read_json(file, " (truncated?)")
    if not isinstance(ids, list):
        raise ValueError(f"{file} must hold a JSON list of ids, got {type(ids).__name__}")
    if len(ids) != count:
        raise ValueError(f"{file} has {len(ids)} ids, but meta.json says {count_key}={count}")
    for position, value in enumerate(ids):
        # What an export writes (id_kind); anything else (a list, null, NaN) was edited in.
        if id_kind(value) is not None:
            continue
        if isinstance(value, float):
            raise ValueError(f"{file}: entry {position} is {value!r}, not a finite number id")
        raise ValueError(
            f"{file}: entry {position} is {type(value).__name__} {value!r}, not a string "
            "or number id"
        )
    return ids


def read_seen(file: Path, num_users: int, num_items: int) -> ItemSets:
    """The seen items in ``file`` (CSR ``indptr`` / ``indices``), checked against the sizes."""
    try:
        with np.load(file, allow_pickle=False) as arrays:
            missing = {"indptr", "indices"} - set(arrays.files)
            if missing:
                raise ValueError(f"{file} lacks array(s) {sorted(missing)}")
            indptr, indices = arrays["indptr"], arrays["indices"]
    except (OSError, EOFError) as err:
        raise ValueError(f"{file} is not a readable .npz archive (truncated?): {err}") from None
    except ValueError as err:
        raise ValueError(f"{file} is not a readable .npz archive: {err}") from None
    if (
        indptr.ndim != 1
        or indices.ndim != 1
        or not (
            np.issubdtype(indptr.dtype, np.integer) and np.issubdtype(indices.dtype, np.integer)
        )
    ):
        raise ValueError(f"{file}: indptr and indices must be 1-D integer arrays")
    if len(indptr) != num_users + 1:
        raise ValueError(
            f"{file}: indptr has {len(indptr)} entries, but meta.json says num_users="
            f"{num_users}: expected {num_users + 1}"
        )
    if (
        indptr[0] != 0
        or indptr[-1] != len(indices)
        or (len(indptr) > 1 and (np.diff(indptr) < 0).any())
    ):
        raise ValueError(f"{file}: indptr must rise from 0 to len(indices) = {len(indices)}")
    if len(indices) and (indices.min() < 0 or indices.max() >= num_items):
        raise ValueError(
            f"{file}: item indices must lie in [0, {num_items}) (meta.json num_items), got "
            f"[{indices.min()}, {indices.max()}]"
        )
    rows = np.repeat(np.arange(num_users), np.diff(indptr))
    # Rebuilt so that each row is sorted and distinct, as ItemSets requires.
    return ItemSets.from_pairs(rows, indices, num_users, num_items)


def read_index(file: Path, meta: dict[str, Any]) -> faiss.Index:
    """The FAISS index in ``file``: size and metric as ``meta.json`` says, its search params set."""
    try:
        index = faiss.read_index(str(file))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"{file} is not a readable FAISS index (truncated?): {first}") from None
    if index.ntotal != meta["num_items"] or index.d != meta["dimension"]:
        raise ValueError(
            f"{file} holds {index.ntotal} vectors of size {index.d}, but meta.json says "
            f"num_items={meta['num_items']} and dimension={meta['dimension']}"
        )
    if index.metric_type != _METRIC_TYPES[meta["metric"]]:
        raise ValueError(
            f"{file} has FAISS metric type {index.metric_type}, but meta.json says metric="
            f"{meta['metric']!r}"
        )
    try:
        set_search_params(index, meta["search_params"], meta["index"])
    except ValueError as err:
        raise ValueError(f"{file}: {err} (from meta.json search_params)") from None
    return index


def check_file_sha256(path: Path, meta: dict[str, Any], name: str) -> None:
    """Raise unless file ``name`` of the export has the ``sha256`` ``meta.json`` lists for it."""
    expected = (meta.get("sha256") or {}).get(name)
    if not isinstance(expected, str):
        raise ValueError(f"{path / META} lists no sha256 for {name}: the export is incomplete")
    if not (path / name).is_file():
        raise FileNotFoundError(f"retriever export {path} is incomplete: missing {name}")
    found = sha256(path / name)
    if found != expected:
        raise ValueError(
            f"{path / name} is not the file exported with this retriever: its sha256 is "
            f"{found}, meta.json says {expected} (replaced or modified after export)"
        )


def file_names(meta: dict[str, Any]) -> dict[str, str]:
    """The file of each part of the export: ``meta.json`` ``files`` by part, or the defaults.

    Exports written before item updates list the default names (or nothing); an updated export
    names each part's file of its current version.
    """
    files = meta.get("files")
    names = dict(zip(FILES, FILES, strict=True))
    if isinstance(files, dict):
        names |= {str(part): str(name) for part, name in files.items()}
    return names


def check_index_holds(
    path: Path, meta: dict[str, Any], index: faiss.Index, items: np.ndarray
) -> None:
    """Raise unless ``index.faiss`` is the index exported with ``item_embeddings.npy``.

    With the ``sha256`` of both files in ``meta.json`` (written at export, when the index was
    built from those vectors) the files must have them. Exports from before the checksums get
    a comparison instead where one is exact: a ``Flat`` index stores the vectors themselves;
    an approximate index of such an export (whose codes cannot be compared exactly) gets none.
    """
    checksums: dict[str, str] = meta.get("sha256") or {}
    names = file_names(meta)
    for part in CHECKSUMMED if checksums else ():
        check_file_sha256(path, meta, names[part])
    if checksums or not isinstance(index, faiss.IndexFlat):
        return
    block = 65536  # rows compared at a time: bounded extra memory for large catalogues
    for start in range(0, len(items), block):
        stored = index.reconstruct_n(start, min(block, len(items) - start))
        differs = (stored != items[start : start + block]).any(axis=1)
        if differs.any():
            row = start + int(np.argmax(differs))
            raise ValueError(
                f"{path / INDEX} does not hold the vectors of {path / ITEM_EMBEDDINGS}: row {row} "
                f"differs (was the index replaced or rebuilt from other vectors?)"
            )
