"""An HTTP server over an exported retriever: FastAPI on uvicorn, no torch.

:func:`create_app` serves a :class:`~lit_matching.serving.retriever.Retriever`:

* ``POST /recommend`` ``{user_id?, history?, features?, k?, exclude?, exclude_seen?}``: the
  :class:`~lit_matching.serving.requests.Recommendation` as JSON (``user_id``, ``items``,
  ``scores``, ``source``, ``num_dropped``, ``dropped_items``). Concurrent requests are batched:
  a batcher task gathers up to ``max_batch_size`` of them, waiting at most ``max_wait_ms`` for
  more, and answers them with one tower run and one index search in a worker thread.
* ``POST /similar_items`` ``{item_id, k?}``: ``{item_id, items, scores}`` (404 for an unknown
  item).
* ``GET /health``: ``status``, ``num_users``, ``num_items``, whether a user / item tower is
  present, the ``version``.
* ``POST /items`` ``{items: [{"item_id": ..., <feature>: value, ...}]}``: adds or replaces items
  from their side features (:meth:`Retriever.with_items`), writes them to the export directory
  the server was started from (:meth:`Retriever.update_export`), then serves the new retriever:
  one reference swap, so requests already answering finish on the old one.

A request that is not valid JSON, has a value of the wrong type, ``k <= 0`` or an unknown
field gets 422; a value the retriever refuses (an unknown feature, a value a feature cannot
encode) gets 400; either names the field. An unexpected error is a 500 for that request only:
the server and its batcher keep answering.

:func:`serve` runs the server (``lit-matching serve DIR``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from lit_matching._version import __version__
from lit_matching.serving.batching import Batcher
from lit_matching.serving.requests import UserRequest
from lit_matching.serving.retriever import Retriever
from lit_matching.utils.errors import error_message

__all__ = ["create_app", "serve"]

_log = logging.getLogger(__name__)


def _raw_id(value: Any) -> Any:
    """A raw id of the request: a string or a number, as the export's id files hold them."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"a raw id must be a string or a number, not {value!r}")
    return value


def _feature_value(value: Any) -> Any:
    """A feature value: a string, a number, null, or a list of strings and numbers."""
    values = value if isinstance(value, list) else [value]
    if not all(item is None or isinstance(item, str | int | float) for item in values):
        raise ValueError(
            f"a feature value must be a string, a number, null or a list of them, not {value!r}"
        )
    return value


RawId = Annotated[Any, AfterValidator(_raw_id)]
FeatureValue = Annotated[Any, AfterValidator(_feature_value)]
PositiveK = Annotated[StrictInt, Field(gt=0)]


class RecommendBody(BaseModel):
    """The body of ``POST /recommend`` (see :class:`~lit_matching.serving.requests.UserRequest`)."""

    model_config = ConfigDict(extra="forbid")

    user_id: RawId | None = None
    history: list[RawId] | None = None
    features: dict[str, FeatureValue] | None = None
    k: PositiveK | None = None
    exclude: list[RawId] = []
    exclude_seen: bool = True

    def request(self) -> UserRequest:
        """The :class:`UserRequest` this body asks."""
        return UserRequest(
            self.user_id, self.history, self.features, self.k, self.exclude, self.exclude_seen
        )


class SimilarBody(BaseModel):
    """The body of ``POST /similar_items``."""

    model_config = ConfigDict(extra="forbid")

    item_id: RawId
    k: PositiveK | None = None


class ItemsBody(BaseModel):
    """The body of ``POST /items``: one object per item, its id under ``item_id``."""

    model_config = ConfigDict(extra="forbid")

    items: Annotated[list[dict[str, FeatureValue]], Field(min_length=1)]


@dataclass
class _State:
    """What the app serves: the retriever (swapped whole by ``POST /items``) and its export."""

    retriever: Retriever
    directory: Path | None
    update_lock: asyncio.Lock


def _json(content: Any, status: int = 200) -> Response:
    # json.dumps directly: the answers are plain lists and numbers, no encoder needed.
    return Response(json.dumps(content), status_code=status, media_type="application/json")


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"detail": message, **extra}, status)


def error_response(error: BaseException) -> Response:
    """400 for what the request got wrong (``ValueError``, ``KeyError``), 500 otherwise."""
    if isinstance(error, ValueError | KeyError):
        return _error(400, error_message(error))
    _log.error("request failed", exc_info=error)
    return _error(500, f"internal error: {type(error).__name__}: {error}")


def _field(location: Sequence[Any]) -> str:
    """``("body", "features", "age")`` -> ``features.age``; list positions as ``[i]``."""
    parts = [str(part) for part in location[1:] if not isinstance(part, int)]
    name = ".".join(parts)
    for position in (part for part in location[1:] if isinstance(part, int)):
        name += f"[{position}]"
    return name or "body"


def _validation_message(errors: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    """One readable line naming each bad field, and the errors as ``{field, message}``."""
    found: list[dict[str, str]] = []
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "malformed")
            found.append({"field": "body", "message": f"the body is not valid JSON ({reason})"})
            continue
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "unknown field"
        elif error.get("type") == "missing":
            message = "required field missing"
        found.append({"field": _field(error.get("loc", ())), "message": message})
    text = "; ".join(f"{error['field']}: {error['message']}" for error in found)
    return f"invalid request: {text}", found


def _validation_handler(_: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    message, errors = _validation_message(error.errors())
    return _error(422, message, errors=errors)


def _unexpected_handler(_: Request, error: Exception) -> Response:
    return error_response(error)


def create_app(
    retriever: Retriever,
    directory: str | os.PathLike[str] | None = None,
    max_batch_size: int = 64,
    max_wait_ms: float = 2.0,
) -> FastAPI:
    """The HTTP app serving ``retriever`` (see the module docstring for the endpoints).

    Args:
        retriever: What to serve.
        directory: The export ``retriever`` was loaded from: ``POST /items`` updates it in
            place. ``None``: item updates are served but not written anywhere.
        max_batch_size: Most ``/recommend`` requests answered by one tower run and search.
        max_wait_ms: Longest a request waits for others to join its batch (0: a batch is
            whatever has queued while the previous one was answered).

    Example:
        >>> import numpy as np
        >>> vectors = np.eye(3, dtype=np.float32)
        >>> app = create_app(Retriever(vectors[:2], vectors, ["a", "b"], [1, 2, 3], "dot"))
        >>> sorted(route.path for route in app.routes if "docs" not in route.path)[:4]
        ['/health', '/items', '/openapi.json', '/recommend']
    """
    state = _State(retriever, None if directory is None else Path(directory), asyncio.Lock())
    batcher = Batcher(lambda: state.retriever, max_batch_size, max_wait_ms / 1000)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with batcher.running():
            yield

    app = FastAPI(title="lit-matching retriever", version=__version__, lifespan=lifespan)
    app.state.batcher = batcher  # its ``batches`` count shows whether requests were batched
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
    _add_routes(app, state, batcher)
    return app


def _add_routes(app: FastAPI, state: _State, batcher: Batcher) -> None:
    @app.post("/recommend")
    async def recommend(body: RecommendBody) -> Response:
        try:
            found = await batcher.submit(body.request())
        except Exception as error:
            return error_response(error)
        return _json(found.to_json())

    @app.post("/similar_items")
    async def similar_items(body: SimilarBody) -> Response:
        retriever = state.retriever
        if retriever.item_positions([body.item_id], keep_unknown=True)[0] < 0:
            return _error(404, f"unknown item_id {body.item_id!r}")
        try:
            frame = await asyncio.to_thread(retriever.similar_items, [body.item_id], body.k)
        except Exception as error:
            return error_response(error)
        items, scores = frame["similar_item_id"].tolist(), frame["score"].tolist()
        return _json({"item_id": body.item_id, "items": items, "scores": scores})

    @app.get("/health")
    async def health() -> Response:
        retriever = state.retriever
        return _json(
            {
                "status": "ok",
                "num_users": retriever.num_users,
                "num_items": retriever.num_items,
                "user_tower": retriever.user_tower is not None,
                "item_tower": retriever.item_tower is not None,
                "version": __version__,
            }
        )

    @app.post("/items")
    async def items(body: ItemsBody) -> Response:
        async with state.update_lock:  # one update at a time, each from the latest retriever
            try:
                updated, answer = await asyncio.to_thread(
                    _add_items, state.retriever, body.items, state.directory
                )
            except Exception as error:
                return error_response(error)
            state.retriever = updated  # requests already answering keep the old one
        return _json(answer)


def _add_items(
    retriever: Retriever, items: list[dict[str, Any]], directory: Path | None
) -> tuple[Retriever, dict[str, Any]]:
    """The retriever with ``items`` added or replaced (written to ``directory``), and a summary."""
    if any("item_id" not in item for item in items):
        missing = [row for row, item in enumerate(items) if "item_id" not in item]
        raise ValueError(f"items{missing}: each item needs an item_id")
    ids = [_raw_id(item["item_id"]) for item in items]
    known = retriever.item_positions(ids, keep_unknown=True) >= 0
    updated = retriever.with_items(items, id_col="item_id")
    if directory is not None:
        updated.update_export(directory)
    return updated, {
        "num_items": updated.num_items,
        "added": [raw for raw, old in zip(ids, known, strict=True) if not old],
        "replaced": [raw for raw, old in zip(ids, known, strict=True) if old],
    }


def serve(
    directory: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 64,
    max_wait_ms: float = 2.0,
    log_level: str = "warning",
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the export in ``directory`` over HTTP until interrupted.

    Args:
        directory: A retriever export (:meth:`Retriever.export`); ``POST /items`` updates it.
        host: Address to listen on (the default answers this machine only).
        port: Port to listen on (0: any free port; ``ready`` is told which).
        max_batch_size: See :func:`create_app`.
        max_wait_ms: See :func:`create_app`.
        log_level: uvicorn's log level.
        ready: Called with the server's URL once it listens (default: print it).
    """
    app = create_app(Retriever.load(directory), directory, max_batch_size, max_wait_ms)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)
    Server(config, ready or (lambda url: print(f"Serving {directory} at {url}", flush=True))).run()


class Server(uvicorn.Server):
    """A uvicorn server that says its URL (the port it got, for port 0) once it listens.

    Args:
        config: uvicorn's configuration.
        ready: Called with ``http://host:port`` once the socket listens.
    """

    def __init__(self, config: uvicorn.Config, ready: Callable[[str], None] | None = None):
        super().__init__(config)
        self.ready = ready
        self.url: str | None = None

    async def startup(self, sockets: Any = None) -> None:
        """Start as uvicorn does, then record (and announce) the URL."""
        await super().startup(sockets)
        if self.should_exit or not self.servers:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        if self.ready is not None:
            self.ready(self.url)
